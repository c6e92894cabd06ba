"""Reading and writing images and label maps (and the small XML files beside them)."""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map (256 x 3 uint8): class i's colour from i's bits, interleaved."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def save_palette_png(path: str | Path, label_map: np.ndarray) -> None:
    """Write a class-index map as a palette PNG (pixel value = class index, 255 = void)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label_map.shape}")
    if label_map.min(initial=0) < 0 or label_map.max(initial=0) > 255:
        raise ValueError("label map values must lie in 0..255")
    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=False)


# ---------------------------------------------------------------------------- reading

_HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_LABEL_MODES = {"P", "L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I"}
_EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ReadOptions:
    """How strictly inputs are read."""

    max_side: int = 4096  # images with a longer side are refused (decompression bombs, wrong files)
    scribble_stroke_width: int = 3  # pixels; used when rasterising ScribbleSup XML strokes


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes. Missing or unreadable-for-good files -> BadInputError.

    Other OSErrors (a flaky disk or network filesystem) propagate unchanged so that the
    orchestrator can retry them; decoding happens on the bytes, apart from the I/O.
    """
    kind = _kind_at(Path(path))
    if kind not in (None, _REGULAR):  # a FIFO would block the read for ever
        raise BadInputError(path, f"is {kind}, not a file")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a directory, not a file") from None
    except PermissionError:
        raise BadInputError(path, "permission denied") from None


_REGULAR = "a regular file"
_KINDS = ((stat.S_ISREG, _REGULAR), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind_at(path: Path) -> str | None:
    """What is at path, links followed ("a regular file", "a directory", ...); None for nothing.
    Passing trouble (a flaky disk) propagates as OSError, for the orchestrator to retry."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "a broken symlink (its target does not exist)" if path.is_symlink() else None
    except PermissionError:
        raise BadInputError(path, "permission denied") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symlink loop"
        raise
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def file_present(path: Path, what: str) -> bool:
    """Whether an optional input file is there: True for a regular file (links followed), False
    when nothing is at path. Anything else there (a directory, a FIFO, a broken link) is a
    BadInputError, "<path>: is a directory, not <what>" (what: "a scribble file", ...): it must
    not pass for an absent file."""
    kind = _kind_at(path)
    if kind is not None and kind != _REGULAR:
        raise BadInputError(path, f"is {kind}, not {what}")
    return kind is not None


def refuse_outside_link(path: Path, *allowed: Path) -> None:
    """A link (or a link in a link) whose target lies outside every allowed folder is refused:
    a dataset must not make ingest read (and copy into the workspace) files from elsewhere.
    Links inside the dataset, and a linked image folder as a whole, are fine."""
    real = Path(os.path.realpath(path))
    if real != path and not any(real.is_relative_to(folder) for folder in allowed):
        raise BadInputError(path, f"symlink points outside the dataset root (to {real})")


def read_xml(path: str | Path) -> ElementTree.Element:
    """Parse an XML file and return its root element.

    The standard library's parser never fetches external entities, and expat >= 2.4
    refuses entity-expansion bombs.
    """
    data = read_bytes(path)
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise BadInputError(path, f"cannot parse XML: {error}") from None


# catch_warnings swaps the process-wide warning filters: two threads opening images at once
# could restore each other's filters. Only the header parse (Image.open) is serialised.
_OPEN_LOCK = threading.Lock()


def _open_header(path: str | Path, data: bytes) -> Image.Image:
    """Image.open on the bytes, with Pillow's decompression-bomb warning turned into a refusal
    (it would otherwise go raw to stderr and the image be decoded anyway)."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombWarning as warning:
            raise BadInputError(path, f"possible decompression bomb: {warning}") from None


def _open_image(path: str | Path, max_side: int | None) -> Image.Image:
    """Open and fully decode an image; refuse it before decoding when it is too large."""
    data = read_bytes(path)
    if not data:
        raise BadInputError(path, "empty file (0 bytes)")
    try:
        image = _open_header(path, data)
        width, height = image.size
        if max_side is not None and max(width, height) > max_side:
            raise BadInputError(path, f"image is {width}x{height}, larger than max_side={max_side}")
        image.load()  # full decode: a truncated file fails here, not later
    except BadInputError:
        raise
    except Image.UnidentifiedImageError:
        # Pillow's own message names the in-memory stream (<_io.BytesIO object at 0x...>), not the file.
        raise BadInputError(path, "cannot decode image: not in an image format Pillow reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # Pillow reports broken data as OSError (and a few plugins as SyntaxError /
        # ValueError); the bytes are already in memory.
        raise BadInputError(path, f"cannot decode image: {error}") from None
    return image


def _to_8bit(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Scale an integer/float array's actual range onto 0..255."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high > low:
        scaled = np.rint((values - low) * (255.0 / (high - low)))
    else:
        scaled = np.zeros_like(values)
    return scaled.astype(np.uint8), low, high


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth failing the image for
        return 1


# Pillow reads a camera's JPEG that holds several pictures (a preview, a stereo pair) as "MPO".
_SAME_FORMAT = {"MPO": "JPEG"}


def _format_note(path: Path, image_format: str | None) -> str | None:
    """A note when the data's format (by its magic bytes, as Pillow read them) is not the one the
    file's suffix names: "a.jpg: PNG data in a .jpg file (read as PNG)". None for an unknown suffix."""
    named = Image.registered_extensions().get(path.suffix.lower())
    if named is None or image_format is None:
        return None
    read = _SAME_FORMAT.get(image_format, image_format)
    if read == _SAME_FORMAT.get(named, named):
        return None
    return f"{path.name}: {read} data in a {path.suffix} file (read as {read})"


def _file_notes(path: Path, image: Image.Image) -> list[str]:
    """Notes on what the file holds beyond one plainly stored picture in its suffix's format."""
    notes = [note] if (note := _format_note(path, image.format)) else []
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"{path.name}: has {image.n_frames} frames; the first one is used")
    orientation = _exif_orientation(image)
    if orientation != 1:
        # Annotations (VOC, COCO) refer to the stored pixel order, so EXIF rotation is not applied.
        notes.append(f"{path.name}: EXIF orientation {orientation} ignored (pixels used as stored)")
    return notes


def load_rgb(path: str | Path, options: ReadOptions = ReadOptions()) -> tuple[np.ndarray, list[str]]:
    """An image as HxWx3 uint8 RGB, and notes on every conversion made to get there."""
    image = _open_image(path, options.max_side)
    name = Path(path).name
    warnings = _file_notes(Path(path), image)
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy(), warnings
    if mode in _HIGH_BIT_MODES:
        gray, low, high = _to_8bit(np.asarray(image))
        warnings.append(
            f"{name}: high bit depth grayscale ({mode}) scaled from its range {low:g}..{high:g} to 8-bit RGB"
        )
        return np.repeat(gray[:, :, None], 3, axis=2), warnings
    try:
        if mode in _ALPHA_MODES:
            converted = image.convert("RGBA").convert("RGB")
            what = f"{mode} with alpha converted to RGB (alpha dropped)"
        elif mode == "P":
            converted = image.convert("RGBA" if "transparency" in image.info else "RGB").convert("RGB")
            what = "palette (P) image converted to RGB"
        elif mode in {"L", "1"}:
            converted = image.convert("L").convert("RGB")
            what = f"grayscale ({mode}) converted to RGB"
        else:  # CMYK, YCbCr, LAB, HSV, ...
            converted = image.convert("RGB")
            what = f"{mode} converted to RGB"
    except (ValueError, OSError) as error:
        raise BadInputError(path, f"cannot convert image mode {mode} to RGB: {error}") from None
    warnings.append(f"{name}: {what}")
    return np.asarray(converted, dtype=np.uint8).copy(), warnings


def load_label_map(
    path: str | Path,
    *,
    expected_shape: tuple[int, int],
    num_classes: int,
    kind: str = "mask",
) -> np.ndarray:
    """A class-index PNG (GT mask or scribble) as HxW uint8; 255 = void / unlabelled.

    Palette images are read as their indices, never through their colours.
    """
    image = _open_image(path, max_side=None)
    width, height = image.size
    expected_height, expected_width = expected_shape[:2]
    if (height, width) != (expected_height, expected_width):
        raise BadInputError(
            path, f"{kind} is {width}x{height} but image is {expected_width}x{expected_height}"
        )
    if image.mode not in _LABEL_MODES:
        raise BadInputError(
            path,
            f"{kind} has mode {image.mode}; expected a palette (P) or single-channel (L / 16-bit) "
            "PNG of class indices",
        )
    values = np.asarray(image).astype(np.int64)
    present = np.unique(values)
    bad = present[((present >= num_classes) & (present != IGNORE_INDEX)) | (present < 0)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise BadInputError(
            path,
            f"{kind} has values {shown} outside the {num_classes} classes "
            f"(0..{num_classes - 1}, and {IGNORE_INDEX} for void)",
        )
    return values.astype(np.uint8)
