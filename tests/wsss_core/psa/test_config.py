import numpy as np
import pytest

from wsss_core.config import ids_digest
from wsss_core.errors import BadInputError
from wsss_core.psa.config import AffinityNetPathConfig, check_tags, choose_preset


def test_check_tags_refuses_unknown_and_repeated_classes():
    assert check_tags(np.array([1, 3], np.int32), 3, "x").tolist() == [1, 3]
    for tags in ([0], [4], [2, 2]):
        with pytest.raises(BadInputError, match="x"):
            check_tags(np.array(tags), 3, "x")


def test_presets_and_overrides():
    paper, small = AffinityNetPathConfig.paper(), AffinityNetPathConfig.small()
    assert paper.cam_train.backbone == "resnet50" and paper.cam_train.epochs == 15 and paper.cam_train.crop_size == 448
    assert paper.affinity_train.epochs == 8 and paper.random_walk.beta == 8 and paper.random_walk.steps == 256
    assert paper.affinity_labels.alpha_fg == 4 and paper.affinity_labels.alpha_bg == 32
    assert small.cam_train.weights is None and small.affinity_init == "cam"
    changed = small.with_backbone("resnet34", "none").with_stride(4)
    assert changed.cam_train.backbone == changed.affinity_train.backbone == "resnet34"
    assert changed.random_walk.stride == 4
    with pytest.raises(ValueError):
        small.with_stride(2)


def test_auto_preset_by_dataset_size_and_device():
    assert choose_preset("auto", 200, has_gpu=True)[0] == "small"
    assert choose_preset("auto", 10_000, has_gpu=False)[0] == "small"
    assert choose_preset("auto", 10_000, has_gpu=True)[0] == "paper"
    assert choose_preset("paper", 10, has_gpu=False)[0] == "paper"
    with pytest.raises(ValueError):
        choose_preset("huge", 10, has_gpu=False)


def test_ids_digest_ignores_order():
    assert ids_digest(["b", "a"]) == ids_digest(["a", "b"]) != ids_digest(["a"])
