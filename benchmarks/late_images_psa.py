"""How good are the masks of images that join the AffinityNet path after its networks were trained?

    .venv/bin/python benchmarks/late_images_psa.py [--images 60] [--variant standard] [--late 0.08]
        [--repeats 1] [--no-seed-run] [--cam-epochs E] [--affinity-epochs E]

The AffinityNet path's two trainings (the CAM classifier, train-cam, and AffinityNet,
train-affinitynet) are dataset-level: an image that joins a workspace after them (a retried
failure, a grown dataset) is served by the trained networks as they are, until the late
images exceed 10 % of the images they were trained on (wsss_core.refit). This measures, on
the train split of a generated dataset, what serving costs the late images, with the real
flows (preset "small", CPU):

    clean   workspace A: every train image ingested, affinitynet_flow once (the networks
            learn from every image, the late ones included)
    late    workspace B: the same images but --late of them (drawn --repeats times) are
            left out of the first ingest (ingest_flow only_ids), affinitynet_flow trains on
            the rest; then the full split is ingested (the late images join) and
            affinitynet_flow runs again: both trainings keep their networks ("joined late",
            checked) and the late images get their CAMs, affinity labels, walks and masks
            from networks that never saw them
    seed    (unless --no-seed-run) workspace A again with both trainings' seed changed
            (cam_train.seed, affinity_train.seed = 1): the seed-to-seed spread of a clean
            run on the same images, the scale any late-vs-clean gap is to be read against

mIoU is pooled over the late images' pixels (and, apart, over the other images' pixels)
for pseudo/cam, pseudo/rw and pseudo/rw-crf. The seed spread is also given as the median
|clean - seed| over 200 random subsets of the late images' size ("subset noise").
Prints a table and writes benchmarks/results/late_images_psa-<variant>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import flows  # noqa: E402,F401  (Prefect defaults before Prefect loads)
from flows.affinitynet import affinitynet_flow  # noqa: E402
from flows.common import Execution, flow_result  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from tasks.affinitynet import PSEUDO_CAM, PSEUDO_RW, PSEUDO_RW_CRF, TRAIN_AFFINITYNET, TRAIN_CAM  # noqa: E402
from wsss_core.data.synthetic import SyntheticConfig, generate_dataset  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.requests import AffinityNetRequest  # noqa: E402
from wsss_core.store import Workspace  # noqa: E402

STAGES = (PSEUDO_CAM, PSEUDO_RW, PSEUDO_RW_CRF)
TRAININGS = (TRAIN_CAM, TRAIN_AFFINITYNET)
SUBSET_DRAWS = 200
QUIET = Execution(progress=False)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def per_image(ws: Workspace, ids: list[str]) -> dict[str, dict[str, ConfusionMatrix]]:
    """stage -> image id -> that image's confusion matrix (stages the run did not produce are left out)."""
    result: dict[str, dict[str, ConfusionMatrix]] = {}
    for stage in STAGES:
        done = ws.done_ids(stage)
        if not all(i in done for i in ids):
            continue
        result[stage] = {
            i: ConfusionMatrix(len(ws.classes)).update(ws.read_array(stage, i), ws.read_array("gt", i)) for i in ids
        }
    return result


def pooled_miou(matrices: dict[str, ConfusionMatrix], ids: list[str]) -> float:
    total = ConfusionMatrix(next(iter(matrices.values())).num_classes)
    for image_id in ids:
        total = total.merge(matrices[image_id])
    return 100 * total.miou()


def run_flow(workspace: str, overrides: dict | None) -> object:
    return flow_result(
        affinitynet_flow, workspace=workspace, execution=QUIET, request=AffinityNetRequest(
            preset="small", evaluate=False, log_to_mlflow=False, device="cpu", overrides=overrides or {},
        ),
    )


def trainings_of(run: object) -> dict[str, dict]:
    """What each training did in a flow run: refitted or not, its note, its counts."""
    return {
        s.stage: {"refitted": s.refitted, "note": s.note, "done": s.done, "skipped": s.skipped, "failed": len(s.failed)}
        for s in run.summaries if s.stage in TRAININGS
    }


def failed_of(run: object) -> dict[str, int]:
    return {s.stage: len(s.failed) for s in run.summaries if s.failed}


def clean_run(root: Path, workspace: str, ids: list[str], overrides: dict | None, label: str) -> tuple[dict, dict]:
    started = time.perf_counter()
    flow_result(ingest_flow, root=str(root), workspace=workspace, execution=QUIET)
    run = run_flow(workspace, overrides)
    info = {"seconds": time.perf_counter() - started, "trainings": trainings_of(run), "failed": failed_of(run)}
    log(f"{label}: {info['seconds']:.0f} s, trainings {info['trainings']}, failed {info['failed']}")
    return per_image(Workspace(workspace), ids), info


def late_run(root: Path, workspace: str, ids: list[str], late: list[str], overrides: dict | None, label: str) -> tuple[dict, dict]:
    started = time.perf_counter()
    early = [i for i in ids if i not in set(late)]
    flow_result(ingest_flow, root=str(root), workspace=workspace, only_ids=early, execution=QUIET)
    first = run_flow(workspace, overrides)
    first_seconds = time.perf_counter() - started
    log(f"{label}, trained on {len(early)}: {first_seconds:.0f} s, trainings {trainings_of(first)}")
    flow_result(ingest_flow, root=str(root), workspace=workspace, execution=QUIET)  # the late images join
    second = run_flow(workspace, overrides)
    info = {
        "seconds": time.perf_counter() - started, "first_seconds": first_seconds,
        "first": {"trainings": trainings_of(first), "failed": failed_of(first)},
        "second": {"trainings": trainings_of(second), "failed": failed_of(second)},
    }
    served = all(
        not t["refitted"] and "joined late" in t["note"] and t["done"] == len(late)
        for t in info["second"]["trainings"].values()
    ) and set(info["second"]["trainings"]) == set(TRAININGS)
    info["served"] = served
    log(f"{label}, {len(late)} joined late: {time.perf_counter() - started - first_seconds:.0f} s, "
        f"trainings {info['second']['trainings']}, served without retraining: {served}")
    if not served:
        raise SystemExit(f"{label}: the trainings did not serve the late images as they are: {info['second']}")
    return per_image(Workspace(workspace), ids), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="generated images (80 %% train)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--variant", default="standard", choices=("standard", "holdout"))
    parser.add_argument("--late", type=float, default=0.08, help="share of the train images that join late")
    parser.add_argument("--repeats", type=int, default=1, help="late draws (a late workspace each)")
    parser.add_argument("--seed", type=int, default=0, help="dataset and draw seed")
    parser.add_argument("--no-seed-run", dest="seed_run", action="store_false", help="skip the second clean run")
    parser.add_argument("--cam-epochs", type=int, default=None, help="override the small preset's CAM epochs")
    parser.add_argument("--affinity-epochs", type=int, default=None, help="override the small preset's AffinityNet epochs")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    started = time.perf_counter()
    base: dict[str, dict] = {}
    if args.cam_epochs is not None:
        base["cam_train"] = {"epochs": args.cam_epochs}
    if args.affinity_epochs is not None:
        base["affinity_train"] = {"epochs": args.affinity_epochs}
    overrides = base or None
    seed_overrides = {name: {**base.get(name, {}), "seed": 1} for name in ("cam_train", "affinity_train")}
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = SyntheticConfig(n_images=args.images, width=args.width, height=args.height, seed=args.seed,
                                 variant=args.variant)
        root = generate_dataset(Path(tmp) / "data", config)
        flow_result(ingest_flow, root=str(root), workspace=str(Path(tmp) / "probe"), execution=QUIET)
        ids = sorted(Workspace(str(Path(tmp) / "probe")).image_ids())
        k = max(1, round(args.late * len(ids)))
        log(f"{len(ids)} train images of {args.width}x{args.height}, {k} late per draw, overrides {overrides}")
        clean, runs["clean"] = clean_run(root, str(Path(tmp) / "clean"), ids, overrides, "clean")
        generator = random.Random(args.seed)
        draws = [sorted(generator.sample(ids, k)) for _ in range(args.repeats)]
        lates = []
        for r, late in enumerate(draws):
            matrices, runs[f"late-{r}"] = late_run(root, str(Path(tmp) / f"late-{r}"), ids, late, overrides, f"late draw {r}")
            lates.append(matrices)
        seeded = None
        if args.seed_run:
            seeded, runs["seed"] = clean_run(root, str(Path(tmp) / "seed"), ids, seed_overrides, "clean, seed 1")

    stages = [s for s in STAGES if s in clean and all(s in m for m in lates) and (seeded is None or s in seeded)]
    results: dict[str, dict] = {}
    for stage in stages:
        rows: dict[str, list[float]] = {name: [] for name in ("clean", "late", "seed", "rest-clean", "rest-late", "rest-seed")}
        for late, matrices in zip(draws, lates, strict=True):
            rest = [i for i in ids if i not in set(late)]
            rows["clean"].append(pooled_miou(clean[stage], late))
            rows["late"].append(pooled_miou(matrices[stage], late))
            rows["rest-clean"].append(pooled_miou(clean[stage], rest))
            rows["rest-late"].append(pooled_miou(matrices[stage], rest))
            if seeded is not None:
                rows["seed"].append(pooled_miou(seeded[stage], late))
                rows["rest-seed"].append(pooled_miou(seeded[stage], rest))
        rows = {name: values for name, values in rows.items() if values}
        result = {"miou": rows, "median": {name: statistics.median(values) for name, values in rows.items()}}
        result["late_gap"] = statistics.median(b - a for a, b in zip(rows["clean"], rows["late"], strict=True))
        if seeded is not None:
            subsets = random.Random(args.seed + 1)
            gaps = []
            for _ in range(SUBSET_DRAWS):
                subset = subsets.sample(ids, k)
                gaps.append(abs(pooled_miou(seeded[stage], subset) - pooled_miou(clean[stage], subset)))
            result["subset_noise"] = statistics.median(gaps)
            result["subset_noise_p90"] = sorted(gaps)[int(0.9 * len(gaps))]
            result["all_images_seed_gap"] = pooled_miou(seeded[stage], ids) - pooled_miou(clean[stage], ids)
        results[stage] = result

    seconds = time.perf_counter() - started
    note = f", epochs overridden: {overrides}" if overrides else ", the small preset's epochs"
    print(f"\nmIoU (%), {args.variant} variant, {len(ids)} train images of {args.width}x{args.height}, "
          f"{k} late, median of {args.repeats} draw(s){note}:")
    header = f"{'stage':<15}{'late: clean':>12}{'late':>8}{'gap':>7}"
    if seeded is not None:
        header += f"{'seed1':>8}{'gap':>7}"
    header += f"  | {'rest: clean':>11}{'late':>8}{'gap':>7}"
    if seeded is not None:
        header += f"{'seed1':>8}{'gap':>7}  | {'subset noise':>12}{'p90':>6}"
    print(header)
    for stage, result in results.items():
        m = result["median"]
        line = f"{stage:<15}{m['clean']:>12.1f}{m['late']:>8.1f}{m['late'] - m['clean']:>+7.1f}"
        if seeded is not None:
            line += f"{m['seed']:>8.1f}{m['seed'] - m['clean']:>+7.1f}"
        line += f"  | {m['rest-clean']:>11.1f}{m['rest-late']:>8.1f}{m['rest-late'] - m['rest-clean']:>+7.1f}"
        if seeded is not None:
            line += (f"{m['rest-seed']:>8.1f}{m['rest-seed'] - m['rest-clean']:>+7.1f}"
                     f"  | {result['subset_noise']:>12.1f}{result['subset_noise_p90']:>6.1f}")
        print(line)
    out = REPO_ROOT / "benchmarks" / "results" / f"late_images_psa-{args.variant}{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "args": vars(args), "overrides": overrides, "machine": platform.processor() or platform.machine(),
        "train_images": len(ids), "late_images": k, "draws": draws, "seconds": seconds, "runs": runs,
        "results": results,
    }, indent=1))
    print(f"wrote {out} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
