import numpy as np

from flows.ingest import ingest_flow
from flows.superpixels import superpixels_flow
from wsss_core.store import Workspace
from wsss_core.superpixels import SuperpixelConfig, compute_superpixels


def test_superpixels_for_every_image_skip_when_done_recompute_on_new_config(synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, progress=False)
    ws = Workspace(workspace)
    first = superpixels_flow(workspace=workspace, batch_size=3, progress=False)
    assert first.ok and first.done == len(ws.image_ids())
    image_id = ws.image_ids()[0]
    expected = compute_superpixels(ws.read_array("images", image_id), SuperpixelConfig())
    assert np.array_equal(ws.read_array("superpixels", image_id), expected)

    second = superpixels_flow(workspace=workspace, batch_size=3, progress=False)
    assert second.done == 0 and second.skipped == first.done

    coarse = SuperpixelConfig(segments_per_100k_pixels=100)
    third = superpixels_flow(workspace=workspace, config=coarse, progress=False)
    assert third.done == first.done  # another config: every image recomputed, none mixed
    assert ws.read_array("superpixels", image_id).max() < expected.max()
    assert ws.stage_meta("superpixels")["config"]["segments_per_100k_pixels"] == 100
