import pytest

from wsss_core.errors import UsageError
from wsss_core.run_config import RunConfig, applicable_paths, resolve_run_config


def test_the_example_run_config_reads_and_settings_override_it():
    config = resolve_run_config("examples/run.yaml", {"paths": ["affinitynet"], "graphnet.overrides": {"gcn.epochs": 3}})
    assert config.paths == ("affinitynet",) and config.ingest.splits == ("train", "val")
    assert config.graphnet.overrides == {"gcn": {"epochs": 3}} and config.affinitynet.crf is True
    assert resolve_run_config(None, None) == RunConfig()


def test_bad_run_configs_get_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("graphnt: {}\n")
    with pytest.raises(UsageError, match=r"run.yaml: run: no setting 'graphnt'"):
        resolve_run_config(str(bad), None)
    bad.write_text("paths: [nowhere]\n")
    with pytest.raises(UsageError, match="unknown path 'nowhere'"):
        resolve_run_config(str(bad), None)
    bad.write_text("[1, 2")
    with pytest.raises(UsageError, match="not valid YAML"):
        resolve_run_config(str(bad), None)
    with pytest.raises(UsageError, match="cannot read"):
        resolve_run_config(str(tmp_path / "missing.yaml"), None)


def test_paths_follow_the_weak_labels_present():
    chosen, skipped = applicable_paths(None, {"scribbles", "tags"})
    assert chosen == ["graphnet-scribbles", "affinitynet", "graphnet-tags"]  # gcn-tags after the CAM rows' own path
    assert skipped == {"graphnet-boxes": "the dataset has no boxes", "graphnet-mixed": "its images all carry the same labels"}
    assert applicable_paths(("graphnet-boxes",), {"boxes"}) == (["graphnet-boxes"], {})
    # images that carry different labels: pseudo/mixed too
    assert "graphnet-mixed" in applicable_paths(None, {"scribbles", "tags", "mixed"})[0]


def test_path_overrides_are_checked_by_name_before_any_work():
    from wsss_core.run_config import check_overrides

    check_overrides(resolve_run_config(None, {"graphnet.overrides": {"gcn.epochs": 3}}))
    with pytest.raises(UsageError, match=r"graphnet.overrides.gcn: no setting 'epoch'"):
        check_overrides(resolve_run_config(None, {"graphnet.overrides": {"gcn.epoch": 3}}))
    with pytest.raises(UsageError, match=r"affinitynet.overrides: no setting 'cam'"):
        check_overrides(resolve_run_config(None, {"affinitynet.overrides": {"cam": {}}}))


def test_the_generated_dataset_may_mix_its_labels(tmp_path):
    config = resolve_run_config(None, {"ingest": {"root": str(tmp_path)},
                                       "generate": {"images": 4, "label_mix": "scribbles=0.5,tags=0.5"}})
    assert config.generate.parsed_label_mix().describe() == "scribbles=0.5,tags=0.5"
    assert resolve_run_config(None, None).generate.parsed_label_mix() is None
    with pytest.raises(UsageError, match="add up to"):
        resolve_run_config(None, {"ingest": {"root": str(tmp_path)}, "generate": {"images": 4, "label_mix": "scribbles=0.5"}})
