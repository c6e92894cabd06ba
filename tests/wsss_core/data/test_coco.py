import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from wsss_core.data.coco import CocoReader, decode_segmentation, guess_image_dir
from wsss_core.data.readers import DatasetReader, open_reader
from wsss_core.data.sample import Box
from wsss_core.errors import BadInputError, DatasetError

H, W = 12, 16
CAT, DOG = 1, 2  # category ids 7 ("cat") and 9 ("dog") in id order


def write_image(path: Path, seed: int, size: tuple[int, int] = (W, H)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def instances() -> dict:
    """Two images: a cat and a smaller, overlapping dog; a cat crowd (RLE) partly under a dog."""
    return {
        "images": [
            {"id": 42, "file_name": "img_a.png", "width": W, "height": H},
            {"id": 7, "file_name": "sub/img_b.png", "width": W, "height": H},
        ],
        "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}],  # listed out of id order
        "annotations": [
            {  # cat: x 1..10, y 1..8
                "id": 1, "image_id": 42, "category_id": 7, "iscrowd": 0, "bbox": [1, 1, 9, 7],
                "segmentation": [[1, 1, 10, 1, 10, 8, 1, 8]],
            },
            {  # dog: x 6.5..13.5, y 4.2..10.5, smaller than the cat, overlapping it
                "id": 2, "image_id": 42, "category_id": 9, "iscrowd": 0, "bbox": [6.5, 4.2, 7.0, 6.3],
                "segmentation": [[6.5, 4.2, 13.5, 4.2, 13.5, 10.5, 6.5, 10.5]],
            },
            {  # crowd of cats: columns 0..3 (column-major uncompressed RLE)
                "id": 3, "image_id": 7, "category_id": 7, "iscrowd": 1, "bbox": [0, 0, 4, 12],
                "segmentation": {"counts": [0, 4 * H, (W - 4) * H], "size": [H, W]},
            },
            {  # dog over columns 2..8, rows 3..8: its own pixels win over the crowd
                "id": 4, "image_id": 7, "category_id": 9, "iscrowd": 0, "bbox": [2, 3, 7, 6],
                "segmentation": [[2, 3, 9, 3, 9, 9, 2, 9]],
            },
        ],
    }


def write_dataset(root: Path, data: dict | None = None) -> Path:
    write_image(root / "images" / "img_a.png", 0)
    write_image(root / "images" / "sub" / "img_b.png", 1)
    path = root / "annotations" / "instances_tiny.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data or instances()))
    return path


@pytest.fixture
def reader(tmp_path) -> CocoReader:
    return CocoReader(write_dataset(tmp_path), tmp_path / "images")


def test_classes_ids_and_description(reader, tmp_path):
    assert isinstance(reader, DatasetReader)
    assert reader.classes == ["background", "cat", "dog"]
    assert reader.name == "coco:instances_tiny" and reader.format == "coco"
    assert reader.image_ids() == ["img_a", "img_b"]
    description = reader.describe()
    assert description["classes"] == ["background", "cat", "dog"] and description["split"] == "instances_tiny"
    assert description["root"] == str((tmp_path / "annotations" / "instances_tiny.json").resolve())


def test_polygons_overlap_with_the_smaller_instance_on_top(reader, tmp_path):
    sample = reader.load("img_a")
    assert sample.image.shape == (H, W, 3)
    assert np.array_equal(sample.image, np.asarray(Image.open(tmp_path / "images" / "img_a.png")))
    assert sample.tags == [CAT, DOG]
    # [x, y, w, h] -> the pixels it touches, x1/y1 exclusive
    assert sample.boxes == [Box(CAT, 1, 1, 10, 8), Box(DOG, 6, 4, 14, 11)]
    gt = sample.gt
    assert gt is not None and gt.dtype == np.uint8 and set(np.unique(gt)) == {0, CAT, DOG}
    assert gt[0, 0] == 0 and gt[2, 2] == CAT and gt[3, 5] == CAT  # cat only
    assert gt[6, 8] == DOG and gt[5, 7] == DOG  # both: the smaller dog wins
    assert gt[9, 12] == DOG and gt[9, 3] == 0  # dog only / neither
    assert not (gt == CAT)[5:8, 7:10].any()
    assert int((gt == CAT).sum()) == 9 * 7 - 4 * 3 and int((gt == DOG).sum()) == 7 * 7
    assert sample.warnings == []


def test_crowd_regions_are_void_except_under_instances(reader):
    sample = reader.load("img_b")
    gt = sample.gt
    assert sample.tags == [CAT, DOG]
    assert sample.boxes == [Box(CAT, 0, 0, 4, 12), Box(DOG, 2, 3, 9, 9)]
    assert (gt[:, :2] == 255).all()  # crowd columns no instance touches
    assert (gt[:3, 2:4] == 255).all() and (gt[4:8, 2:4] == DOG).all()
    assert gt[5, 6] == DOG and gt[0, 10] == 0
    assert set(np.unique(gt)) == {0, DOG, 255}


def test_compressed_rle_and_unusable_segmentations(tmp_path):
    region = np.zeros((H, W), np.uint8, order="F")
    region[2:5, 3:7] = 1
    rle = coco_mask.encode(region)
    rle["counts"] = rle["counts"].decode()  # as it appears in JSON
    decoded, problem = decode_segmentation(tmp_path, rle, (H, W))
    assert problem is None and np.array_equal(decoded, region.astype(bool))

    assert decode_segmentation(tmp_path, [[1, 1, 2, 2]], (H, W)) == (None, "no polygon with 3 or more points")
    with pytest.raises(BadInputError, match="RLE size"):
        decode_segmentation(tmp_path, {"counts": rle["counts"], "size": [H, W + 1]}, (H, W))

    data = instances()
    del data["annotations"][1]["segmentation"]  # a detection-only annotation: no GT mask for img_a
    reader = CocoReader(write_dataset(tmp_path / "detonly", data), tmp_path / "detonly" / "images")
    sample = reader.load("img_a")
    assert sample.gt is None and sample.tags == [CAT, DOG] and len(sample.boxes) == 2
    assert "img_a.png" in sample.warnings[0] and "annotation 2" in sample.warnings[0]


def test_per_image_problems_are_bad_inputs(tmp_path):
    data = instances()
    data["images"].append({"id": 5, "file_name": "missing.png"})
    data["images"].append({"id": 6, "file_name": "../../outside.png"})
    data["images"].append({"id": 8, "file_name": "small.png", "width": W, "height": H})
    data["annotations"].append({"id": 9, "image_id": 7, "category_id": 99, "bbox": [0, 0, 1, 1]})
    path = write_dataset(tmp_path, data)
    write_image(tmp_path / "images" / "small.png", 3, size=(8, 6))
    reader = CocoReader(path, tmp_path / "images")
    with pytest.raises(BadInputError, match=r"missing\.png: file not found"):
        reader.load("missing")
    with pytest.raises(BadInputError, match=r"instances_tiny\.json: file_name '\.\./\.\./outside\.png'.*escapes"):
        reader.load("outside")
    with pytest.raises(BadInputError, match=r"small\.png: image is 8x6 but instances_tiny\.json says 16x12"):
        reader.load("small")
    with pytest.raises(BadInputError, match=r"instances_tiny\.json: annotation 9 of img_b has unknown category_id 99"):
        reader.load("img_b")
    with pytest.raises(BadInputError, match="no image with file stem 'nope'"):
        reader.load("nope")


def test_dataset_level_problems_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        CocoReader(tmp_path / "none.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        CocoReader(tmp_path / "bad.json", tmp_path)
    os.mkfifo(tmp_path / "pipe.json")  # reading it would block for ever
    with pytest.raises(DatasetError, match=r"pipe\.json: is a FIFO \(named pipe\), not a file"):
        CocoReader(tmp_path / "pipe.json", tmp_path)
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="no list annotations, categories"):
        CocoReader(tmp_path / "other.json", tmp_path)
    data = instances()
    data["images"].append({"id": 99, "file_name": "elsewhere/img_a.jpg"})
    with pytest.raises(DatasetError, match="share the file stem.*img_a"):
        CocoReader(write_dataset(tmp_path / "dup", data), tmp_path / "dup" / "images")
    data = instances()
    data["categories"].append({"id": 11, "name": "cat"})
    with pytest.raises(DatasetError, match="duplicate class names: cat"):
        CocoReader(write_dataset(tmp_path / "dupcat", data), tmp_path / "dupcat" / "images")


def test_reader_pickles_small_and_the_image_dir_can_be_guessed(reader, tmp_path):
    clone = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 2000  # the parsed JSON is not carried along
    assert np.array_equal(clone.load("img_a").gt, reader.load("img_a").gt)

    layout = tmp_path / "coco"
    (layout / "annotations").mkdir(parents=True)
    (layout / "val2017").mkdir()
    assert guess_image_dir(layout / "annotations" / "instances_val2017.json") == (layout / "val2017").resolve()
    with pytest.raises(DatasetError, match="pass image_dir"):
        guess_image_dir(layout / "annotations" / "instances_train2017.json")


def test_open_reader_for_coco(tmp_path):
    path = write_dataset(tmp_path)
    reader = open_reader(path, format="coco", image_dir=tmp_path / "images")
    assert isinstance(reader, CocoReader) and reader.image_ids() == ["img_a", "img_b"]
    with pytest.raises(DatasetError, match="scribbles_dir is for VOC"):
        open_reader(path, format="coco", image_dir=tmp_path / "images", scribbles_dir=tmp_path)


def test_an_image_that_links_outside_the_image_folder_is_refused(tmp_path):
    path = write_dataset(tmp_path)
    outside = tmp_path / "elsewhere.png"
    (tmp_path / "images" / "img_a.png").rename(outside)
    (tmp_path / "images" / "img_a.png").symlink_to(outside)
    (tmp_path / "images" / "sub" / "img_b.png").rename(tmp_path / "images" / "b.png")
    (tmp_path / "images" / "sub" / "img_b.png").symlink_to(tmp_path / "images" / "b.png")  # inside: fine
    reader = CocoReader(path, tmp_path / "images")
    with pytest.raises(BadInputError, match=r"img_a\.png: symlink points outside the dataset root"):
        reader.load("img_a")
    assert reader.load("img_b").image.shape == (H, W, 3)
