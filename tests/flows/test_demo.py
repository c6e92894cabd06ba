"""`wsss demo`: the built-in dataset through every path, a segmentation round each, the evaluation
and the report; run again, everything is found done."""

import logging
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from wsss_core.run_config import DEMO_CONFIG, resolve_run_config
from wsss_core.store import Workspace
from wsss_core.weights import OFFLINE_MESSAGE

runner = CliRunner()

# The demo's config made tiny (12 images of 96x72, one epoch per training, no CRFs in the rounds).
TINY = {
    "generate.width": 96, "generate.height": 72, "device": "cpu",
    "graphnet.overrides.gcn.pretrain_epochs": 20,
    "affinitynet.train_threads": 1,
    "affinitynet.overrides.cam_train": "{epochs: 1, batch_size: 4, crop_size: 64, rescale_long_side: null}",
    "affinitynet.overrides.cam_inference": "{scales: [1.0], flip: false}",
    "affinitynet.overrides.affinity_labels.crf.iterations": 2,
    "affinitynet.overrides.affinity_train": "{epochs: 1, batch_size: 4, crop_size: 64}",
    "affinitynet.overrides.rw_crf.iterations": 2,
    "segmentation.train_threads": 1,
    "segmentation.overrides.train": "{epochs: 1, crop_size: 48}",
    "segmentation.overrides.inference.crf": False,
    "execution.batch_size": 4,
}
MASKS = ["pseudo/gcn-scribbles", "pseudo/gcn-boxes", "pseudo/rw", "pseudo/rw-crf", "pseudo/gcn-tags",
         "pseudo/gcn-scribbles/round-1", "pseudo/gcn-boxes/round-1", "pseudo/gcn-tags/round-1"]


@pytest.fixture
def weights_log():
    """The records wsss_core.weights logs during the test, on a handler of its own: Prefect's
    logging set-up replaces the root logger's handlers (pytest's caplog among them) when a flow runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("wsss_core.weights")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def demo(out: Path):
    args = ["demo", "--out", str(out), "--images", "12", "--no-progress"]
    for name, value in TINY.items():
        args += ["--set", f"{name}={value}"]
    return runner.invoke(app, args, catch_exceptions=False)


def markers(workspace: Path) -> dict[str, int]:
    return {str(p.relative_to(workspace)): p.stat().st_mtime_ns for p in (workspace / "markers").rglob("*.json")}


def test_the_demo_config_is_a_run_config_with_train_and_val():
    config = resolve_run_config(str(DEMO_CONFIG), None)
    assert config.generate.images > 0 and set(config.ingest.splits) == {"train", "val"}
    assert config.segmentation.rounds == 1 and config.evaluate


def models(workspace: Path) -> dict[str, int]:
    return {str(p.relative_to(workspace)): p.stat().st_mtime_ns for p in (workspace / "models").rglob("*") if p.is_file()}


def test_demo_runs_every_path_and_a_round_each_then_finds_everything_done(tmp_path, monkeypatch, no_network, weights_log):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = tmp_path / "demo"
    first = demo(out)
    assert first.exit_code == 0, first.output
    workspace = out / "workspace"
    ws = Workspace(workspace)
    ids = set(ws.image_ids())
    assert len(ids) == 12 and set(ws.splits()) == {"train", "val"}
    for stage in MASKS:
        assert ws.done_ids(stage) == ids, stage
    report = workspace / "reports" / "report.html"
    assert report.is_file() and "pseudo/gcn-tags/round-1" in report.read_text()
    # the results table (mask sets x splits), then where everything is
    output = first.output
    assert re.search(r"method\s+round\s+mask set\s+mIoU train\s+mIoU val\s+images", output), output
    for stage in MASKS:
        assert re.search(rf"\s{re.escape(stage)}\s+\d+\.\d[ *]\s+\d+\.\d", output), stage
    assert f"workspace: {workspace}" in output and f"report:    {report}" in output
    assert f"ui --workspace {workspace}" in output and "server start" in output
    # without a network the rounds' ImageNet weights cannot be had: said once, plainly (a warning in the
    # log, not the command's output), and no fallback is shouted, neither there nor in the output
    said = [r for r in weights_log if r.getMessage().startswith(OFFLINE_MESSAGE)]
    assert [r.levelno for r in said] == [logging.WARNING], [r.getMessage() for r in weights_log]
    shouted = [r.getMessage() for r in weights_log if r.levelno >= logging.WARNING and r not in said]
    assert not shouted and "RANDOM INIT" not in output and "could not load" not in output, shouted
    assert "scored on different images" not in output  # every mask set once, on every image

    before, trained = markers(workspace), models(workspace)
    assert any(name.startswith("models/cam/") for name in trained) and len(trained) >= 4, trained
    report_written = report.stat().st_mtime_ns
    second = demo(out)
    assert second.exit_code == 0, second.output
    assert markers(workspace) == before  # no image of any stage recomputed
    assert models(workspace) == trained  # no network trained or fitted again
    computed = re.findall(r"^(\S+): \d+ images, (\d+) computed", second.output, re.MULTILINE)
    assert computed and all(n == "0" for _, n in computed), computed
    assert "mask sets unchanged since they were scored" in second.output  # read back, not recomputed
    assert "the built-in dataset is in" in second.output
    assert report.stat().st_mtime_ns > report_written  # the report is written again
