import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_core.backbones import normalise_images
from wsss_core.psa.cam import CamNet, CamTrainConfig, infer_cams, load_camnet, train_cam_classifier
from wsss_core.errors import BadInputError, DatasetError


NUM_CLASSES = 3


class SquaresDataset(torch.utils.data.Dataset):
    """Tiny tagged images: a red square is class 1, a green one class 2 (class 3 never shows)."""

    def __init__(self, n: int, size: int = 24, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            image = rng.integers(90, 140, (size, size, 3)).astype(np.uint8)
            tags = [[1], [2], [1, 2], [1]][i % 4]
            for tag in tags:
                y, x = rng.integers(0, size // 2, 2)
                image[y : y + size // 2, x : x + size // 2] = (230, 20, 20) if tag == 1 else (20, 230, 20)
            self.items.append((image, tags))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def tiny_config(**overrides) -> CamTrainConfig:
    values = dict(
        backbone="resnet18", weights=None, epochs=3, batch_size=4, lr=0.01, momentum=0.9, crop_size=None,
        rescale_long_side=None, flip=False, colour_jitter=None, dropout=0.0, batchnorm="train",
    )
    return CamTrainConfig(**{**values, **overrides})


def positive_camnet(seed: int = 0) -> CamNet:
    torch.manual_seed(seed)
    model = CamNet("resnet18", NUM_CLASSES, weights=None)
    with torch.no_grad():
        model.classifier.weight.abs_()  # ReLU'd features x positive weights: CAMs are positive
    return model.eval()


def test_camnet_logits_are_the_spatial_mean_of_the_raw_cams():
    model = positive_camnet()
    with torch.no_grad():
        model.classifier.weight[1] *= -1  # class 2 negative: its ReLU'd CAM is all zero
        x = torch.randn(2, 3, 37, 50)
        logits = model(x)
        cams = model.cams(x)
        raw = F.conv2d(model.backbone(x)[-1], model.classifier.weight)
    assert logits.shape == (2, NUM_CLASSES)
    assert cams.shape == (2, NUM_CLASSES, math.ceil(37 / 8), math.ceil(50 / 8))
    torch.testing.assert_close(logits, raw.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    assert (cams >= 0).all() and cams[:, 1].abs().max() == 0 and cams[:, 0].min() > 0


def test_infer_cams_shape_and_per_class_max_normalisation():
    model = positive_camnet()
    image = np.random.default_rng(1).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    cams = infer_cams(model, image, [3, 1], device="cpu")
    assert cams.shape == (2, 30, 41) and cams.dtype == np.float32
    np.testing.assert_allclose(cams.reshape(2, -1).max(axis=1), 1.0, atol=1e-3)
    assert cams.min() >= 0
    one_scale = infer_cams(model, image, [3, 1], scales=(1.0,), device="cpu")
    reversed_order = infer_cams(model, image, [1, 3], scales=(1.0,), device="cpu")
    np.testing.assert_allclose(one_scale[::-1], reversed_order, atol=1e-6)  # channel of tag c is output c-1
    assert infer_cams(model, image, [], device="cpu").shape == (0, 30, 41)
    with pytest.raises(BadInputError, match="outside"):
        infer_cams(model, image, [4], device="cpu")


def test_flip_averaged_cams_of_a_mirrored_image_are_mirrored():
    model = positive_camnet(seed=2)
    image = np.random.default_rng(3).integers(0, 256, (24, 35, 3), dtype=np.uint8)
    cams = infer_cams(model, image, [2], scales=(1.0,), flip=True, device="cpu")
    mirrored_image = np.ascontiguousarray(image[:, ::-1])
    mirrored = infer_cams(model, mirrored_image, [2], scales=(1.0,), flip=True, device="cpu")
    np.testing.assert_allclose(mirrored, cams[:, :, ::-1], atol=1e-5)
    single = infer_cams(model, image, [2], scales=(1.0,), flip=False, device="cpu")
    assert np.abs(single - cams).max() > 1e-3  # without the flip the result differs


def test_tiny_training_learns_and_resumes_where_it_stopped(tmp_path):
    dataset = SquaresDataset(8)
    config = tiny_config()
    straight_log = []
    straight = train_cam_classifier(
        dataset, NUM_CLASSES, config, device="cpu",
        on_epoch_end=lambda e, m: straight_log.append((e, m["loss"])),
    )
    assert [e for e, _ in straight_log] == [0, 1, 2]
    assert straight_log[-1][1] < straight_log[0][1] * 0.8

    class Interrupted(Exception):
        pass

    def crash_after_first_epoch(epoch, metrics):
        raise Interrupted

    path = tmp_path / "cam.pt"
    with pytest.raises(Interrupted):
        train_cam_classifier(dataset, NUM_CLASSES, config, device="cpu", checkpoint_path=path,
                             on_epoch_end=crash_after_first_epoch)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    resumed_log = []
    resumed = train_cam_classifier(dataset, NUM_CLASSES, config, device="cpu", checkpoint_path=path,
                                   on_epoch_end=lambda e, m: resumed_log.append((e, m["loss"])))
    assert [e for e, _ in resumed_log] == [1, 2]  # continues, does not restart
    for key, value in straight.state_dict().items():  # and ends where an uninterrupted run ends
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)

    finished = train_cam_classifier(dataset, NUM_CLASSES, config, device="cpu", checkpoint_path=path,
                                    on_epoch_end=lambda e, m: pytest.fail("a finished run must not train"))
    loaded = load_camnet(path)
    x = normalise_images(dataset[0][0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), finished(x))
    with pytest.raises(BadInputError, match="different config"):
        train_cam_classifier(dataset, NUM_CLASSES, tiny_config(lr=0.5), device="cpu", checkpoint_path=path)


def test_an_empty_dataset_is_refused():
    with pytest.raises(DatasetError, match="no training items"):
        train_cam_classifier(SquaresDataset(0), NUM_CLASSES, tiny_config(epochs=1), device="cpu")


def test_bad_tags_name_the_item():
    dataset = SquaresDataset(4)
    dataset.items[2] = (dataset.items[2][0], [0])  # background is not a tag
    with pytest.raises(BadInputError, match="item 2.*tag 0"):
        train_cam_classifier(dataset, NUM_CLASSES, tiny_config(epochs=1), device="cpu")


def test_small_preset_is_a_from_scratch_resnet18():
    small = CamTrainConfig.small()
    assert small.backbone == "resnet18" and small.weights is None and small.batch_size == 16
    assert 10 <= small.epochs <= 20 and small.batchnorm == "train"
    default = CamTrainConfig()
    assert (default.lr, default.head_lr_multiplier, default.weight_decay) == (0.1, 10.0, 5e-4)
    assert (default.batch_size, default.crop_size, default.epochs) == (16, 448, 15)
    assert (default.rescale_long_side, default.poly_power) == ((448, 768), 0.9)
