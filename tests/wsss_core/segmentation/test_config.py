import dataclasses

import pytest

from wsss_core.config import config_to_dict
from wsss_core.errors import UsageError
from wsss_core.segmentation.config import (
    SegmentationConfig,
    SegmentationTrainConfig,
    choose_preset,
    resolve_config,
)


def test_auto_picks_small_without_a_gpu_or_with_few_images_and_paper_otherwise():
    assert choose_preset("auto", 5000, has_gpu=False) == ("small", "auto: no GPU")
    assert choose_preset("auto", 200, has_gpu=True)[0] == "small"
    assert choose_preset("auto", 10582, has_gpu=True)[0] == "paper"
    assert choose_preset("paper", 10, has_gpu=False) == ("paper", "asked for")
    with pytest.raises(UsageError, match="unknown segmentation preset"):
        choose_preset("huge", 10, has_gpu=False)


def test_presets_hold_deeplabv3s_schedule_and_a_cpu_sized_one():
    paper = SegmentationConfig.paper().train
    assert (paper.backbone, paper.output_stride, paper.lr, paper.poly_power) == ("deeplabv3_resnet50", 16, 0.007, 0.9)
    assert (paper.crop_size, paper.batch_size, paper.scale_range, paper.momentum) == (513, 16, (0.5, 2.0), 0.9)
    assert paper.epochs * 10582 // paper.batch_size == pytest.approx(30_000, rel=0.05)  # DeepLabV3's 30k iterations
    small = SegmentationConfig.small()
    assert small.train.backbone == "deeplabv3_resnet18" and small.train.crop_size <= 192
    assert small.inference.crf and SegmentationConfig.paper().inference.crf
    assert small.inference.label_classes_only and not SegmentationConfig.paper().inference.label_classes_only
    assert small.inference.label_odds == 64.0 and SegmentationConfig.paper().inference.label_odds is None  # the papers' rounds


def test_resolve_config_applies_overrides_and_records_the_weights_really_used():
    resolved = resolve_config("auto", 50, has_gpu=False, overrides={"train.epochs": 3, "train.weights": "none"})
    assert resolved.preset == "small" and resolved.config.train.epochs == 3
    assert resolved.config.train.weights == "none"
    assert resolved.weights_record()["used"] == "none" and not resolved.weights.fallback
    assert config_to_dict(resolved.config)["inference"]["scales"] == [1.0]
    with pytest.raises(UsageError):
        resolve_config("small", 50, has_gpu=False, overrides={"train.rounds": 2})  # rounds are the flow's


def test_a_stride_the_network_cannot_have_is_refused():
    with pytest.raises(ValueError, match="output stride"):
        SegmentationTrainConfig(backbone="deeplabv3_mobilenet_v3_large", output_stride=8)
    with pytest.raises(ValueError):
        dataclasses.replace(SegmentationTrainConfig(), scale_range=(2.0, 0.5))
