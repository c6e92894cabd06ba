"""After a real GraphNet run every done mask carries a confidence, and `wsss status` shows it."""

from typer.testing import CliRunner

from cli import app
from flows.common import Execution
from flows.graphnet import graphnet_flow
from flows.ingest import ingest_flow
from wsss_core.confidence import read_confidence
from wsss_core.requests import GraphNetRequest
from wsss_core.store import Workspace

QUIET = Execution(progress=False)


def test_graphnet_masks_carry_confidence_and_status_lists_the_lowest(synthetic_root, tmp_path):
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=QUIET)
    run = graphnet_flow(workspace=workspace, request=GraphNetRequest(preset="offline", overrides={"gcn": {"pretrain_epochs": 40}}, evaluate=False, log_to_mlflow=False), execution=QUIET)
    assert run.ok
    ws = Workspace(workspace)
    scores = read_confidence(ws, "pseudo/gcn-scribbles")
    assert set(scores) == ws.done_ids("pseudo/gcn-scribbles") == set(ws.image_ids())
    assert all(value is not None and 0.0 <= value <= 1.0 for value in scores.values())
    assert len(set(scores.values())) > 1  # a per-image score, not one constant
    baseline = read_confidence(ws, "pseudo/nearest-scribbles")
    assert baseline and all(value is None for value in baseline.values())  # no probabilities: no score

    lowest = min(scores, key=lambda i: (scores[i], i))
    result = CliRunner().invoke(app, ["status", "--workspace", workspace, "--worst", "1"], catch_exceptions=False)
    assert result.exit_code == 0
    line = next(text for text in result.output.splitlines() if text.startswith("pseudo/gcn-scribbles: confidence"))
    assert "median" in line and f"lowest: {lowest} {scores[lowest]:.2f}" in line
    assert "pseudo/nearest-scribbles: no confidence" in result.output
