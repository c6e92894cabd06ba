"""Speed of a segmentation round (wsss_core.segmentation): training and prediction images/s.

    .venv/bin/python benchmarks/segmentation.py [--runs 3] [--threads 2] [--quality]
        [--width 256 --height 192] [--targets small:cpu paper:cuda ...] [--no-crf]

Images: `wsss generate`'s synthetic 256x192 images (variant "standard", in memory), their
ground truth standing in for pseudo labels. Per preset (`small` on the CPU; `paper` too
when CUDA is there): training = one epoch over --train-images images with the preset's
training config (augmentation, batch, crop, AMP on CUDA), a fresh network per run;
prediction = the preset's round prediction (scales, flip, CRF) of --predict-images images.
Times are medians over --runs runs (the first run includes warm-up). --quality also trains
`small` for its full schedule on --quality-images images and scores its predictions of
held-out images (mIoU against ground truth). --no-crf times prediction without the dense
CRF (a CPU step whatever the device: time it on the CPU machine). Writes
benchmarks/results/segmentation.json (or --output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from wsss_core.config import config_to_dict  # noqa: E402
from wsss_core.data.synthetic import SYNTHETIC_CLASSES, SyntheticConfig, generate_sample  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.segmentation.config import SegmentationConfig  # noqa: E402
from wsss_core.segmentation.model import build_segmentation_model  # noqa: E402
from wsss_core.segmentation.predict import predict_round_mask  # noqa: E402
from wsss_core.segmentation.train import train_segmentation, use_amp  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "segmentation.json"
NUM_CLASSES = len(SYNTHETIC_CLASSES)  # background + the synthetic dataset's classes


def samples(first: int, count: int, config: SyntheticConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    drawn = [generate_sample(i, config) for i in range(first, first + count)]
    return [s.image for s in drawn], [s.gt for s in drawn]


def new_model(config: SegmentationConfig, seed: int = 0) -> torch.nn.Module:
    return build_segmentation_model(config.train.backbone, NUM_CLASSES, config.train.output_stride, None, seed=seed)


def time_training(config: SegmentationConfig, images, labels, device: torch.device, runs: int) -> list[float]:
    one_epoch = dataclasses.replace(config.train, epochs=1, weights=None)
    seconds = []
    for run in range(runs):
        model = new_model(config, run)
        _sync(device)
        start = time.perf_counter()
        train_segmentation(model, images, labels, one_epoch, device=device)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_prediction(config: SegmentationConfig, images, device: torch.device, runs: int) -> list[float]:
    model = new_model(config).to(device).eval()
    seconds = []
    for _ in range(runs):
        _sync(device)
        start = time.perf_counter()
        for image in images:
            predict_round_mask(model, image, config.inference, device)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def quality(config: SegmentationConfig, synthetic: SyntheticConfig, n_train: int, device: torch.device,
            epochs: int | None = None) -> dict:
    """small's full schedule on n_train images with ground-truth labels; mIoU of 40 held-out images."""
    images, labels = samples(0, n_train, synthetic)
    log: list[dict] = []
    train_config = dataclasses.replace(config.train, weights=None, epochs=epochs or config.train.epochs)
    start = time.perf_counter()
    model = train_segmentation(new_model(config), images, labels, train_config, device=device,
                               on_epoch_end=lambda e, m: log.append(m))
    train_seconds = time.perf_counter() - start
    held_out_images, held_out_labels = samples(10_000, 40, synthetic)
    matrix = ConfusionMatrix(NUM_CLASSES)
    for image, label in zip(held_out_images, held_out_labels):
        matrix.update(predict_round_mask(model, image, config.inference, device), label)
    return {
        "train_images": n_train, "epochs": train_config.epochs, "train_seconds": round(train_seconds, 1),
        "loss_by_epoch": [round(m["loss"], 4) for m in log],
        "train_pixel_accuracy_by_epoch": [round(m["pixel_accuracy"], 4) for m in log],
        "held_out_images": 40, "held_out_miou": round(matrix.miou(), 4),
        "held_out_pixel_accuracy": round(matrix.pixel_accuracy(), 4), "weights": "random init",
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--predict-images", type=int, default=8)
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--quality-images", type=int, default=160)
    parser.add_argument("--quality-epochs", type=int, nargs="*", help="epochs of the --quality training (default: the preset's)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--targets", nargs="*", help="preset:device pairs (default: small:cpu, and with CUDA small:cuda paper:cuda)")
    parser.add_argument("--no-crf", action="store_true", help="predict without the dense CRF")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    synthetic = SyntheticConfig(width=args.width, height=args.height)
    images, labels = samples(0, max(args.train_images, args.predict_images), synthetic)
    load_before = os.getloadavg()
    targets = [("small", torch.device("cpu"))]
    if torch.cuda.is_available():
        targets += [("small", torch.device("cuda")), ("paper", torch.device("cuda"))]
    if args.targets:
        targets = [(t.split(":")[0], torch.device(t.split(":")[1])) for t in args.targets]
    rows = []
    for preset, device in targets:
        config = getattr(SegmentationConfig, preset)()
        if args.no_crf:
            config = dataclasses.replace(config, inference=dataclasses.replace(config.inference, crf=False))
        train_s = time_training(config, images[: args.train_images], labels[: args.train_images], device, args.runs)
        predict_s = time_prediction(config, images[: args.predict_images], device, args.runs)
        rows.append({
            "preset": preset, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "arch": config.train.backbone, "output_stride": config.train.output_stride,
            "crop": config.train.crop_size, "batch": config.train.batch_size, "amp": use_amp(config.train, device),
            "train_images_per_s": round(args.train_images / statistics.median(train_s), 3),
            "train_seconds": [round(s, 2) for s in train_s],
            "inference": config_to_dict(config.inference),
            "predict_images_per_s": round(args.predict_images / statistics.median(predict_s), 3),
            "predict_seconds": [round(s, 2) for s in predict_s],
        })
    result: dict = {
        "image_size": [synthetic.height, synthetic.width],
        "train_images": args.train_images, "predict_images": args.predict_images, "runs": args.runs,
        "num_classes": NUM_CLASSES,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__},
        "load_average_before": [round(x, 2) for x in load_before],
        "note": "medians over runs; other work on the machine slows every timing (load_average_before)",
        "results": rows,
    }
    print(f"{'preset':8} {'device':6} {'arch':22} {'crop':>5} {'batch':>5} {'train img/s':>12} {'predict img/s':>14}")
    for row in rows:
        print(f"{row['preset']:8} {row['device']:6} {row['arch']:22} {row['crop']:>5} {row['batch']:>5} "
              f"{row['train_images_per_s']:>12.2f} {row['predict_images_per_s']:>14.2f}")
    if args.quality:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for epochs in args.quality_epochs or [None]:
            name = "quality_small" + (f"_{epochs}_epochs" if epochs else "")
            small = SegmentationConfig.small()
            if args.no_crf:
                small = dataclasses.replace(small, inference=dataclasses.replace(small.inference, crf=False))
            result[name] = quality(small, synthetic, args.quality_images, device, epochs)
            print(f"{name}:", json.dumps(result[name]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
