import pytest

from wsss_core.errors import UsageError
from wsss_core.registries import (
    BACKBONES,
    BEST_MASKS,
    MASK_METHODS,
    PATHS,
    SUPERVISIONS,
    Registry,
    UnknownChoiceError,
    best_masks,
    mask_method_name,
    mask_method_of_stage,
    mask_round_of_stage,
    mask_stage_order,
    round_zero_stage,
)


def test_a_registry_lists_its_names_and_refuses_unknown_ones_with_the_valid_ones():
    registry: Registry[int] = Registry("colour")
    registry.register("red", 1, "warm")
    registry.register("blue", 2)
    assert registry.names() == ("red", "blue") and registry.get("blue") == 2
    assert registry.help() == "red (warm), blue"
    with pytest.raises(UnknownChoiceError, match=r"unknown colour 'green' \(choose red, blue\)") as caught:
        registry.get("green")
    assert isinstance(caught.value, UsageError)
    with pytest.raises(ValueError, match="already"):
        registry.register("red", 3)


def test_string_targets_are_imported_only_when_used():
    assert callable(SUPERVISIONS.get("scribbles").seeds) is False  # a "module:attr" string until resolved
    assert BACKBONES.get("resnet18").__name__ == "build"


def test_mask_methods_cover_every_supervision_and_propagation():
    assert mask_method_name("scribbles", "gcn") == "gcn-scribbles"
    assert mask_method_name("boxes", "label-propagation") == "labelprop-boxes"
    assert mask_method_name("tags", "gcn") == "gcn-tags" and MASK_METHODS.get("gcn-tags").supervision == "tags"
    with pytest.raises(UsageError, match="unknown supervision 'points'"):
        mask_method_name("points", "gcn")
    for supervision in SUPERVISIONS:
        # a baseline of its own, or another path's masks (tags: the AffinityNet path's pseudo/cam)
        assert MASK_METHODS.get(supervision.target.baseline).baseline == (supervision.target.baseline_mask is not None)
    assert MASK_METHODS.get(SUPERVISIONS.get("tags").baseline).supervision == "tags"
    name, method = mask_method_of_stage("pseudo/gcn-boxes-crf")
    assert name == "gcn-boxes" and method.supervision == "boxes" and not method.baseline
    assert mask_method_of_stage("pseudo/rw")[1].supervision == "tags"
    assert mask_method_of_stage("graphs") is None and mask_method_of_stage("pseudo/unknown") is None


def test_segmentation_rounds_of_a_mask_set():
    assert mask_method_of_stage("pseudo/gcn-scribbles/round-1")[0] == "gcn-scribbles"
    assert mask_round_of_stage("pseudo/gcn-scribbles") == 0 and mask_round_of_stage("pseudo/gcn-scribbles-crf") == 0
    assert mask_round_of_stage("pseudo/gcn-scribbles/round-12") == 12
    assert mask_round_of_stage("pseudo/gcn-scribbles/other") is None and mask_round_of_stage("graphs") is None
    assert round_zero_stage("pseudo/rw-crf/round-2") == "pseudo/rw-crf" and round_zero_stage("pseudo/rw") == "pseudo/rw"
    stages = ["pseudo/gcn-scribbles/round-2", "pseudo/gcn-scribbles-crf", "pseudo/gcn-scribbles/round-1",
              "pseudo/nearest-scribbles", "pseudo/gcn-scribbles"]
    assert sorted(stages, key=mask_stage_order) == [
        "pseudo/nearest-scribbles", "pseudo/gcn-scribbles", "pseudo/gcn-scribbles/round-1",
        "pseudo/gcn-scribbles/round-2", "pseudo/gcn-scribbles-crf",
    ]


def test_every_path_names_a_method_and_a_run_config_section():
    from wsss_core.run_config import RunConfig

    for path in PATHS:
        assert path.target.method in {"graphnet", "affinitynet"}
        assert hasattr(RunConfig(), path.target.settings)


def test_each_supervisions_best_masks_are_its_own_mask_methods_and_the_first_made_is_taken():
    for supervision, ranked in BEST_MASKS.items():
        assert supervision in SUPERVISIONS
        for name in ranked:
            assert mask_method_of_stage(f"pseudo/{name}")[1].supervision == supervision, name
    winner = f"pseudo/{BEST_MASKS['tags'][0]}"
    assert best_masks("tags", {"pseudo/cam", "pseudo/rw", "pseudo/rw-crf", "pseudo/gcn-tags"}) == winner
    assert best_masks("tags", {"pseudo/cam"}) == "pseudo/cam"  # the best of what the run made
    # what a path's request asked for (graphnet.crf, another propagation) takes its learned masks' place
    made = {"pseudo/nearest-scribbles", "pseudo/gcn-scribbles", "pseudo/gcn-scribbles-crf"}
    assert best_masks("scribbles", made, finals={"pseudo/gcn-scribbles-crf"}) == "pseudo/gcn-scribbles-crf"
    assert best_masks("scribbles", made - {"pseudo/gcn-scribbles-crf"}) == f"pseudo/{BEST_MASKS['scribbles'][0]}"
    made = {"pseudo/nearest-scribbles", "pseudo/labelprop-scribbles"}
    assert best_masks("scribbles", made, finals={"pseudo/labelprop-scribbles"}) == "pseudo/labelprop-scribbles"
    assert best_masks("boxes", set()) is None
