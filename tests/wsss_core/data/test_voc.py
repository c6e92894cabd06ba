import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_core.data.classes import VOC_CLASSES, read_class_list
from wsss_core.data.image_io import ReadOptions, save_palette_png
from wsss_core.data.readers import DatasetReader, open_reader
from wsss_core.data.sample import Box
from wsss_core.data.voc import VocReader
from wsss_core.errors import BadInputError, DatasetError

H, W = 12, 16
CAT, DOG, PERSON = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")


def write_jpeg(root: Path, image_id: str, seed: int = 0, size: tuple[int, int] = (W, H)) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path = root / "JPEGImages" / f"{image_id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def voc_object(name: str, box: tuple[int, int, int, int] | None, extra: str = "") -> str:
    bndbox = ""
    if box is not None:
        xmin, ymin, xmax, ymax = box
        bndbox = f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
    return f"<object><name>{name}</name><difficult>0</difficult>{bndbox}{extra}</object>"


def write_xml(root: Path, image_id: str, *objects: str, size: tuple[int, int] = (W, H)) -> Path:
    path = root / "Annotations" / f"{image_id}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{image_id}.jpg</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        + "".join(objects)
        + "</annotation>"
    )
    return path


def write_split(root: Path, split: str, text: str) -> None:
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_label(path: Path, labels: np.ndarray, palette: bool = True) -> None:
    if palette:
        save_palette_png(path, labels)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


@pytest.fixture
def dataset(tmp_path) -> Path:
    """a: XML (+ a person with parts) + GT + scribble PNG; b: GT in SegmentationClassAug only; c: image only."""
    root = tmp_path / "VOCmini"
    for seed, image_id in enumerate(["a", "b", "c"]):
        write_jpeg(root, image_id, seed)
    person_parts = (
        "<part><name>head</name><bndbox><xmin>3</xmin><ymin>1</ymin><xmax>4</xmax><ymax>2</ymax></bndbox></part>"
    )
    write_xml(
        root,
        "a",
        voc_object("cat", (1, 2, 10, 8)),
        voc_object("person", (5, 1, 16, 12), extra=person_parts),
        voc_object("cat", (12, 9, 14, 11)),
    )
    gt = np.zeros((H, W), np.uint8)
    gt[1:8, 0:10] = CAT
    gt[0, :] = 255
    write_label(root / "SegmentationClass" / "a.png", gt)
    scribble = np.full((H, W), 255, np.uint8)
    scribble[4, 2:8] = CAT
    scribble[11, :] = 0
    write_label(root / "scribbles" / "a.png", scribble, palette=False)
    gt_b = np.zeros((H, W), np.uint8)
    gt_b[2:6, 2:6] = DOG
    gt_b[8:10, 8:12] = PERSON
    write_label(root / "SegmentationClassAug" / "b.png", gt_b)
    write_split(root, "train", "a\nb\n\nc\na\n")
    write_split(root, "val", "c\n")
    return root


def test_reader_loads_images_masks_scribbles_boxes_and_tags(dataset):
    reader = VocReader(dataset)
    assert isinstance(reader, DatasetReader)
    assert reader.name == "voc:VOCmini" and reader.format == "voc" and reader.root == dataset.resolve()
    assert reader.classes == list(VOC_CLASSES)
    assert reader.image_ids() == ["a", "b", "c"]  # blank lines skipped, the repeated id kept once

    a = reader.load("a")
    assert a.image_id == "a" and a.image.shape == (H, W, 3) and a.image.dtype == np.uint8
    reference = np.asarray(Image.open(dataset / "JPEGImages" / "a.jpg"))
    assert np.array_equal(a.image, reference)
    assert a.gt is not None and a.gt[0, 0] == 255 and a.gt[1, 0] == CAT and a.gt[9, 12] == 0
    assert a.scribble is not None and a.scribble[4, 2] == CAT and a.scribble[11, 0] == 0 and a.scribble[0, 0] == 255
    # VOC's 1-based inclusive corners -> 0-based exclusive; the person's <part> is not an object
    assert a.boxes == [Box(CAT, 0, 1, 10, 8), Box(PERSON, 4, 0, 16, 12), Box(CAT, 11, 8, 14, 11)]
    assert a.boxes_array().tolist()[0] == [CAT, 0, 1, 10, 8]
    assert a.tags == [CAT, PERSON]
    assert a.warnings == []

    b = reader.load("b")  # no XML: tags from the (SegmentationClassAug) mask
    assert b.gt is not None and b.gt[3, 3] == DOG and b.boxes == [] and b.tags == [DOG, PERSON]
    assert b.scribble is None

    c = reader.load("c")
    assert c.gt is None and c.scribble is None and c.boxes == [] and c.tags == []

    assert reader.describe() == {
        "name": "voc:VOCmini",
        "format": "voc",
        "root": str(dataset.resolve()),
        "split": "train",
        "classes": list(VOC_CLASSES),
    }
    assert VocReader(dataset, split="val").image_ids() == ["c"]


def test_split_list_problems_are_dataset_errors(dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"trainval\.txt: split list not found \(splits available: train, val\)"):
        VocReader(dataset, split="trainval").image_ids()
    write_split(dataset, "empty", "\n  \n")
    with pytest.raises(DatasetError, match=r"empty\.txt: split list is empty"):
        VocReader(dataset, split="empty").image_ids()
    with pytest.raises(DatasetError, match="dataset root not found"):
        VocReader(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match=r"no JPEGImages/ folder"):
        VocReader(tmp_path / "flat")


@pytest.mark.parametrize("image_id", ["../a", "/etc/passwd", "sub/a", "..", "", "a\\b"])
def test_ids_that_escape_the_root_are_refused(dataset, image_id):
    with pytest.raises(BadInputError, match="image id") as caught:
        VocReader(dataset).load(image_id)
    assert caught.value.path == image_id


def test_symlinks_inside_the_dataset_are_followed(dataset, tmp_path):
    inside = write_jpeg(dataset / "originals", "real", seed=5)
    os.symlink(inside, dataset / "JPEGImages" / "linked.jpg")
    sample = VocReader(dataset).load("linked")
    assert np.array_equal(sample.image, np.asarray(Image.open(inside)))
    # a linked image folder as a whole is the dataset's own folder, wherever it lives
    shared = tmp_path / "shared"
    (dataset / "JPEGImages").rename(shared)
    os.symlink(shared, dataset / "JPEGImages")
    assert VocReader(dataset).load("a").image.shape == (H, W, 3)


@pytest.mark.parametrize("folder, name", [("JPEGImages", "linked.jpg"), ("SegmentationClass", "a.png"),
                                          ("Annotations", "a.xml"), ("scribbles", "a.png")])
def test_a_symlink_to_a_file_outside_the_dataset_is_refused(dataset, tmp_path, folder, name):
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    target = dataset / folder / name
    if target.exists():
        target.rename(outside)
    else:
        write_jpeg(tmp_path / "x", "real", seed=5).rename(outside)
    os.symlink(outside, target)
    image_id = Path(name).stem
    with pytest.raises(BadInputError, match="symlink points outside the dataset root") as caught:
        VocReader(dataset).load(image_id)
    assert caught.value.path == str(target)


def test_split_list_lines_are_whole_ids_except_classification_flags(dataset):
    write_split(dataset, "spaced", "a b\n c \n# comment\nd  1\ne -1\nf\t0\nb\n")
    assert VocReader(dataset, split="spaced").image_ids() == ["a b", "c", "d", "e", "f", "b"]
    with pytest.raises(BadInputError, match=r"JPEGImages/a b\.jpg: file not found"):
        VocReader(dataset, split="spaced").load("a b")


def test_per_image_problems_name_the_file(dataset):
    reader = VocReader(dataset)
    with pytest.raises(BadInputError, match=r"JPEGImages/missing\.jpg: file not found"):
        reader.load("missing")

    write_jpeg(dataset, "big_mask", seed=3)
    write_label(dataset / "SegmentationClass" / "big_mask.png", np.zeros((H, W + 4), np.uint8))
    with pytest.raises(BadInputError, match=r"big_mask\.png: mask is 20x12 but image is 16x12"):
        reader.load("big_mask")

    write_jpeg(dataset, "big_scribble", seed=3)
    write_label(dataset / "scribbles" / "big_scribble.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(BadInputError, match=r"big_scribble\.png: scribble is 16x13 but image is 16x12"):
        reader.load("big_scribble")

    write_jpeg(dataset, "stranger", seed=3)
    write_xml(dataset, "stranger", voc_object("unicorn", (1, 1, 2, 2)))
    with pytest.raises(BadInputError, match=r"Annotations/stranger\.xml: unknown class name 'unicorn'"):
        reader.load("stranger")

    write_jpeg(dataset, "resized", seed=3)
    write_xml(dataset, "resized", voc_object("cat", (1, 1, 2, 2)), size=(500, 375))
    with pytest.raises(BadInputError, match=r"resized\.xml: annotation is for a 500x375 image but image is 16x12"):
        reader.load("resized")

    write_jpeg(dataset, "flipped", seed=3)
    write_xml(dataset, "flipped", voc_object("cat", (8, 1, 2, 4)))
    with pytest.raises(BadInputError, match=r"flipped\.xml: box \(8, 1, 2, 4\) has xmax < xmin"):
        reader.load("flipped")

    write_jpeg(dataset, "garbled", seed=3)
    (dataset / "JPEGImages" / "garbled.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(BadInputError, match=r"garbled\.jpg: cannot decode image"):
        reader.load("garbled")

    write_jpeg(dataset, "huge", seed=3, size=(40, 12))
    with pytest.raises(BadInputError, match=r"huge\.jpg: image is 40x12, larger than max_side=32"):
        VocReader(dataset, options=ReadOptions(max_side=32)).load("huge")


@pytest.mark.parametrize("folder, name, what", [
    ("scribbles", "a.png", "a scribble file"),
    ("scribbles", "c.xml", "a scribble file"),
    ("SegmentationClass", "c.png", "a mask file"),
    ("SegmentationClassAug", "c.png", "a mask file"),
    ("Annotations", "c.xml", "an annotation file"),
    ("JPEGImages", "a.jpeg", "an image file"),  # before a.png would be read in its place
])
def test_a_directory_where_a_file_belongs_fails_the_image_instead_of_passing_for_no_file(dataset, folder, name, what):
    target = dataset / folder / name
    if target.exists():
        target.unlink()
    if folder == "JPEGImages":  # the image then lies under a later suffix
        (dataset / folder / "a.jpg").rename(dataset / folder / "a.png")
    target.mkdir(parents=True)
    with pytest.raises(BadInputError) as caught:
        VocReader(dataset).load(Path(name).stem)
    assert str(caught.value) == f"{target}: is a directory, not {what}"


def test_a_scribbles_dir_entry_that_is_no_file_fails_the_image(dataset, tmp_path):
    other = tmp_path / "my_scribbles"
    (other / "c.png").mkdir(parents=True)
    os.mkfifo(other / "b.xml")  # reading it would block for ever
    os.symlink(other / "gone.png", other / "a.png")
    reader = VocReader(dataset, scribbles_dir=other)
    problems = {"c": "c.png: is a directory", "b": "b.xml: is a FIFO (named pipe)",
                "a": "a.png: is a broken symlink (its target does not exist)"}
    for image_id, problem in problems.items():
        with pytest.raises(BadInputError) as caught:
            reader.load(image_id)
        assert str(caught.value) == f"{other.resolve()}/{problem}, not a scribble file"


def test_png_data_in_a_jpg_is_read_with_a_warning(dataset):
    pixels = np.asarray(Image.open(dataset / "JPEGImages" / "c.jpg"))
    Image.fromarray(pixels).save(dataset / "JPEGImages" / "c.jpg", format="PNG")
    sample = VocReader(dataset).load("c")
    assert np.array_equal(sample.image, pixels)
    assert sample.warnings == ["c.jpg: PNG data in a .jpg file (read as PNG)"]


def test_boxes_reaching_out_of_the_image_are_clipped_with_a_warning(dataset):
    write_jpeg(dataset, "edge", seed=3)
    write_xml(dataset, "edge", voc_object("dog", (0, 3, 20, 12)), voc_object("dog", None))
    sample = VocReader(dataset).load("edge")
    assert sample.boxes == [Box(DOG, 0, 2, 16, 12)]
    assert sample.tags == [DOG]
    assert any("edge.xml" in w and "clipped" in w for w in sample.warnings)
    assert any("no <bndbox>" in w for w in sample.warnings)


def test_custom_class_list_is_honoured_and_checked(dataset):
    (dataset / "classes.txt").write_text("background\n\ncat\nperson\n")
    reader = VocReader(dataset)
    assert reader.classes == ["background", "cat", "person"] == read_class_list(dataset)
    write_jpeg(dataset, "custom", seed=4)
    write_xml(dataset, "custom", voc_object("person", (1, 1, 4, 4)), voc_object("cat", (2, 2, 6, 6)))
    sample = reader.load("custom")
    assert sample.tags == [1, 2] and [b.class_index for b in sample.boxes] == [2, 1]

    # a's mask holds VOC's cat (8): beyond this 3-class list
    with pytest.raises(BadInputError, match=r"SegmentationClass/a\.png: mask has values 8 outside the 3 classes"):
        reader.load("a")

    (dataset / "classes.txt").write_text("background\ncat\ncat\n")
    with pytest.raises(DatasetError, match=r"classes\.txt: duplicate class names: cat"):
        VocReader(dataset)


@pytest.mark.parametrize("make, kind", [
    (Path.mkdir, "a directory"),
    (os.mkfifo, "a FIFO (named pipe)"),  # reading it would block for ever
    (lambda path: os.symlink(path.with_name("gone.txt"), path), "a broken symlink (its target does not exist)"),
], ids=["directory", "fifo", "broken-link"])
def test_a_class_list_that_is_no_readable_file_is_a_dataset_error_not_vocs_classes(dataset, make, kind):
    make(dataset / "classes.txt")
    with pytest.raises(DatasetError) as caught:
        VocReader(dataset)
    assert str(caught.value) == f"{dataset.resolve()}/classes.txt: is {kind}, not a class list file"


def test_a_class_list_without_read_permission_is_a_dataset_error(dataset, monkeypatch):
    def refuse(path: Path) -> bytes:  # root reads any file: chmod cannot show this
        raise PermissionError(13, "Permission denied", str(path))

    (dataset / "classes.txt").write_text("background\ncat\n")
    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(DatasetError) as caught:
        read_class_list(dataset)
    assert str(caught.value) == f"{dataset}/classes.txt: permission denied"


def test_scribblesup_xml_is_read_when_there_is_no_png_and_scribbles_dir_overrides(dataset, tmp_path):
    (dataset / "scribbles" / "b.xml").write_text(
        "<annotation><polygon><tag>dog</tag>"
        "<point><X>1</X><Y>6</Y></point><point><X>6</X><Y>6</Y></point>"
        "</polygon></annotation>"
    )
    thin = VocReader(dataset, options=ReadOptions(scribble_stroke_width=1)).load("b")
    assert thin.scribble is not None and np.argwhere(thin.scribble == DOG).tolist() == [[6, x] for x in range(1, 7)]
    wide = VocReader(dataset).load("b")  # default stroke width 3
    assert int((wide.scribble == DOG).sum()) == 3 * 8

    other = tmp_path / "my_scribbles"
    write_label(other / "c.png", np.full((H, W), 255, np.uint8) - np.eye(H, W, dtype=np.uint8) * 255)
    sample = VocReader(dataset, scribbles_dir=other).load("c")
    assert sample.scribble is not None and int((sample.scribble == 0).sum()) == H
    assert sample.tags == []
    assert VocReader(dataset, scribbles_dir=other).load("a").scribble is None  # ROOT/scribbles not read then


def test_open_reader_picks_the_reader_and_refuses_unknown_formats(dataset):
    reader = open_reader(dataset, format="voc", split="val")
    assert isinstance(reader, VocReader) and reader.image_ids() == ["c"]
    with pytest.raises(DatasetError, match="unknown dataset format 'yolo'"):
        open_reader(dataset, format="yolo")
    with pytest.raises(DatasetError, match="image_dir is for COCO"):
        open_reader(dataset, image_dir=dataset)


def test_a_scribbles_dir_that_is_not_there_is_a_dataset_error(dataset, tmp_path):
    with pytest.raises(DatasetError, match="missing-scribbles: scribble folder not found"):
        VocReader(dataset, scribbles_dir=tmp_path / "missing-scribbles")
    VocReader(dataset)  # no ROOT/scribbles is fine: a dataset without scribbles
