"""`wsss run` with MLflow on: its runs nest like its flow runs (paths, segmentation rounds, evaluation)."""

import mlflow

from flows.common import Execution, flow_result
from flows.ingest import ingest_flow
from flows.pipeline import PipelineRun
from flows.run import METHOD_FLOWS, generate_dataset, round_masks, run_flow
from wsss_core.registries import BEST_MASKS, PATHS, best_masks
from wsss_core.run_config import resolve_run_config
from wsss_core.store import Workspace
from wsss_core.tracking import tracking_uri


def test_the_whole_run_nests_its_paths_and_its_evaluation_under_one_run(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, split=["train", "val"], execution=Execution(progress=False))
    settings = {
        "paths": ["graphnet-scribbles"], "graphnet": {"preset": "offline", "overrides": {"gcn": {"pretrain_epochs": 10}}},
        "segmentation": {"overrides": {"train": {"epochs": 1, "crop_size": 48}}},  # one round by default
        "execution": {"progress": False},
    }
    whole = flow_result(run_flow, workspace=workspace, settings=settings)
    assert whole.ok and set(whole.evaluation["pseudo/gcn-scribbles"]["splits"]) == {"train", "val"}
    assert whole.report == str(tmp_path / "ws" / "reports" / "report.html")  # the last step: the HTML report
    assert "pseudo/gcn-scribbles/round-1" in open(whole.report).read()

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(workspace))
    runs = client.search_runs([client.get_experiment_by_name("wsss").experiment_id])
    by_name = {r.info.run_name.split(" ")[0]: r for r in runs if r.data.tags.get("kind") == "flow"}
    assert set(by_name) == {"run", "graphnet", "segment", "evaluate"}
    top = by_name["run"]
    assert "mlflow.parentRunId" not in top.data.tags and top.data.params["paths"] == "[graphnet-scribbles]"
    assert by_name["graphnet"].data.tags["mlflow.parentRunId"] == top.info.run_id
    assert by_name["evaluate"].data.tags["mlflow.parentRunId"] == top.info.run_id
    assert by_name["segment"].data.tags["mlflow.parentRunId"] == top.info.run_id
    assert by_name["segment"].data.params["labels"] == "pseudo/gcn-scribbles"
    [round_1] = [r for r in runs if r.info.run_name == "train-segmentation/gcn-scribbles/round-1"]
    assert round_1.data.tags["mlflow.parentRunId"] == by_name["segment"].info.run_id
    assert round_1.data.params["round"] == "1" and round_1.data.params["epochs"] == "1"
    assert by_name["graphnet"].data.tags["prefect.flow_run_id"] != top.data.tags["prefect.flow_run_id"]
    [fit] = [r for r in runs if r.info.run_name == "gcn-weights/gcn-scribbles"]
    assert fit.data.tags["mlflow.parentRunId"] == by_name["graphnet"].info.run_id
    assert fit.data.params["pretrain_epochs"] == "10" and fit.data.params["method"] == "gcn-scribbles"
    evaluated = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == by_name["evaluate"].info.run_id}
    assert evaluated == {
        f"pseudo/{m} {s}" for m in ("gcn-scribbles", "nearest-scribbles", "gcn-scribbles/round-1") for s in ("train", "val")
    }
    assert all(r.info.status == "FINISHED" for r in runs)


def test_gcn_tags_in_a_run_shares_the_affinitynet_paths_cam_stages(synthetic_root, tmp_path):
    from tests.flows.test_affinitynet import tiny_config
    from wsss_core.config import config_to_dict

    workspace = str(tmp_path / "ws")
    ingest_flow(root=str(synthetic_root), workspace=workspace, execution=Execution(progress=False))
    cams = config_to_dict(tiny_config(cam_epochs=2))  # not the preset's: the tags path must get them too
    settings = {
        "paths": ["affinitynet", "graphnet-tags"], "mlflow": False, "device": "cpu",
        "affinitynet": {"preset": "small", "crf": False, "train_threads": 1, "overrides": cams},
        "graphnet": {"preset": "offline", "overrides": {"gcn": {"pretrain_epochs": 20}}},
        "segmentation": {"rounds": 1,  # by default, on the tags' best masks only
                         "overrides": {"train": {"epochs": 1, "crop_size": 48}, "inference": {"crf": False}}},
        "execution": {"progress": False, "batch_size": 4},
    }
    whole = flow_result(run_flow, workspace=workspace, settings=settings)
    assert whole.ok and list(whole.paths) == ["affinitynet", "graphnet-tags"]
    tags = {s.stage: s for s in whole.paths["graphnet-tags"].summaries}
    for stage in ("train-cam", "cams", "pseudo/cam", "affinity-labels"):  # computed once, by affinitynet
        assert tags[stage].done == 0 and tags[stage].skipped > 0, stage
    assert tags["pseudo/gcn-tags"].done > 0
    best = best_masks("tags", {"pseudo/cam", "pseudo/rw", "pseudo/gcn-tags"})  # crf false: no pseudo/rw-crf
    assert list(whole.rounds) == ["graphnet-tags" if best == "pseudo/gcn-tags" else "affinitynet"]
    assert {"pseudo/gcn-tags", f"{best}/round-1", "pseudo/rw", "pseudo/cam"} <= set(whole.evaluation)
    assert not [s for s in whole.evaluation if s.endswith("/round-1") and not s.startswith(best + "/")]
    n_images = len(Workspace(workspace).image_ids())
    assert whole.mask_stages.count("pseudo/cam") == 1  # listed by both paths, scored once
    assert whole.evaluation["pseudo/cam"]["images"] == n_images


def test_every_path_runs_the_flow_of_its_method():
    for path in PATHS:
        assert METHOD_FLOWS[path.target.method].name == path.target.method


def test_by_default_the_rounds_go_on_each_supervisions_best_masks_only():
    made = {
        "graphnet-scribbles": PipelineRun("graphnet-scribbles",
                                          mask_stages=["pseudo/gcn-scribbles", "pseudo/nearest-scribbles"],
                                          final_masks="pseudo/gcn-scribbles"),
        "graphnet-boxes": PipelineRun("graphnet-boxes", mask_stages=["pseudo/gcn-boxes", "pseudo/box-rectangles"],
                                      final_masks="pseudo/gcn-boxes"),
        "affinitynet": PipelineRun("affinitynet", mask_stages=["pseudo/cam", "pseudo/rw", "pseudo/rw-crf"],
                                   final_masks="pseudo/rw-crf"),
        "graphnet-tags": PipelineRun("graphnet-tags", mask_stages=["pseudo/cam", "pseudo/gcn-tags"],
                                     final_masks="pseudo/gcn-tags"),
    }
    labels, why = round_masks(made, None, finished=lambda stage: ["a"])
    best = {s: f"pseudo/{BEST_MASKS[s][0]}" for s in ("scribbles", "boxes", "tags")}
    assert sorted(labels.values()) == sorted(best.values())  # one set of rounds per supervision
    tags_path = "graphnet-tags" if best["tags"] == "pseudo/gcn-tags" else "affinitynet"
    assert labels[tags_path] == best["tags"]
    assert why.startswith("run: segmentation rounds on each supervision's best masks") and f"tags {best['tags']}" in why

    # masks with nothing finished are not candidates: the best of the rest
    labels, _ = round_masks(made, None, finished=lambda stage: [] if stage == best["tags"] else ["a"])
    assert best["tags"] not in labels.values() and len(labels) == 3

    # segmentation.paths: those paths' final masks, as asked
    labels, why = round_masks(made, ("affinitynet",), finished=lambda stage: ["a"])
    assert labels == {"affinitynet": "pseudo/rw-crf"} and why is None


def test_a_run_generates_the_mix_it_names(tmp_path):
    root = tmp_path / "data"
    config = resolve_run_config(None, {"ingest": {"root": str(root)},
                                       "generate": {"images": 6, "width": 48, "height": 32, "label_mix": "tags=1"}})
    generate_dataset(config)
    assert not list(root.glob("**/*scribble*/*.png"))  # tags only: no image kept its scribbles
    assert len(list(root.glob("JPEGImages/*"))) == 6
