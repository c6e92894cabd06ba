import numpy as np

from flows.common import Execution
from flows.ingest import ingest_flow
from flows.superpixels import superpixels_flow
from wsss_core.graphnet.config import resolve_config
from wsss_core.requests import SuperpixelsRequest
from wsss_core.store import Workspace
from wsss_core.graphnet.superpixels import compute_superpixels

QUIET = Execution(progress=False)


def test_superpixels_for_every_image_skip_when_done_recompute_on_new_config(synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=QUIET)
    ws = Workspace(workspace)
    first = superpixels_flow(workspace=workspace, execution=Execution(batch_size=3, progress=False)).summaries[0]
    assert first.ok and first.done == len(ws.image_ids())
    image_id = ws.image_ids()[0]
    # the settings `wsss graphnet` would use here (auto: offline, no pretrained weights)
    expected = compute_superpixels(ws.read_array("images", image_id), resolve_config("auto").config.superpixels)
    assert np.array_equal(ws.read_array("superpixels", image_id), expected)

    second = superpixels_flow(workspace=workspace, execution=Execution(batch_size=3, progress=False)).summaries[0]
    assert second.done == 0 and second.skipped == first.done

    third = superpixels_flow(workspace=workspace, request=SuperpixelsRequest(overrides={"segments_per_100k_pixels": 100}), execution=QUIET).summaries[0]
    assert third.done == first.done  # another config: every image recomputed, none mixed
    assert ws.read_array("superpixels", image_id).max() < expected.max()
    assert ws.stage_meta("superpixels")["config"]["config"]["segments_per_100k_pixels"] == 100
