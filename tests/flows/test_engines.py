"""The same pipeline on every engine: byte-identical masks from threads, processes and Dask.

prefect-dask pickles the running flow into every task it sends; these tests are what
keeps flow bodies free of unpicklable globals.
"""

import cloudpickle
import numpy as np
import pytest

from flows.affinitynet import affinitynet_flow
from flows.common import Execution
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from flows.run import run_flow
from flows.segment import segment_flow
from flows.superpixels import superpixels_flow
from wsss_core.requests import GraphNetRequest
from wsss_core.store import Workspace

GRAPHNET = dict(preset="offline", overrides={"gcn": {"pretrain_epochs": 20}}, evaluate=False)


def graphnet_masks(workspace: str, execution: Execution) -> dict[str, np.ndarray]:
    run = graphnet_flow(workspace=workspace, request=GraphNetRequest(**GRAPHNET), execution=execution)
    assert run.ok, [s.line() for s in run.summaries]
    ws = Workspace(workspace)
    return {i: ws.read_array("pseudo/gcn-scribbles", i) for i in ws.image_ids()}


@pytest.fixture(scope="module")
def reference(synthetic_root, tmp_path_factory, prefect_harness):
    workspace = str(tmp_path_factory.mktemp("threads") / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=Execution(progress=False))
    return graphnet_masks(workspace, Execution(progress=False, batch_size=4))


@pytest.mark.parametrize("engine", ["processes", "dask"])
def test_graphnet_on_other_engines_gives_byte_identical_masks(engine, reference, synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    execution = Execution(engine=engine, workers=2, batch_size=4, progress=False)
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=execution)
    masks = graphnet_masks(workspace, execution)
    assert masks.keys() == reference.keys()
    for image_id, mask in masks.items():
        assert mask.tobytes() == reference[image_id].tobytes(), image_id


@pytest.mark.parametrize("flow", [graphnet_flow, affinitynet_flow, superpixels_flow, ingest_flow, run_flow, segment_flow])
def test_every_flow_pickles_as_prefect_dask_sends_it(flow):
    restored = cloudpickle.loads(cloudpickle.dumps(flow))
    assert restored.name == flow.name
