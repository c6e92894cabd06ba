"""What a changed input reaches, read from the real pipeline tables (no hand-written list).

The change tests in test_dataset_changes.py run the scribbles and boxes paths; the tags
paths train models, so here the lineage of every table is checked on the tables alone.
"""

from __future__ import annotations

import pytest

from flows.affinitynet import affinitynet_pipeline, cam_rows
from flows.graphnet import graphnet_pipeline
from wsss_core.graphnet.config import GraphNetConfig
from wsss_core.lineage import affected_stages
from wsss_core.psa.config import AffinityNetPathConfig

WEIGHTS = {"cam": {"name": "none"}, "affinitynet": {"name": "none"}}


@pytest.fixture(scope="module")
def reads() -> dict[str, tuple[str, ...]]:
    """Every row of the scribbles, boxes, gcn-tags and AffinityNet tables: stage -> its reads."""
    graphnet, psa = GraphNetConfig.offline(), AffinityNetPathConfig()
    tables = [
        graphnet_pipeline(graphnet, "scribbles", "gcn", crf=True, features=None),
        graphnet_pipeline(graphnet, "boxes", "gcn", crf=True, features=None),
        graphnet_pipeline(graphnet, "tags", "gcn", crf=True, features=None, upstream=tuple(cam_rows(psa, WEIGHTS))),
        affinitynet_pipeline(psa, WEIGHTS, crf=True),
    ]
    rows = {}
    for table in tables:
        for row in table.stages:
            assert rows.setdefault(row.name, row.reads) == row.reads  # a shared row reads the same
    return rows


def test_a_changed_tag_reaches_the_tags_paths_only(reads):
    affected = set(affected_stages(reads, {"tags"}))
    assert {"train-cam", "cams", "pseudo/cam", "affinity-labels", "train-affinitynet", "rw", "seeds/tags",
            "nodes/gcn-tags", "pseudo/gcn-tags"} <= affected
    assert not affected & {"superpixels", "graphs", "seeds/scribbles", "seeds/boxes", "nodes/gcn-scribbles",
                           "nodes/gcn-boxes", "pseudo/gcn-boxes"}


def test_a_changed_scribble_or_box_reaches_its_own_path_from_the_seeds_on(reads):
    scribbles = set(affected_stages(reads, {"scribbles"}))
    assert {"seeds/scribbles", "gcn-weights/gcn-scribbles", "nodes/gcn-scribbles", "pseudo/gcn-scribbles",
            "pseudo/gcn-scribbles-crf", "pseudo/nearest-scribbles"} == scribbles
    boxes = set(affected_stages(reads, {"boxes"}))
    assert {"seeds/boxes", "gcn-weights/gcn-boxes", "nodes/gcn-boxes", "pseudo/gcn-boxes", "pseudo/gcn-boxes-crf",
            "pseudo/box-rectangles"} == boxes


def test_a_changed_image_reaches_every_row_and_a_gt_mask_none(reads):
    assert set(affected_stages(reads, {"images"})) == set(reads)
    assert affected_stages(reads, {"gt"}) == []


def test_a_scribble_reaches_the_tags_seeds_only_when_they_take_scribbles():
    from dataclasses import replace

    from wsss_core.graphnet.seeds import TagSeedConfig

    psa = AffinityNetPathConfig()
    corrected = replace(GraphNetConfig.offline(), tag_seeds=TagSeedConfig(scribbles=True))
    tables = {flag: graphnet_pipeline(config, "tags", "gcn", crf=False, features=None, upstream=tuple(cam_rows(psa, WEIGHTS)))
              for flag, config in ((False, GraphNetConfig.offline()), (True, corrected))}
    reads = {flag: {row.name: row.reads for row in table.stages} for flag, table in tables.items()}
    assert affected_stages(reads[False], {"scribbles"}) == []
    assert set(affected_stages(reads[True], {"scribbles"})) == {"seeds/tags", "gcn-weights/gcn-tags", "nodes/gcn-tags", "pseudo/gcn-tags"}


def test_a_manual_mask_reaches_the_segmentation_rounds_only(reads):
    from flows.segment import segmentation_pipeline
    from wsss_core.segmentation.config import SegmentationConfig
    from wsss_core.weights import WeightsChoice

    rounds = segmentation_pipeline("pseudo/gcn-scribbles", 2, SegmentationConfig(), WeightsChoice("segmentation", "resnet18", "none", "resnet18", None, "random init requested"))
    every = {**reads, **{row.name: row.reads for row in rounds.stages}}
    assert set(affected_stages(every, {"manual"})) == {row.name for row in rounds.stages}
