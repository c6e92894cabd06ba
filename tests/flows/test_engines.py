"""The same stage flow on each engine: process pool and a Dask LocalCluster."""

import numpy as np
import pytest

from flows.common import EngineConfig, make_task_runner
from flows.ingest import ingest_flow
from flows.superpixels import superpixels_flow
from wsss_core.store import Workspace
from wsss_core.superpixels import SuperpixelConfig, compute_superpixels


@pytest.mark.parametrize("engine", ["processes", "dask"])
def test_superpixels_on_other_engines(engine, synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, progress=False)
    runner = make_task_runner(EngineConfig(engine=engine, workers=2))
    summary = superpixels_flow.with_options(task_runner=runner)(workspace=workspace, batch_size=4, progress=False)
    ws = Workspace(workspace)
    assert summary.ok and summary.done == len(ws.image_ids())
    for image_id in ws.image_ids()[:3]:
        expected = compute_superpixels(ws.read_array("images", image_id), SuperpixelConfig())
        assert np.array_equal(ws.read_array("superpixels", image_id), expected)
