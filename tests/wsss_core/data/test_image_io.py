import os
import socket

import numpy as np
import pytest
from PIL import Image

from wsss_core.data.image_io import ReadOptions, file_present, load_label_map, load_rgb, read_xml, save_palette_png
from wsss_core.errors import BadInputError

H, W = 12, 16


def gradient_rgb(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def save(array: np.ndarray, path, mode: str | None = None, **kwargs):
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **kwargs)
    return path


# ----------------------------------------------------------------------------- load_rgb


def test_rgb_png_is_read_exactly_without_warnings(tmp_path):
    rgb = gradient_rgb()
    image, warnings = load_rgb(save(rgb, tmp_path / "a.png"))
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert np.array_equal(image, rgb)
    assert warnings == []


def test_grayscale_becomes_rgb_with_a_warning(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    image, warnings = load_rgb(save(gray, tmp_path / "gray.png"))
    assert image.shape == (H, W, 3)
    assert all(np.array_equal(image[:, :, c], gray) for c in range(3))
    assert len(warnings) == 1 and "gray.png" in warnings[0] and "grayscale" in warnings[0]


def test_alpha_is_dropped_with_a_warning(tmp_path):
    rgba = np.dstack([gradient_rgb(1), np.full((H, W), 7, np.uint8)])
    image, warnings = load_rgb(save(rgba, tmp_path / "alpha.png"))
    assert np.array_equal(image, rgba[:, :, :3])  # colours kept, not blended with the alpha
    assert "alpha.png" in warnings[0] and "alpha dropped" in warnings[0]

    la = np.dstack([np.full((H, W), 90, np.uint8), np.zeros((H, W), np.uint8)])
    image, warnings = load_rgb(save(la, tmp_path / "la.png"))
    assert (image == 90).all() and "LA" in warnings[0]


def test_sixteen_bit_is_scaled_by_its_actual_range(tmp_path):
    values = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    image, warnings = load_rgb(save(values, tmp_path / "deep.png"))
    expected = np.rint((values.astype(float) - 1000) * 255 / 4000).astype(np.uint8)
    assert image[:, :, 0].min() == 0 and image[:, :, 0].max() == 255
    assert np.array_equal(image[:, :, 1], expected)
    assert "deep.png" in warnings[0] and "1000..5000" in warnings[0]


def test_palette_and_cmyk_become_rgb_with_warnings(tmp_path):
    indices = (np.arange(H * W) % 3).astype(np.uint8).reshape(H, W)
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.save(tmp_path / "pal.png")
    image, warnings = load_rgb(tmp_path / "pal.png")
    assert image[0, 0].tolist() == [255, 0, 0] and image[0, 1].tolist() == [0, 255, 0]
    assert image[0, 2].tolist() == [0, 0, 255]
    assert "pal.png" in warnings[0] and "palette" in warnings[0]

    Image.fromarray(gradient_rgb(2)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image, warnings = load_rgb(tmp_path / "cmyk.jpg")
    assert image.shape == (H, W, 3) and "cmyk.jpg" in warnings[0] and "CMYK" in warnings[0]
    reference = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))
    assert np.array_equal(image, reference)


def test_exif_rotation_is_reported_but_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gradient_rgb()).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    image, warnings = load_rgb(tmp_path / "rot.jpg")
    assert image.shape == (H, W, 3)
    assert any("rot.jpg" in w and "EXIF orientation 6" in w for w in warnings)


def test_data_in_another_format_than_the_suffix_says_is_read_with_a_warning(tmp_path):
    rgb = gradient_rgb(3)
    image, warnings = load_rgb(save(rgb, tmp_path / "png.jpg", format="PNG"))
    assert np.array_equal(image, rgb)  # read as what it is: PNG, losslessly
    assert warnings == ["png.jpg: PNG data in a .jpg file (read as PNG)"]

    image, warnings = load_rgb(save(rgb, tmp_path / "jpeg.png", format="JPEG", quality=95))
    assert np.array_equal(image, np.asarray(Image.open(tmp_path / "jpeg.png")))
    assert warnings == ["jpeg.png: JPEG data in a .png file (read as JPEG)"]

    # any case of a suffix of the format, and a camera's multi-picture JPEG (Pillow: MPO): no note
    for name in ("upper.JPEG", "short.jpe"):
        assert load_rgb(save(rgb, tmp_path / name, format="JPEG"))[1] == []
    save(rgb, tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[Image.fromarray(rgb)])
    assert Image.open(tmp_path / "camera.jpg").format == "MPO"
    assert not [w for w in load_rgb(tmp_path / "camera.jpg")[1] if "data in a" in w]


def test_missing_corrupt_truncated_and_oversized_images_are_bad_inputs(tmp_path):
    with pytest.raises(BadInputError, match=r"nothere\.jpg: file not found"):
        load_rgb(tmp_path / "nothere.jpg")

    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all")
    with pytest.raises(BadInputError, match=r"junk\.jpg: cannot decode image"):
        load_rgb(tmp_path / "junk.jpg")

    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)  # noise: a long entropy-coded body
    save(noisy, tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"cut\.jpg: cannot decode image") as caught:
        load_rgb(tmp_path / "cut.jpg")
    assert caught.value.path.endswith("cut.jpg")

    save(gradient_rgb(), tmp_path / "big.png")
    with pytest.raises(BadInputError, match=r"big\.png: image is 16x12, larger than max_side=10"):
        load_rgb(tmp_path / "big.png", ReadOptions(max_side=10))
    assert load_rgb(tmp_path / "big.png", ReadOptions(max_side=16))[0].shape == (H, W, 3)

    (tmp_path / "folder.png").mkdir()
    with pytest.raises(BadInputError, match="is a directory"):
        load_rgb(tmp_path / "folder.png")


# ------------------------------------------------------------------------ label maps


def test_palette_png_round_trip_is_exact(tmp_path):
    labels = (np.arange(H * W) % 21).astype(np.uint8).reshape(H, W)
    labels[0, :5] = 255
    save_palette_png(tmp_path / "mask.png", labels)
    assert Image.open(tmp_path / "mask.png").mode == "P"
    back = load_label_map(tmp_path / "mask.png", expected_shape=(H, W), num_classes=21, kind="mask")
    assert back.dtype == np.uint8 and np.array_equal(back, labels)


def test_single_channel_and_sixteen_bit_label_pngs_are_read_as_indices(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[2:5, 3:9] = 2
    labels[8:, :] = 255
    save(labels, tmp_path / "scribble.png")  # mode L
    back = load_label_map(tmp_path / "scribble.png", expected_shape=(H, W), num_classes=3, kind="scribble")
    assert np.array_equal(back, labels)

    save(labels.astype(np.uint16), tmp_path / "deep.png")  # I;16 with small values
    back = load_label_map(tmp_path / "deep.png", expected_shape=(H, W), num_classes=3, kind="mask")
    assert np.array_equal(back, labels)

    wide = labels.astype(np.uint16)
    wide[0, 0] = 300
    save(wide, tmp_path / "wide.png")
    with pytest.raises(BadInputError, match=r"wide\.png: mask has values 300 outside the 3 classes"):
        load_label_map(tmp_path / "wide.png", expected_shape=(H, W), num_classes=3, kind="mask")


def test_label_map_size_values_and_mode_are_checked(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[1, 1], labels[2, 2], labels[3, 3] = 7, 9, 255
    save_palette_png(tmp_path / "m.png", labels)
    with pytest.raises(BadInputError, match=r"m\.png: mask is 16x12 but image is 20x12"):
        load_label_map(tmp_path / "m.png", expected_shape=(12, 20), num_classes=21, kind="mask")
    with pytest.raises(BadInputError, match=r"m\.png: scribble has values 7, 9 outside the 5 classes"):
        load_label_map(tmp_path / "m.png", expected_shape=(H, W), num_classes=5, kind="scribble")
    assert load_label_map(tmp_path / "m.png", expected_shape=(H, W), num_classes=10)[2, 2] == 9

    save(gradient_rgb(), tmp_path / "colour.png")
    with pytest.raises(BadInputError, match=r"colour\.png: mask has mode RGB"):
        load_label_map(tmp_path / "colour.png", expected_shape=(H, W), num_classes=21, kind="mask")
    with pytest.raises(BadInputError, match="file not found"):
        load_label_map(tmp_path / "none.png", expected_shape=(H, W), num_classes=21)


def test_read_xml_reports_broken_files(tmp_path):
    (tmp_path / "ok.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    assert read_xml(tmp_path / "ok.xml").find("filename").text == "a.jpg"
    (tmp_path / "bad.xml").write_text("<annotation><object></annotation>")
    with pytest.raises(BadInputError, match=r"bad\.xml: cannot parse XML"):
        read_xml(tmp_path / "bad.xml")


def test_empty_and_unknown_files_are_named_by_their_path_not_pillows_stream(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match=r"empty\.jpg: empty file \(0 bytes\)") as caught:
        load_rgb(tmp_path / "empty.jpg")
    assert "BytesIO" not in str(caught.value)
    (tmp_path / "text.png").write_bytes(b"hello")
    with pytest.raises(BadInputError, match=r"text\.png: cannot decode image") as caught:
        load_label_map(tmp_path / "text.png", expected_shape=(H, W), num_classes=3)
    assert "BytesIO" not in str(caught.value)


def test_decompression_bomb_warning_fails_the_image_instead_of_going_to_stderr(tmp_path, monkeypatch, recwarn):
    save(gradient_rgb(), tmp_path / "bomb.png")  # 16x12 = 192 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow warns above 100, refuses above 200
    with pytest.raises(BadInputError, match=r"bomb\.png: possible decompression bomb"):
        load_rgb(tmp_path / "bomb.png", ReadOptions(max_side=None))
    with pytest.raises(BadInputError, match=r"bomb\.png: possible decompression bomb"):
        load_label_map(tmp_path / "bomb.png", expected_shape=(H, W), num_classes=3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_rgb(tmp_path / "bomb.png")[0].shape == (H, W, 3)


# ----------------------------------------------------------------- optional input files


def test_file_present_tells_a_regular_file_and_nothing_apart_from_everything_else(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    os.symlink(tmp_path / "file.png", tmp_path / "link.png")
    assert file_present(tmp_path / "file.png", "a scribble file") and file_present(tmp_path / "link.png", "a scribble file")
    assert not file_present(tmp_path / "none.png", "a scribble file")
    assert not file_present(tmp_path / "file.png" / "under.png", "a scribble file")  # its folder is a file

    (tmp_path / "dir.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "broken.png")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock.png"))
        expected = {
            "dir.png": "is a directory, not a scribble file",
            "fifo.png": "is a FIFO (named pipe), not a scribble file",
            "broken.png": "is a broken symlink (its target does not exist), not a scribble file",
            "loop.png": "is a symlink loop, not a scribble file",
            "sock.png": "is a socket, not a scribble file",
        }
        for name, problem in expected.items():
            with pytest.raises(BadInputError) as caught:
                file_present(tmp_path / name, "a scribble file")
            assert str(caught.value) == f"{tmp_path / name}: {problem}"
