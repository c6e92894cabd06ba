"""A damaged stored array, as a real run meets it: named, recorded, recomputed."""

import json
from pathlib import Path

import numpy as np
from prefect import flow
from typer.testing import CliRunner

from cli import app
from flows.common import Execution, flow_result
from flows.ingest import ingest_flow
from flows.pipeline import Pipeline, Stage, run_pipeline
from flows.superpixels import superpixels_flow
from tasks.graphnet import seeds_batch
from wsss_core.data.readers import open_reader
from wsss_core.graphnet.config import resolve_config
from wsss_core.store import INGEST_ARRAYS, INGEST_STAGE, Workspace
from wsss_core.graphnet.superpixels import compute_superpixels
from tests.storage_helpers import damage, pack_mates

QUIET = Execution(progress=False)
SEEDS = "seeds/scribbles"


@flow(name="seeds-only")
def seeds_flow(workspace: str):
    """The GraphNet seeds stage alone: it reads superpixels/<id> and scribbles/<id>."""
    ws = Workspace(workspace)
    config = resolve_config("auto").config.seeds_config("scribbles")
    pipeline = Pipeline("seeds", (Stage(SEEDS, seeds_batch, (INGEST_STAGE, "superpixels"), {"supervision": "scribbles", "config": config}),),
                        inputs=("superpixels",))
    return run_pipeline(ws, pipeline, QUIET, ws.image_ids())


def ingested(synthetic_root, tmp_path) -> Workspace:
    """Ingested in batches of 4: packs of 4 images, so a damaged pack leaves the others readable."""
    flow_result(ingest_flow, root=str(synthetic_root), workspace=str(tmp_path / "ws"), execution=Execution(progress=False, batch_size=4))
    return Workspace(tmp_path / "ws")


def test_ingest_writes_only_the_arrays_it_owns(synthetic_root, tmp_path):
    ws = ingested(synthetic_root, tmp_path)
    image_id = ws.image_ids()[0]
    groups = {group for group, _ in ws.image_arrays(INGEST_STAGE, image_id)}
    assert groups <= set(INGEST_ARRAYS) and {"images", "boxes", "tags"} <= groups
    packs = {path.parents[2].name for path in ws.store_path.glob("*/_packs/*/zarr.json")}
    assert packs == groups and not list(ws.store_path.glob(f"*/{image_id}"))  # no array of its own


def test_a_damaged_image_fails_the_next_stage_by_name_and_is_read_again(synthetic_root, tmp_path):
    ws = ingested(synthetic_root, tmp_path)
    image_id = ws.image_ids()[0]
    mates = pack_mates(ws, "images", image_id)  # a damaged pack: every image in it is unreadable
    assert len(mates) < len(ws.image_ids())
    chunk = damage(ws, "images", image_id)
    run = flow_result(superpixels_flow, workspace=str(ws.path), execution=QUIET)
    [summary] = run.summaries
    assert set(summary.failed) == mates and all(str(chunk) in summary.failed[i] for i in mates)
    for stage in ("superpixels", INGEST_STAGE):
        records = ws.failures(stage)
        assert {r.image_id for r in records} == mates
        assert all(r.kind == "unreadable" and str(chunk) in r.message for r in records)
    assert not mates & set(ws.image_ids())  # ingest no longer counts them done
    assert ws.status(INGEST_STAGE).failed == len(mates)

    again = flow_result(ingest_flow, root=str(synthetic_root), workspace=str(ws.path), execution=QUIET)
    assert again.ok and again.done == len(mates)
    reader = open_reader(synthetic_root, format="voc", split="train")
    assert np.array_equal(ws.read_array("images", image_id), reader.load(image_id).image)
    assert flow_result(superpixels_flow, workspace=str(ws.path), execution=QUIET).summaries[0].done == len(mates)
    assert ws.failures(INGEST_STAGE) == [] and ws.failures("superpixels") == []
    assert ws.done_ids("superpixels") == set(ws.image_ids())


def test_damaged_superpixels_fail_the_seeds_stage_and_are_recomputed(synthetic_root, tmp_path):
    ws = ingested(synthetic_root, tmp_path)
    flow_result(superpixels_flow, workspace=str(ws.path), execution=QUIET)
    image_id = ws.image_ids()[1]
    mates = pack_mates(ws, "superpixels", image_id)
    chunk = damage(ws, "superpixels", image_id)
    [summary] = seeds_flow(str(ws.path)).summaries
    assert set(summary.failed) == mates and all(str(chunk) in summary.failed[i] for i in mates)
    for stage in (SEEDS, "superpixels"):
        records = ws.failures(stage)
        assert {r.image_id for r in records} == mates
        assert all(r.kind == "unreadable" and str(chunk) in r.message for r in records)
    assert not mates & ws.done_ids("superpixels") and image_id in ws.image_ids()

    assert flow_result(superpixels_flow, workspace=str(ws.path), execution=QUIET).summaries[0].done == len(mates)
    expected = compute_superpixels(ws.read_array("images", image_id), resolve_config("auto").config.superpixels)
    assert np.array_equal(ws.read_array("superpixels", image_id), expected)
    assert seeds_flow(str(ws.path)).summaries[0].done == len(mates)
    assert ws.failures(SEEDS) == [] and ws.done_ids(SEEDS) == set(ws.image_ids())


def test_wsss_check_finds_and_repairs_damage(synthetic_root, tmp_path):
    ws = ingested(synthetic_root, tmp_path)
    flow_result(superpixels_flow, workspace=str(ws.path), execution=QUIET)
    first, second = ws.image_ids()[:2]
    image_mates, superpixel_mates = pack_mates(ws, "images", first), pack_mates(ws, "superpixels", second)
    broken_image = damage(ws, "images", first)
    broken_superpixels = damage(ws, "superpixels", second)
    marker = Path(ws.marker_file(INGEST_STAGE, second))
    listed = json.loads(marker.read_text())
    del listed["arrays"]["tags"]  # a marker whose array is gone entirely
    marker.write_text(json.dumps(listed))
    runner = CliRunner()

    result = runner.invoke(app, ["check", "--workspace", str(ws.path), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    for text in (str(broken_image), str(broken_superpixels), f"ingest {first}", f"superpixels {second}",
                 f"ingest {second}", "no array stored", "wsss retry-failed --workspace"):
        assert text in result.output, text
    assert {r.image_id for r in ws.failures(INGEST_STAGE)} == image_mates | {second}
    assert not image_mates & set(ws.image_ids()) and not superpixel_mates & ws.done_ids("superpixels")

    status = runner.invoke(app, ["status", "--workspace", str(ws.path)], catch_exceptions=False)
    assert f"{first} [unreadable] {broken_image}" in status.output.replace("\n", "")

    clean = runner.invoke(app, ["check", "--workspace", str(ws.path), "--no-progress"], catch_exceptions=False)
    assert clean.exit_code == 0, clean.output

    assert flow_result(ingest_flow, root=str(synthetic_root), workspace=str(ws.path), execution=QUIET).done == len(image_mates | {second})
    assert flow_result(superpixels_flow, workspace=str(ws.path), execution=QUIET).summaries[0].done == len(superpixel_mates)
    assert ws.failures(INGEST_STAGE) == [] and ws.failures("superpixels") == []
    healed = runner.invoke(app, ["check", "--workspace", str(ws.path), "--no-progress"], catch_exceptions=False)
    assert healed.exit_code == 0 and "repaired" in healed.output
