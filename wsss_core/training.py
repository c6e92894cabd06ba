"""The training loop every network shares (CAM classifier, AffinityNet, DeepLabV3): PSA's
poly SGD, parameter groups, augmentation, data loading, checkpoints that resume.

Reproducible on the CPU: the same seed, data, config and torch thread count give the same
weights bit for bit, and a training killed at any point and resumed from its last
checkpoint ends with exactly the uninterrupted run's weights. Every random draw comes from
(seed, epoch[, image]) (see ``fit``), torch's deterministic kernels are on while it trains
(``deterministic_algorithms``), and the callers draw the random init from the seed too.
What torch cannot make deterministic is named in ``deterministic_algorithms``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from wsss_core.backbones import normalise_images
from wsss_core.checkpoints import read_checkpoint, save_checkpoint
from wsss_core.config import config_to_dict
from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError, DatasetError

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
BatchNormMode = Literal["auto", "frozen", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """What both PSA trainings share (``fit``): poly SGD, PSA's augmentation, batch norm, seed.

    PSA's PolyOptimizer passes its weight decay into SGD's momentum slot, so PSA trains
    with plain SGD (momentum 5e-4, i.e. none) and per-group weight decay; momentum 0 here.
    Biases and norm parameters get ``bias_lr_multiplier`` x lr and no weight decay (PSA).
    batchnorm "auto": frozen (PSA) when pretrained weights were loaded, trained otherwise.
    """

    backbone: str = "resnet50"
    weights: str | None = "DEFAULT"
    epochs: int = 15
    batch_size: int = 16
    lr: float = 0.1
    head_lr_multiplier: float = 10.0
    bias_lr_multiplier: float = 2.0
    poly_power: float = 0.9
    momentum: float = 0.0
    weight_decay: float = 5e-4
    crop_size: int | None = 448
    rescale_long_side: tuple[int, int] | None = (448, 768)
    flip: bool = True
    colour_jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)
    batchnorm: BatchNormMode = "auto"
    seed: int = 0
    num_workers: int = 0  # data-loader processes (augmentation, labels); 0 = in the training process


# ----------------------------------------------------------------------------- training plumbing


def parameter_groups(
    model: nn.Module,
    head: Iterable[nn.Module],
    lr: float,
    weight_decay: float,
    head_lr_multiplier: float,
    bias_lr_multiplier: float,
) -> list[dict[str, Any]]:
    """PSA's four groups: backbone weights / biases, head weights / biases (x10 lr)."""
    head_ids = {id(p) for module in head for p in module.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (is_head, is_bias): [] for is_head in (False, True) for is_bias in (False, True)
    }
    for parameter in model.parameters():
        if parameter.requires_grad:
            groups[(id(parameter) in head_ids, parameter.ndim <= 1)].append(parameter)
    result = []
    for (is_head, is_bias), params in groups.items():
        if params:
            scale = (head_lr_multiplier if is_head else 1.0) * (bias_lr_multiplier if is_bias else 1.0)
            result.append({"params": params, "lr": lr * scale, "initial_lr": lr * scale,
                           "weight_decay": 0.0 if is_bias else weight_decay})
    return result


def poly_lr_factor(step: int, max_step: int, power: float) -> float:
    """(1 - step / max_step) ** power, PSA's PolyOptimizer."""
    return (1.0 - min(step, max_step) / max(max_step, 1)) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, max_step: int, power: float) -> None:
    factor = poly_lr_factor(step, max_step, power)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def use_frozen_batchnorm(mode: BatchNormMode, weights_loaded: bool) -> bool:
    return mode == "frozen" or (mode == "auto" and weights_loaded)


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers in eval mode with fixed affine parameters (PSA's ResNet-38)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled index batches of one epoch; a last partial batch is dropped (PSA) unless it is the only one."""
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    if n_items <= batch_size:
        return [order]
    n_full = n_items // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]


def resize_long_side(image: np.ndarray, long_side: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize so that the longer side is ``long_side`` (PSA's RandomResizeLong)."""
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.array(Image.fromarray(image).resize(size, resample=resample))


def random_crop_box(
    height: int, width: int, crop: int, rng: np.random.Generator
) -> tuple[slice, slice, slice, slice]:
    """PSA's RandomCrop: (image rows, image cols, canvas rows, canvas cols); pads when smaller."""

    def axis(size: int) -> tuple[slice, slice]:
        space = size - crop
        if space > 0:
            start = int(rng.integers(space + 1))
            return slice(start, start + crop), slice(0, crop)
        start = int(rng.integers(-space + 1))
        return slice(0, size), slice(start, start + size)

    image_rows, canvas_rows = axis(height)
    image_cols, canvas_cols = axis(width)
    return image_rows, image_cols, canvas_rows, canvas_cols


@dataclass(frozen=True)
class Augmentation:
    """PSA's training augmentation: random long-side rescale, flip, colour jitter, random crop."""

    crop_size: int | None = 448
    rescale_long_side: tuple[int, int] | None = (448, 768)
    flip: bool = True
    colour_jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)

    @classmethod
    def from_config(cls, config: TrainConfig) -> Augmentation:
        return cls(config.crop_size, config.rescale_long_side, config.flip, config.colour_jitter)


def jitter_colours(
    image: torch.Tensor, strengths: tuple[float, float, float, float], rng: np.random.Generator
) -> torch.Tensor:
    """torchvision's ColorJitter(brightness, contrast, saturation, hue) on uint8 (3,H,W), drawn from ``rng``."""
    import torchvision.transforms.functional as TF  # torchvision loads torch._dynamo: ~1.5 s a command would pay
    brightness, contrast, saturation, hue = strengths
    adjustments = [
        (TF.adjust_brightness, brightness, lambda: rng.uniform(max(0.0, 1 - brightness), 1 + brightness)),
        (TF.adjust_contrast, contrast, lambda: rng.uniform(max(0.0, 1 - contrast), 1 + contrast)),
        (TF.adjust_saturation, saturation, lambda: rng.uniform(max(0.0, 1 - saturation), 1 + saturation)),
        (TF.adjust_hue, hue, lambda: rng.uniform(-hue, hue)),
    ]
    for index in rng.permutation(len(adjustments)):
        adjust, strength, draw = adjustments[index]
        if strength > 0:
            image = adjust(image, float(draw()))
    return image


def augment(
    image: np.ndarray, label: np.ndarray | None, aug: Augmentation, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray | None]:
    """uint8 HxWx3 (+ HxW label) -> normalised (3,S,S) tensor (+ label, padding 255).

    Padding of the image is 0 after normalisation, i.e. the mean colour (PSA).
    """
    if aug.rescale_long_side is not None:
        low, high = aug.rescale_long_side
        long_side = int(rng.integers(low, high + 1))
        image = resize_long_side(image, long_side)
        if label is not None:
            label = resize_long_side(label, long_side, resample=Image.NEAREST)
    if aug.flip and rng.random() < 0.5:
        image = image[:, ::-1]
        label = None if label is None else label[:, ::-1]
    tensor = torch.from_numpy(np.array(image, order="C")).permute(2, 0, 1)  # copy: inputs may be read-only
    if aug.colour_jitter is not None:
        tensor = jitter_colours(tensor, aug.colour_jitter, rng)
    tensor = normalise_images(tensor.permute(1, 2, 0))[0]
    if aug.crop_size is None:
        return tensor, None if label is None else np.ascontiguousarray(label)
    height, width = image.shape[:2]
    rows, cols, canvas_rows, canvas_cols = random_crop_box(height, width, aug.crop_size, rng)
    canvas = torch.zeros((3, aug.crop_size, aug.crop_size))
    canvas[:, canvas_rows, canvas_cols] = tensor[:, rows, cols]
    if label is None:
        return canvas, None
    label_canvas = np.full((aug.crop_size, aug.crop_size), IGNORE_INDEX, dtype=np.uint8)
    label_canvas[canvas_rows, canvas_cols] = label[rows, cols]
    return canvas, label_canvas


def pad_batch(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (3,H,W) tensors, zero-padding bottom/right to the largest size."""
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    batch = torch.zeros((len(tensors), 3, height, width))
    for i, tensor in enumerate(tensors):
        batch[i, :, : tensor.shape[1], : tensor.shape[2]] = tensor
    return batch


class AugmentedItems(torch.utils.data.Dataset):
    """``prepare(dataset[i], i, rng)`` with an rng that depends only on (seed, epoch, i).

    So augmentation is the same whatever the number of loader workers, and a resumed
    run sees the images an uninterrupted one would.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, prepare: Callable[..., Any], seed: int):
        self.dataset, self.prepare, self.seed, self.epoch = dataset, prepare, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return self.prepare(self.dataset[int(index)], int(index), rng)


def epoch_loader(
    items: AugmentedItems,
    epoch: int,
    batches: list[np.ndarray],
    collate: Callable[[list], Any],
    num_workers: int,
    multiprocessing_context: str | None = None,
) -> torch.utils.data.DataLoader:
    """A loader over one epoch's index batches; workers are started per epoch (they copy ``items``).

    multiprocessing_context: None is the platform's default (fork on Linux); "spawn" for
    callers that may run inside Prefect, where forked workers die (its threads and locks).
    """
    items.epoch = epoch
    return torch.utils.data.DataLoader(
        items, batch_sampler=[b.tolist() for b in batches], collate_fn=collate, num_workers=num_workers,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """torch's deterministic kernels while a training runs; the process's setting comes back after.

    On the CPU the kernels a wsss training uses are deterministic for one thread count:
    the same run with another ``torch.set_num_threads`` differs in the last bits (its
    reductions are split differently), so a resumed training matches an uninterrupted one
    only with the same thread count (``fit`` warns when it differs). The mode makes the
    CPU's accumulating ``index_put`` deterministic too.
    On CUDA it also turns cuDNN's deterministic algorithms on, but some of our ops have no
    deterministic CUDA kernel in backward (bilinear ``interpolate``, ``AdaptiveAvgPool2d``
    of ASPP's pooling branch, ``NLLLoss`` / cross-entropy): warn_only, so they warn and run
    rather than fail; GPU trainings are close between runs, not bit for bit equal.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace (CUDA docs); read when the process's
        # first matmul sets cuBLAS up, so set it in the environment when CUDA ran earlier.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def resume_state(
    path: str | Path | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    config: TrainConfig,
) -> tuple[int, list[dict[str, float]]]:
    """Load model + optimiser from ``path`` when it exists: (epochs done, metrics history)."""
    if path is None or not Path(path).exists():
        return 0, []
    checkpoint = read_checkpoint(path)
    if checkpoint.get("meta") != meta:
        raise BadInputError(path, f"checkpoint is for {checkpoint.get('meta')}, not {meta}")
    stored, current = checkpoint.get("config", {}), config_to_dict(config)
    if stored != current:
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise BadInputError(path, f"checkpoint was trained with a different config (fields {changed})")
    threads = checkpoint.get("torch_threads")
    if threads is not None and threads != torch.get_num_threads():
        logger.warning("%s: trained with %d torch threads, resumed with %d: the weights will differ in the last "
                       "bits from those of an uninterrupted run", path, threads, torch.get_num_threads())
    model.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint:  # (not after all its epochs: drop_resume_state may have run)
        optimizer.load_state_dict(checkpoint["optimizer"])
    return int(checkpoint["epoch"]), list(checkpoint.get("history", []))


def checkpoint_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, meta: dict, config: TrainConfig, history: list
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "meta": meta,
        "config": config_to_dict(config),
        "history": history,
        "torch_threads": torch.get_num_threads(),  # CPU results depend on it (deterministic_algorithms)
    }


def make_optimizer(model: nn.Module, head: Iterable[nn.Module], config: TrainConfig) -> torch.optim.SGD:
    groups = parameter_groups(
        model, head, config.lr, config.weight_decay, config.head_lr_multiplier, config.bias_lr_multiplier
    )
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def fit(
    model: nn.Module,
    items: AugmentedItems,
    collate: Callable[[list], Any],
    config: TrainConfig,
    batch_loss: Callable[[Any, list[torch.Tensor]], tuple[torch.Tensor, Any]],
    *,
    device: torch.device,
    checkpoint_path: str | Path | None,
    on_epoch_end: EpochCallback | None,
    summarise: Callable[[list[Any]], dict[str, float]] | None = None,
    multiprocessing_context: str | None = None,
) -> None:
    """The epoch loop every network shares: poly SGD, a checkpoint per epoch, resume from it.

    ``model`` needs ``backbone``, ``head_modules()`` and ``checkpoint_meta()``;
    ``batch_loss(model, batch on device) -> (loss, output)``, ``summarise(outputs)`` adds metrics.
    multiprocessing_context: of the loader workers (``epoch_loader``).

    Each epoch draws only from (seed, epoch): its order (``epoch_batches``), its augmentation
    (``AugmentedItems``, per image), and torch's generator (dropout, the loader's seed) is set
    from them when the epoch starts. So a checkpoint holds no generator state: a training
    killed in the middle of an epoch redoes that epoch from its start with the same draws.
    """
    n_items = len(items)
    if n_items == 0:
        raise DatasetError("no training items")
    frozen_bn = use_frozen_batchnorm(config.batchnorm, model.backbone.weights_record.used != "none")
    if frozen_bn:
        freeze_batchnorm(model)
    optimizer = make_optimizer(model, model.head_modules(), config)
    meta = model.checkpoint_meta()
    start_epoch, history = resume_state(checkpoint_path, model, optimizer, meta, config)
    steps_per_epoch = len(epoch_batches(n_items, config.batch_size, config.seed, 0))
    max_step = config.epochs * steps_per_epoch
    with deterministic_algorithms(device):
        for epoch in range(start_epoch, config.epochs):
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout
            model.train()
            if frozen_bn:
                freeze_batchnorm(model)
            losses, outputs = [], []
            batches = epoch_batches(n_items, config.batch_size, config.seed, epoch)
            loader = epoch_loader(items, epoch, batches, collate, config.num_workers, multiprocessing_context)
            for step, batch in enumerate(loader):
                set_poly_lr(optimizer, epoch * steps_per_epoch + step, max_step, config.poly_power)
                loss, output = batch_loss(model, [t.to(device) for t in batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                outputs.append(output)
            metrics = {"loss": float(np.mean(losses)), **(summarise(outputs) if summarise else {})}
            history.append(metrics)
            if checkpoint_path is not None:
                state = checkpoint_state(model, optimizer, epoch + 1, meta, config, history)
                save_checkpoint(checkpoint_path, state)
            logger.info("%s epoch %d/%d: %s", meta["kind"], epoch + 1, config.epochs, metrics)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)


# ----------------------------------------------------------------------------- metrics


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive; NaN without positives."""
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    ranked = targets[np.argsort(-scores, kind="stable")]
    precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    return float((precision * ranked).sum() / positives)


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean AP over the classes (columns) that have at least one positive."""
    values = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
