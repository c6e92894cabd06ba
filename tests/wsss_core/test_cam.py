import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from wsss_core.backbones import normalise_images
from wsss_core.cam import (
    Augmentation,
    CamNet,
    CamTrainConfig,
    augment,
    average_precision,
    epoch_batches,
    infer_cams,
    jitter_colours,
    load_camnet,
    mean_average_precision,
    poly_lr_factor,
    train_cam_classifier,
)
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


def test_average_precision_known_values():
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([1.0, 0.0, 1.0]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision(np.array([0.1, 0.2]), np.array([0.0, 0.0])))
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])
    targets = np.array([[1, 0], [0, 1], [0, 0]], dtype=float)
    assert mean_average_precision(scores, targets) == pytest.approx(1.0)
    assert mean_average_precision(-scores, targets) == pytest.approx(1 / 3)  # each positive ranked last


def test_poly_schedule_and_epoch_batches():
    assert poly_lr_factor(0, 100, 0.9) == 1.0
    assert poly_lr_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(100, 100, 0.9) == 0.0
    batches = epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]  # the partial batch is dropped, as PSA
    assert len(set(np.concatenate(batches))) == 8
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(10, 4, seed=0, epoch=1)))
    assert [len(b) for b in epoch_batches(3, 4, seed=0, epoch=0)] == [3]


def test_augment_crops_pads_and_keeps_labels_aligned():
    rng = np.random.default_rng(4)
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[:, 15:] = 255
    label = np.zeros((20, 30), dtype=np.uint8)
    label[:, 15:] = 1
    aug = Augmentation(crop_size=24, rescale_long_side=None, flip=True, colour_jitter=None)
    for _ in range(5):
        tensor, cropped = augment(image, label, aug, rng)
        assert tensor.shape == (3, 24, 24) and cropped.shape == (24, 24)
        padded = cropped == 255
        assert padded.sum() == 24 * 4  # 20 rows of 24 fit, 4 rows are padding
        assert torch.all(tensor[:, torch.from_numpy(padded)] == 0)  # padding is the mean colour
        white = tensor[0].numpy() > 1.0
        assert np.array_equal(white[~padded], cropped[~padded] == 1)


def test_colour_jitter_is_drawn_from_the_given_rng():
    image = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (3, 8, 9), dtype=np.uint8))
    strengths = (0.3, 0.3, 0.3, 0.1)
    first = jitter_colours(image, strengths, np.random.default_rng(7))
    assert torch.equal(first, jitter_colours(image, strengths, np.random.default_rng(7)))
    assert not torch.equal(first, jitter_colours(image, strengths, np.random.default_rng(8)))
    assert first.dtype == torch.uint8 and not torch.equal(first, image)
    assert torch.equal(jitter_colours(image, (0.0, 0.0, 0.0, 0.0), np.random.default_rng(7)), image)
    factor = np.random.default_rng(9)
    factor.permutation(4)
    expected = TF.adjust_brightness(image, float(factor.uniform(0.5, 1.5)))
    assert torch.equal(jitter_colours(image, (0.5, 0.0, 0.0, 0.0), np.random.default_rng(9)), expected)


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
