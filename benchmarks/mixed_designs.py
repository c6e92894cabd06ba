"""How should a mixed dataset's GCN learn? The designs graphnet-mixed was chosen from, on a tuning set.

    .venv/bin/python benchmarks/mixed_designs.py --workspace WS [--mix scribbles=0.2,boxes=0.2,tags=0.6] [--seed 101]

WS: a workspace of a generated dataset where every image has every label and `wsss graphnet`
ran with --supervision tags, scribbles and boxes (--preset offline), so the stored seeds of
every kind exist for every image. The label mix (drawn as `wsss generate --label-mix` draws
it, from --seed) decides which labels each image keeps; the GCN functions of wsss_core then
fit, as the offline preset does (one shared GCN, no per-image epochs), and the masks are
scored per label group against GT (mIoU %, every image):

    own        each group through its own path in the mixed dataset: the tags path over
               every image, scribbles over the scribbled ones, boxes over the boxed ones
    one-fit    one GCN fitted on every image's seeds (a tag-only image: its CAM's)
    drawn-fit  one GCN fitted on the scribbled and boxed images only, labelling every image
    agreed     the drawn-fit GCN labels every image, a tag-only image keeps the CAM seeds it
               agrees with, and one GCN is fitted on all those seeds (graphnet-mixed's shared GCN)
    tiers      pseudo/mixed: scribbled images from a GCN fitted on the scribbled images, boxed
               ones from drawn-fit, tag-only ones from agreed

Prints the table and writes benchmarks/results/mixed_designs-<workspace name>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from wsss_core.data.label_mix import assign_groups, parse_label_mix  # noqa: E402
from wsss_core.graphnet.config import GRAPH_ARRAYS, SEED_ARRAYS, GraphNetConfig, graph_from_arrays, seeds_from_arrays  # noqa: E402
from wsss_core.graphnet.gcn import GraphInput, pretrain_gcn, propagate_gcn  # noqa: E402
from wsss_core.graphnet.masks import node_mask  # noqa: E402
from wsss_core.graphnet.mixed import agreed_seeds, combine_seeds  # noqa: E402
from wsss_core.metrics import ConfusionMatrix  # noqa: E402
from wsss_core.store import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--mix", default="scribbles=0.2,boxes=0.2,tags=0.6")
    parser.add_argument("--seed", type=int, default=101, help="the seed the label mix is drawn from")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    ws = Workspace(args.workspace).require()
    ids = ws.image_ids()
    groups = dict(zip(ids, assign_groups(len(ids), parse_label_mix(args.mix), args.seed), strict=True))
    config = GraphNetConfig.offline().gcn

    def read(stage: str, image_id: str, names: tuple[str, ...]) -> dict:
        return {name: ws.read_array(stage, image_id, name) for name in names}

    graphs = {i: graph_from_arrays(read("graphs", i, GRAPH_ARRAYS)) for i in ids}
    seeds = {kind: {i: seeds_from_arrays(read(f"seeds/{kind}", i, SEED_ARRAYS)) for i in ids}
             for kind in ("scribbles", "boxes", "tags")}

    def own_seeds(image_id: str):
        group = groups[image_id]
        if group == "boxes+scribbles":
            return combine_seeds(seeds["scribbles"][image_id], seeds["boxes"][image_id])
        return seeds["tags" if group == "tags" else group][image_id]

    def fit_and_label(fit_ids, seed_of, label_ids):
        weights = pretrain_gcn([GraphInput(*graphs[i], seed_of(i)) for i in fit_ids], config)
        outputs = propagate_gcn([GraphInput(*graphs[i], seed_of(i)) for i in label_ids], config, init=weights)
        return dict(zip(label_ids, outputs, strict=True))

    def masks(probabilities: dict) -> dict:
        return {i: node_mask(ws.read_array("superpixels", i), p) for i, p in probabilities.items()}

    def miou(found: dict, members: list[str]) -> float:
        matrix = ConfusionMatrix(len(ws.classes))
        for image_id in members:
            matrix.update(found[image_id], ws.read_array("gt", image_id))
        return round(100 * matrix.miou(), 1)

    by_group = {g: [i for i in ids if groups[i] == g] for g in sorted(set(groups.values()))}
    scribbled = [i for i in ids if "scribbles" in groups[i]]
    boxed = [i for i in ids if "boxes" in groups[i]]
    drawn = [i for i in ids if groups[i] != "tags"]
    own = {}
    own.update(masks(fit_and_label(scribbled, lambda i: seeds["scribbles"][i], scribbled)))
    boxes_own = masks(fit_and_label(boxed, lambda i: seeds["boxes"][i], boxed))
    own.update({i: m for i, m in boxes_own.items() if groups[i] == "boxes"})
    own.update({i: m for i, m in masks(fit_and_label(ids, lambda i: seeds["tags"][i], ids)).items() if groups[i] == "tags"})
    one_fit = masks(fit_and_label(ids, own_seeds, ids))
    drawn_probabilities = fit_and_label(drawn, own_seeds, ids)
    drawn_fit = masks(drawn_probabilities)

    def agreed_of(image_id: str):
        return agreed_seeds(own_seeds(image_id), drawn_probabilities[image_id]) if groups[image_id] == "tags" else own_seeds(image_id)

    agreed = masks(fit_and_label(ids, agreed_of, ids))
    scribbled_fit = masks(fit_and_label(scribbled, own_seeds, scribbled))
    tiers = {i: scribbled_fit[i] if i in scribbled_fit else drawn_fit[i] if groups[i] != "tags" else agreed[i] for i in ids}
    designs = {"own": own, "one-fit": one_fit, "drawn-fit": drawn_fit, "agreed": agreed, "tiers": tiers}
    table = {name: {g: miou(found, members) for g, members in by_group.items() if all(i in found for i in members)}
             for name, found in designs.items()}
    print(f"{'design':<11}" + "".join(f"{g + f' ({len(m)})':>22}" for g, m in by_group.items()))
    for name, row in table.items():
        print(f"{name:<11}" + "".join(f"{row.get(g, float('nan')):>22.1f}" for g in by_group))
    out = REPO_ROOT / "benchmarks" / "results" / f"mixed_designs-{args.workspace.parent.name}.json"
    out.write_text(json.dumps({"args": {**vars(args), "workspace": str(args.workspace)}, "machine": platform.processor() or platform.machine(),
                               "seconds": round(time.perf_counter() - started, 1), "groups": {g: len(m) for g, m in by_group.items()},
                               "miou": table}, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
