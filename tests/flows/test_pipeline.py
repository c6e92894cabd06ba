"""The stage tables are checked when built: every read is made by an earlier row, by ingest, or
is one of the table's declared inputs."""

import pytest

from flows.affinitynet import affinitynet_pipeline, cam_rows
from flows.graphnet import graphnet_pipeline
from flows.pipeline import Pipeline, Stage
from flows.segment import segmentation_pipeline
from tasks.graphnet import graphs_batch, seeds_batch
from wsss_core.graphnet.config import GraphNetConfig
from wsss_core.psa.config import AffinityNetPathConfig
from wsss_core.segmentation.config import SegmentationConfig
from wsss_core.weights import WeightsChoice

WEIGHTS = {"cam": {}, "affinitynet": {}}


def test_every_path_table_reads_only_what_its_earlier_rows_or_ingest_make():
    graphnet = GraphNetConfig.offline()
    for supervision in ("scribbles", "boxes"):
        assert graphnet_pipeline(graphnet, supervision, "gcn", True, None).stages
    tags = graphnet_pipeline(graphnet, "tags", "gcn", False, None, upstream=tuple(cam_rows(AffinityNetPathConfig.small(), WEIGHTS)))
    assert "affinity-labels" in {row.name for row in tags.stages}
    assert affinitynet_pipeline(AffinityNetPathConfig.small(), WEIGHTS, crf=True).stages
    rounds = segmentation_pipeline("pseudo/gcn-scribbles", 2, SegmentationConfig.small(),
                                   WeightsChoice("segmentation", "resnet18", "none", "resnet18", None, "random init requested"))
    assert rounds.inputs == ("pseudo/gcn-scribbles",)  # the masks round 1 trains on come from another table


def test_a_read_no_earlier_row_makes_is_refused_in_one_line():
    graphs = Stage("graphs", graphs_batch, ("images", "superpixels"))
    seeds = Stage("seeds/scribbles", seeds_batch, ("scribbles", "superpixels"))
    with pytest.raises(ValueError, match=r"^pipeline p: row 'graphs' reads 'superpixels', which no earlier row makes$"):
        Pipeline("p", (graphs, seeds))
    with pytest.raises(ValueError, match="row 'seeds/scribbles' reads 'superpixels'"):
        Pipeline("p", (Stage("superpixels", graphs_batch, ("images",)), seeds)[::-1])  # made, but only later
    assert Pipeline("p", (graphs, seeds), inputs=("superpixels",)).stages == (graphs, seeds)
    with pytest.raises(ValueError, match="reads 'affinity-labels'"):
        graphnet_pipeline(GraphNetConfig.offline(), "tags", "gcn", False, None)  # without the CAM rows that make them
