"""One request object per path: what the CLI builds, the flows take, the workspace remembers."""

import dataclasses

import pytest

from wsss_core.errors import UsageError
from wsss_core.requests import (
    AffinityNetRequest,
    CamSettings,
    GraphNetRequest,
    RoundsSettings,
    SegmentationRequest,
    SuperpixelsRequest,
)
from wsss_core.run_config import RunConfig, resolve_run_config

# As a workspace remembered them before requests were objects (copied from one written by
# `wsss run` then): GraphNet's CAM rows were four flat cam_* parameters.
OLD_GRAPHNET_TAGS = {
    "supervision": "tags", "preset": "offline", "propagation": "gcn", "crf": False, "backbone": None, "weights": None,
    "overrides": {"gcn": {"pretrain_epochs": 10}}, "splits": None, "until": None, "device": "cpu",
    "cam_overrides": {"affinity_train": {"epochs": 1}, "cam_train": {"epochs": 1}}, "cam_preset": "small",
    "cam_backbone": None, "cam_weights": None,
}
OLD_AFFINITYNET = {
    "preset": "small", "backbone": None, "weights": None, "stride": None, "crf": True,
    "overrides": {"cam_train": {"epochs": 1}, "affinity_train": {"epochs": 1}}, "splits": None, "until": None,
    "device": "cpu", "train_threads": None,
}
OLD_SEGMENT = {
    "labels": "pseudo/rw-crf", "rounds": 1, "preset": "small", "backbone": None, "weights": None, "output_stride": None,
    "overrides": {"train": {"epochs": 1, "crop_size": 48}}, "train_split": "train", "splits": ["val"], "until": None,
    "device": "cpu", "train_threads": 1,
}
OLD_SUPERPIXELS = {"preset": "offline", "overrides": None, "splits": None}


def test_requests_remembered_in_the_old_flat_shape_read_into_the_new_objects():
    assert GraphNetRequest.from_dict(OLD_GRAPHNET_TAGS) == GraphNetRequest(
        supervision="tags", preset="offline", overrides={"gcn": {"pretrain_epochs": 10}}, device="cpu",
        cam=CamSettings(preset="small", overrides={"affinity_train": {"epochs": 1}, "cam_train": {"epochs": 1}}),
    )
    assert AffinityNetRequest.from_dict(OLD_AFFINITYNET) == AffinityNetRequest(
        preset="small", overrides={"cam_train": {"epochs": 1}, "affinity_train": {"epochs": 1}}, device="cpu",
    )
    assert SegmentationRequest.from_dict(OLD_SEGMENT) == SegmentationRequest(
        labels="pseudo/rw-crf", preset="small", overrides={"train": {"epochs": 1, "crop_size": 48}}, splits=("val",),
        device="cpu", train_threads=1,
    )
    assert SuperpixelsRequest.from_dict(OLD_SUPERPIXELS) == SuperpixelsRequest(preset="offline")


@pytest.mark.parametrize("request_", [
    GraphNetRequest(supervision="boxes", crf=True, splits=["train"], cam=CamSettings(overrides={"cam_train": {"epochs": 2}})),
    AffinityNetRequest(stride=4, train_threads=2, until="cams"),
    SegmentationRequest(labels="gcn-scribbles", rounds=2, overrides={"train": {"epochs": 3}}),
    SuperpixelsRequest(overrides={"compactness": 20.0}),
])
def test_a_request_is_what_its_dict_says(request_):
    assert type(request_).from_dict(request_.to_dict()) == request_


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(UsageError, match=r"GraphNetRequest: no setting 'supervison' \(valid: .*supervision"):
        GraphNetRequest.from_dict({"supervison": "boxes"})


def test_the_run_configs_sections_are_the_paths_requests():
    config = resolve_run_config(None, {"graphnet.crf": True, "affinitynet.stride": 4, "segmentation.rounds": 0})
    assert isinstance(config.graphnet, GraphNetRequest) and config.graphnet.crf
    assert isinstance(config.affinitynet, AffinityNetRequest) and config.affinitynet.stride == 4
    assert isinstance(config.segmentation, RoundsSettings) and config.segmentation.rounds == 0
    rounds = RoundsSettings(preset="small", paths=("affinitynet",)).request(labels="pseudo/rw")
    assert rounds == SegmentationRequest(labels="pseudo/rw", preset="small")


@pytest.mark.parametrize("setting, value", [
    ("graphnet.splits", ["val"]), ("graphnet.supervision", "boxes"), ("affinitynet.device", "cpu"),
    ("segmentation.labels", "rw"), ("segmentation.evaluate", False),
])
def test_what_the_run_sets_for_every_path_is_refused_in_a_section(setting, value):
    with pytest.raises(UsageError, match=f"run: {setting}: the run sets it"):
        resolve_run_config(None, {setting: value})


def test_every_field_a_command_line_option_has_says_what_it_does():
    for kind in (GraphNetRequest, AffinityNetRequest, SegmentationRequest, SuperpixelsRequest):
        for f in dataclasses.fields(kind):
            if "help" in f.metadata:
                assert f.metadata["help"].endswith("."), (kind.__name__, f.name)
    assert RunConfig().graphnet == GraphNetRequest()
