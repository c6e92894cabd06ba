from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.morphology import convex_hull_image

from wsss_core.config import config_hash
from wsss_core.data.sample import IGNORE_INDEX, Box
from wsss_core.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticConfig,
    generate_dataset,
    generate_sample,
    gt_from_instances,
    image_id,
)
from wsss_core.errors import BadInputError

SMALL = SyntheticConfig(n_images=10, width=128, height=96, seed=3)
FOLDERS = {"JPEGImages": ".jpg", "SegmentationClass": ".png", "Annotations": ".xml", "scribbles": ".png"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "standard", SMALL)


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SyntheticConfig(n_images=10, width=128, height=96, seed=3, variant="holdout")
    return generate_dataset(tmp_path_factory.mktemp("synth") / "holdout", config)


def read_split(root: Path, name: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def read_boxes(xml_path: Path) -> list[Box]:
    """VOC XML (1-based inclusive) -> 0-based boxes with exclusive x1/y1."""
    boxes = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        bndbox = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (int(bndbox.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(Box(SYNTHETIC_CLASSES.index(obj.findtext("name")), xmin - 1, ymin - 1, xmax, ymax))
    return boxes


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_file_counts(dataset: Path) -> None:
    ids = [image_id(i) for i in range(SMALL.n_images)]
    assert ids[0] == "synth_000000"
    for folder, suffix in FOLDERS.items():
        assert sorted(p.name for p in (dataset / folder).iterdir()) == [f"{i}{suffix}" for i in ids]
    assert (dataset / "classes.txt").read_text().splitlines() == list(SYNTHETIC_CLASSES)
    assert SYNTHETIC_CLASSES[0] == "background" and 6 <= len(SYNTHETIC_CLASSES) <= 7
    metadata = json.loads((dataset / "synthetic.json").read_text())
    assert metadata["config_hash"] == config_hash(SMALL)
    image = Image.open(dataset / "JPEGImages" / "synth_000004.jpg")
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (128, 96))
    gt = Image.open(dataset / "SegmentationClass" / "synth_000004.png")
    assert (gt.mode, gt.size) == ("P", (128, 96))
    assert Image.open(dataset / "scribbles" / "synth_000004.png").mode in ("L", "P")


def test_split_files_partition_the_ids(dataset: Path) -> None:
    train, val, trainval = (read_split(dataset, name) for name in ("train", "val", "trainval"))
    assert trainval == [image_id(i) for i in range(SMALL.n_images)]
    assert len(val) == 2 and len(train) == 8
    assert not set(train) & set(val)
    assert sorted(train + val) == trainval


def test_same_seed_gives_identical_files_and_another_seed_does_not(dataset: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", SMALL)
    first, second = file_bytes(dataset), file_bytes(again)
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)
    other = file_bytes(generate_dataset(tmp_path / "other", SyntheticConfig(**{**SMALL.__dict__, "seed": 4})))
    masks = [name for name in first if name.startswith("SegmentationClass")]
    assert sum(first[name] != other[name] for name in masks) == len(masks)


def test_a_sample_does_not_depend_on_the_dataset_size() -> None:
    small = generate_sample(3, SyntheticConfig(n_images=5, width=128, height=96))
    large = generate_sample(3, SyntheticConfig(n_images=50, width=128, height=96))
    assert np.array_equal(small.image, large.image) and np.array_equal(small.gt, large.gt)


def test_rerun_into_the_same_folder_replaces_the_old_output(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    generate_dataset(root, SyntheticConfig(n_images=6, width=64, height=48, seed=1))
    generate_dataset(root, SyntheticConfig(n_images=3, width=64, height=48, seed=2))
    for folder in FOLDERS:
        assert len(list((root / folder).iterdir())) == 3
    assert read_split(root, "trainval") == [image_id(i) for i in range(3)]
    fresh = file_bytes(generate_dataset(tmp_path / "fresh", SyntheticConfig(n_images=3, width=64, height=48, seed=2)))
    assert file_bytes(root).keys() - {".wsss-synthetic"} == fresh.keys() - {".wsss-synthetic"}
    assert all(file_bytes(root)[name] == fresh[name] for name in fresh)


def test_refuses_to_overwrite_a_dataset_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "VOC2012" / "JPEGImages" / "2007_000032.jpg"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not ours")
    with pytest.raises(BadInputError, match="refusing to overwrite"):
        generate_dataset(tmp_path / "VOC2012", SyntheticConfig(n_images=2, width=64, height=48))
    assert foreign.read_bytes() == b"not ours"


def test_boxes_are_the_tight_boxes_of_the_gt_objects(dataset: Path) -> None:
    border = SMALL.void_border
    for index in range(SMALL.n_images):
        stem = image_id(index)
        gt = read_png(dataset / "SegmentationClass" / f"{stem}.png")
        boxes = read_boxes(dataset / "Annotations" / f"{stem}.xml")
        assert boxes == generate_sample(index, SMALL).boxes
        for box in boxes:
            rows, cols = np.nonzero(gt[box.y0 : box.y1, box.x0 : box.x1] == box.class_index)
            assert rows.size > 0
            # the object's outermost labelled pixels sit at most the void band inside the box
            assert rows.min() <= border and cols.min() <= border
            assert rows.max() >= box.y1 - box.y0 - 1 - border and cols.max() >= box.x1 - box.x0 - 1 - border
        for class_index in set(np.unique(gt)) - {0, IGNORE_INDEX}:
            inside_a_box = np.zeros(gt.shape, dtype=bool)
            for box in boxes:
                if box.class_index == class_index:
                    inside_a_box[box.y0 : box.y1, box.x0 : box.x1] = True
            assert not np.any((gt == class_index) & ~inside_a_box)


def test_every_image_has_one_to_three_tags_equal_to_its_gt_classes(dataset: Path) -> None:
    seen = set()
    for index in range(SMALL.n_images):
        stem = image_id(index)
        gt_classes = sorted(set(np.unique(read_png(dataset / "SegmentationClass" / f"{stem}.png"))) - {0, IGNORE_INDEX})
        xml_classes = sorted({box.class_index for box in read_boxes(dataset / "Annotations" / f"{stem}.xml")})
        assert xml_classes == gt_classes == generate_sample(index, SMALL).tags
        assert 1 <= len(gt_classes) <= 3
        seen.update(gt_classes)
    assert len(seen) >= 4  # ten images already show most classes


def test_scribbles_agree_with_the_gt_and_cover_every_region(dataset: Path) -> None:
    for index in range(SMALL.n_images):
        stem = image_id(index)
        gt = read_png(dataset / "SegmentationClass" / f"{stem}.png")
        scribble = read_png(dataset / "scribbles" / f"{stem}.png")
        labelled = scribble != IGNORE_INDEX
        judged = labelled & (gt != IGNORE_INDEX)
        assert np.array_equal(scribble[judged], gt[judged])
        assert not np.any(labelled & (gt == IGNORE_INDEX))  # strokes stay off the void band too
        assert set(np.unique(scribble[labelled])) == set(np.unique(gt)) - {IGNORE_INDEX}
        assert labelled.mean() < 0.2
        # strokes are 3 px wide: every stroke pixel has a same-class 3x3 block around a centre pixel
        for class_index in np.unique(scribble[labelled]):
            stroke = scribble == class_index
            centres = ndimage.binary_erosion(stroke, structure=np.ones((3, 3), dtype=bool))
            assert np.array_equal(ndimage.binary_dilation(centres, structure=np.ones((3, 3), dtype=bool)), stroke)


def test_gt_has_a_void_band_between_different_classes() -> None:
    for border in (2, 4):
        sample = generate_sample(1, SyntheticConfig(width=128, height=96, void_border=border, min_objects=3))
        gt = sample.gt
        assert (gt == IGNORE_INDEX).any()
        padded = np.pad(gt.astype(np.int32), border, constant_values=-1)
        height, width = gt.shape
        for dy in range(-border, border + 1):
            for dx in range(-border, border + 1):
                shifted = padded[border + dy : border + dy + height, border + dx : border + dx + width]
                clash = (gt != IGNORE_INDEX) & (shifted >= 0) & (shifted != IGNORE_INDEX) & (shifted != gt)
                assert not clash.any(), (border, dy, dx)
    no_void = generate_sample(1, SyntheticConfig(width=128, height=96, void_border=0, min_objects=3)).gt
    assert not (no_void == IGNORE_INDEX).any() and len(np.unique(no_void)) >= 2


def test_void_band_is_exactly_void_border_pixels_wide() -> None:
    instance_map = np.zeros((20, 30), dtype=np.uint8)
    instance_map[5:15, 10:20] = 1
    instance_map[5:15, 20:25] = 2  # touches instance 1
    for border in (1, 2, 3, 4):
        gt = gt_from_instances(instance_map, [4, 4], border)
        assert (gt[10] == IGNORE_INDEX).sum() == 3 * border  # three vertical edges on row 10
        assert (gt[:, 15] == IGNORE_INDEX).sum() == 2 * border  # two horizontal edges in column 15
        assert set(np.unique(gt)) == {0, 4, IGNORE_INDEX}
    assert not (gt_from_instances(instance_map, [4, 4], 0) == IGNORE_INDEX).any()


def test_holdout_variant_differs_but_keeps_the_classes(dataset: Path, holdout: Path) -> None:
    assert (holdout / "classes.txt").read_text() == (dataset / "classes.txt").read_text()
    for index in range(SMALL.n_images):
        stem = image_id(index)
        standard_gt = read_png(dataset / "SegmentationClass" / f"{stem}.png")
        holdout_gt = read_png(holdout / "SegmentationClass" / f"{stem}.png")
        assert not np.array_equal(standard_gt, holdout_gt)
        assert set(np.unique(holdout_gt)) <= set(range(len(SYNTHETIC_CLASSES))) | {IGNORE_INDEX}


def test_holdout_shapes_are_a_different_family() -> None:
    # standard shapes are convex or nearly so; holdout has stars and crescents
    def mean_solidity(variant: str) -> float:
        config = SyntheticConfig(width=128, height=96, variant=variant, max_objects=1)
        solidities = []
        for index in range(12):
            gt = generate_sample(index, config).gt
            shape = gt != 0  # the one object with its void band
            solidities.append(shape.sum() / convex_hull_image(shape).sum())
        return float(np.mean(solidities))

    assert mean_solidity("holdout") < mean_solidity("standard") - 0.05


def region_features(config: SyntheticConfig, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (image, class) region: mean RGB, mean RGB + RGB std + gradient energy, class, image."""
    colours, appearances, classes, images = [], [], [], []
    for index in range(n_images):
        sample = generate_sample(index, config)
        image = sample.image.astype(np.float32) / 255
        gray = image.mean(axis=-1)
        gradient = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
        for class_index in sample.tags:
            region = sample.gt == class_index
            pixels = image[region]
            colours.append(pixels.mean(axis=0))
            appearances.append(np.r_[pixels.mean(axis=0), pixels.std(axis=0), gradient[region].mean()])
            classes.append(class_index)
            images.append(index)
    return np.stack(colours), np.stack(appearances), np.asarray(classes), np.asarray(images)


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    scale = features[train].std(axis=0)
    features = (features - features[train].mean(axis=0)) / scale
    classes = np.unique(labels[train])
    centroids = np.stack([features[train & (labels == c)].mean(axis=0) for c in classes])
    distances = ((features[~train][:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((classes[distances.argmin(axis=1)] == labels[~train]).mean())


def test_classes_are_not_separable_by_mean_colour_alone() -> None:
    colours, appearances, classes, images = region_features(SyntheticConfig(width=96, height=72, seed=2), 60)
    assert len(np.unique(classes)) == len(SYNTHETIC_CLASSES) - 1
    halves = (images % 2 == 0, images % 2 == 1)  # two-fold: train on one half, test on the other
    colour_accuracy = np.mean([nearest_centroid_accuracy(colours, classes, half) for half in halves])
    appearance_accuracy = np.mean([nearest_centroid_accuracy(appearances, classes, half) for half in halves])
    # colour is a cue, not the answer (measured 0.84); texture statistics add what it lacks (0.94)
    assert 0.5 < colour_accuracy < 0.93
    assert appearance_accuracy > colour_accuracy + 0.03


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="variant"):
        SyntheticConfig(variant="hard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="val_fraction"):
        SyntheticConfig(val_fraction=1.0)
