"""The built-in synthetic dataset: textured, tinted shapes on cluttered backgrounds.

Each object class is a scikit-image texture tinted with a class hue range; neighbouring
ranges overlap, so colour alone does not tell the classes apart, texture does most of
the rest. Images are written in the VOC layout (see ``generate_dataset``) with GT masks
(void band along object boundaries), scribbles, tight boxes and a ``classes.txt``.

``variant="holdout"`` keeps the class appearances but changes the shape family, the
backgrounds, the object scales and the seed stream: tune on "standard", check on "holdout".
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skimage_data
from skimage.draw import line, polygon
from skimage.transform import rescale

from wsss_core.config import config_hash, config_to_dict
from wsss_core.data.image_io import save_palette_png
from wsss_core.data.label_mix import LabelMix, assign_groups, keep_labels
from wsss_core.data.sample import IGNORE_INDEX, Box, Sample
from wsss_core.errors import BadInputError

Variant = Literal["standard", "holdout"]
Shape = tuple[int, int]
Centre = tuple[float, float]

_VARIANT_SEED_KEYS = {"standard": 0, "holdout": 1}
_SPLIT_SEED_KEY = 2**31 - 1  # spawn-key slot for the split permutation, never an image index
_REFERENCE_SIDE = 192  # texture and shape scales are defined for min(height, width) == 192
_REFERENCE_AREA = 256 * 192
_OWNER_MARKER = ".wsss-synthetic"  # says "this folder was written by generate_dataset"
_MANAGED_ENTRIES = (
    "JPEGImages",
    "SegmentationClass",
    "Annotations",
    "scribbles",
    "ImageSets",
    "classes.txt",
    "synthetic.json",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """How many images, how big, and which variant of the synthetic dataset."""

    n_images: int = 200
    width: int = 256
    height: int = 192
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 3
    void_border: int = 2  # total width in px of the 255 band along each object boundary
    val_fraction: float = 0.2
    variant: Variant = "standard"

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"images must be at least 32x32, got {self.width}x{self.height}")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 6, got {self.min_objects}..{self.max_objects}"
            )
        if not 0 <= self.void_border <= 8:
            raise ValueError(f"void_border must lie in 0..8, got {self.void_border}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.variant not in _VARIANT_SEED_KEYS:
            raise ValueError(f"unknown variant {self.variant!r} (standard or holdout)")


@dataclass(frozen=True)
class ClassLook:
    """One object class's appearance: a skimage texture tinted within a hue range."""

    name: str
    texture: str  # name of a skimage.data image that loads offline
    texture_scale: float  # rescale of the texture at the reference image size
    hue_range: tuple[float, float]  # degrees; may run below 0 (wraps)
    saturation_range: tuple[float, float] = (0.35, 0.85)
    dark_range: tuple[float, float] = (0.05, 0.35)  # value of the texture's darkest pixels
    bright_range: tuple[float, float] = (0.6, 1.0)  # value of its brightest pixels


# Neighbouring hue ranges overlap by ~7-15 degrees; contrast (dark/bright ends) differs
# by class but overlaps too.
CLASS_LOOKS: tuple[ClassLook, ...] = (
    ClassLook("brick-red", "brick", 0.45, (-15.0, 36.0), dark_range=(0.05, 0.3), bright_range=(0.6, 0.95)),
    ClassLook("gravel-ochre", "gravel", 0.7, (18.0, 66.0), dark_range=(0.0, 0.15), bright_range=(0.8, 1.0)),
    ClassLook("grass-green", "grass", 0.6, (54.0, 145.0), dark_range=(0.15, 0.35), bright_range=(0.6, 0.85)),
    ClassLook("crater-teal", "moon", 0.6, (130.0, 208.0), dark_range=(0.25, 0.45), bright_range=(0.65, 0.95)),
    ClassLook("checker-blue", "checkerboard", 0.4, (192.0, 258.0), dark_range=(0.05, 0.3), bright_range=(0.7, 1.0)),
    ClassLook("coin-violet", "coins", 0.35, (240.0, 352.0), dark_range=(0.1, 0.35), bright_range=(0.6, 0.95)),
)
SYNTHETIC_CLASSES: tuple[str, ...] = ("background",) + tuple(look.name for look in CLASS_LOOKS)

# Background material per variant: (skimage.data name, texture scale). Colour photos are
# partly desaturated; grey ones are tinted.
_STANDARD_BACKGROUNDS = (("text", 0.6), ("page", 0.5), ("cell", 0.5), ("microaneurysms", 1.0))
_HOLDOUT_BACKGROUNDS = (
    ("camera", 0.5),
    ("clock", 0.6),
    ("coffee", 0.5),
    ("chelsea", 0.6),
    ("rocket", 0.5),
    ("astronaut", 0.5),
)
_STANDARD_RADIUS_FRACTION = (0.16, 0.30)  # object radius / min(height, width)
_HOLDOUT_RADIUS_FRACTION = (0.11, 0.36)  # sampled log-uniformly


def image_id(index: int) -> str:
    """The id of the index-th synthetic image."""
    return f"synth_{index:06d}"


def generate_dataset(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig(), label_mix: LabelMix | None = None) -> Path:
    """Write the synthetic dataset in the VOC layout under out_dir and return out_dir.

    Writes JPEGImages/, SegmentationClass/, Annotations/, scribbles/,
    ImageSets/Segmentation/{train,val,trainval}.txt, classes.txt and synthetic.json (the
    config, written last). Output of an earlier run in out_dir is replaced; a folder that
    holds a dataset not written by this function is refused. label_mix: each image keeps
    only its drawn group's weak labels (wsss_core.data.label_mix).
    """
    root = Path(out_dir)
    _clear_previous_output(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / _OWNER_MARKER).write_text("written by wsss_core.data.synthetic.generate_dataset\n")
    ids = [image_id(index) for index in range(config.n_images)]
    groups = assign_groups(config.n_images, label_mix, config.seed) if label_mix else None
    for index in range(config.n_images):
        sample = generate_sample(index, config)
        write_sample(root, keep_labels(sample, groups[index]) if groups else sample)
    train_ids, val_ids = split_ids(ids, config)
    split_dir = root / "ImageSets" / "Segmentation"
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train_ids), ("val", val_ids), ("trainval", ids)):
        (split_dir / f"{name}.txt").write_text("".join(f"{i}\n" for i in split))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in SYNTHETIC_CLASSES))
    metadata = {"config": config_to_dict(config), "config_hash": dataset_hash(config, label_mix),
                **mix_record(label_mix, ids, groups)}
    (root / "synthetic.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return root


def dataset_hash(config: object, label_mix: LabelMix | None) -> str:
    """What synthetic.json records as the dataset's identity: the config's hash, and the label mix's when there is one."""
    return config_hash(config, label_mix.describe()) if label_mix else config_hash(config)


def mix_record(label_mix: LabelMix | None, ids: list[str], groups: list[str] | None) -> dict:
    """synthetic.json's label mix and each image's group (none without a mix)."""
    if not label_mix or groups is None:
        return {}
    return {"label_mix": label_mix.describe(), "label_groups": dict(zip(ids, groups, strict=True))}


def split_ids(ids: list[str], config: SyntheticConfig) -> tuple[list[str], list[str]]:
    """Seeded train/val partition of ids; each list sorted."""
    n_val = min(len(ids) - 1, round(len(ids) * config.val_fraction)) if len(ids) > 1 else 0
    rng = _rng(config, _SPLIT_SEED_KEY)
    val = set(rng.permutation(len(ids))[:n_val].tolist())
    train_ids = [i for k, i in enumerate(ids) if k not in val]
    val_ids = [i for k, i in enumerate(ids) if k in val]
    return train_ids, val_ids


def generate_sample(index: int, config: SyntheticConfig = SyntheticConfig()) -> Sample:
    """Image number index, in memory, with gt, scribble, boxes and tags.

    Depends only on (config.seed, config.variant, index, size, object counts, void_border),
    not on n_images. The image is the one before JPEG encoding.
    """
    rng = _rng(config, index)
    height, width = config.height, config.width
    background = _render_background(rng, height, width, config.variant)
    instance_map, instance_classes = _layout_objects(rng, config)
    image = background
    for instance, class_index in enumerate(instance_classes, start=1):
        visible = instance_map == instance
        rows, cols = np.nonzero(visible)
        image[rows, cols] = _object_colours(rng, CLASS_LOOKS[class_index - 1], rows, cols, height, width)
    image = _finish_image(rng, image)
    gt = gt_from_instances(instance_map, instance_classes, config.void_border)
    scribble = _draw_scribbles(rng, instance_map, instance_classes, gt)
    boxes = instance_boxes(instance_map, instance_classes)
    tags = sorted({int(c) for c in np.unique(gt) if c not in (0, IGNORE_INDEX)})
    return Sample(image_id(index), image, gt=gt, scribble=scribble, boxes=boxes, tags=tags)


def write_sample(root: Path, sample: Sample, class_names: tuple[str, ...] = SYNTHETIC_CLASSES) -> None:
    """Write one sample's JPEG, GT PNG, scribble PNG (when it has one) and VOC XML (objects named by
    class_names: its boxes, or its tags without a <bndbox> when it has no boxes) under root."""
    if sample.gt is None:
        raise ValueError(f"{sample.image_id}: a synthetic sample needs gt")
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample.image).save(
        root / "JPEGImages" / f"{sample.image_id}.jpg", quality=95, optimize=False
    )
    save_palette_png(root / "SegmentationClass" / f"{sample.image_id}.png", sample.gt)
    if sample.scribble is not None:
        save_palette_png(root / "scribbles" / f"{sample.image_id}.png", sample.scribble)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    height, width = sample.image.shape[:2]
    path = root / "Annotations" / f"{sample.image_id}.xml"
    _write_voc_xml(path, sample.image_id, width, height, sample.boxes, class_names, [] if sample.boxes else sample.tags)


def gt_from_instances(instance_map: np.ndarray, instance_classes: list[int], void_border: int) -> np.ndarray:
    """Class-index GT with a void_border-px band of 255 wherever the instance id changes."""
    class_of_instance = np.asarray([0, *instance_classes], dtype=np.uint8)
    gt = class_of_instance[instance_map]
    if void_border > 0:
        size = void_border + 1  # a window of n px straddles an edge at n-1 positions
        changes = ndimage.maximum_filter(instance_map, size=size, mode="nearest") != ndimage.minimum_filter(
            instance_map, size=size, mode="nearest"
        )
        gt[changes] = IGNORE_INDEX
    return gt


def instance_boxes(instance_map: np.ndarray, instance_classes: list[int]) -> list[Box]:
    """Tight box (x1/y1 exclusive) of each instance's visible pixels, in instance order."""
    boxes = []
    for instance, class_index in enumerate(instance_classes, start=1):
        rows, cols = np.nonzero(instance_map == instance)
        boxes.append(Box(class_index, int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    return boxes


# --- output folder --------------------------------------------------------------------


def _clear_previous_output(root: Path) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise BadInputError(root, "exists and is not a folder")
    present = [name for name in _MANAGED_ENTRIES if (root / name).exists()]
    if present and not (root / _OWNER_MARKER).exists():
        raise BadInputError(root, f"holds {present} not written by generate_dataset; refusing to overwrite")
    for name in present:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _write_voc_xml(
    path: Path, stem: str, width: int, height: int, boxes: list[Box], class_names: tuple[str, ...], tags: Sequence[int] = ()
) -> None:
    """VOC XML of the boxes, then one <object> without a <bndbox> per tag (an image tagged only)."""
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "synthetic"
    ET.SubElement(annotation, "filename").text = f"{stem}.jpg"
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(annotation, "segmented").text = "1"
    for box in boxes:
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = class_names[box.class_index]
        ET.SubElement(obj, "pose").text = "Unspecified"
        truncated = box.x0 == 0 or box.y0 == 0 or box.x1 == width or box.y1 == height
        ET.SubElement(obj, "truncated").text = str(int(truncated))
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        # VOC: 1-based, inclusive
        for tag, value in (("xmin", box.x0 + 1), ("ymin", box.y0 + 1), ("xmax", box.x1), ("ymax", box.y1)):
            ET.SubElement(bndbox, tag).text = str(value)
    for class_index in tags:
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = class_names[class_index]
    ET.indent(annotation)
    ET.ElementTree(annotation).write(path, encoding="utf-8")


# --- randomness and textures ----------------------------------------------------------


def _rng(config: SyntheticConfig, key: int) -> np.random.Generator:
    sequence = np.random.SeedSequence(config.seed, spawn_key=(_VARIANT_SEED_KEYS[config.variant], key))
    return np.random.default_rng(sequence)


def _size_factor(height: int, width: int) -> float:
    return min(height, width) / _REFERENCE_SIDE


@lru_cache(maxsize=64)
def _texture(name: str, scale: float) -> np.ndarray:
    """skimage.data image name, rescaled (anti-aliased) and stretched to [0, 1] float32.

    HxW for grey images, HxWx3 for colour ones.
    """
    raw = np.asarray(getattr(skimage_data, name)(), dtype=np.float32)
    if raw.ndim == 3:
        raw = raw[..., :3]
    scaled = rescale(raw, scale, anti_aliasing=True, channel_axis=-1 if raw.ndim == 3 else None, preserve_range=True)
    low, high = np.percentile(scaled, (1, 99))
    return np.clip((scaled - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def _sample_texture(
    rng: np.random.Generator, texture: np.ndarray, rows: np.ndarray, cols: np.ndarray, zoom_range: tuple[float, float]
) -> np.ndarray:
    """Texture values at pixel positions under a random rotation, zoom and offset (mirrored tiling)."""
    zoom = rng.uniform(*zoom_range)
    angle = rng.uniform(0.0, np.pi)
    offset_y, offset_x = rng.uniform(0, texture.shape[0]), rng.uniform(0, texture.shape[1])
    cos, sin = np.cos(angle), np.sin(angle)
    texture_rows = (cos * rows - sin * cols) / zoom + offset_y
    texture_cols = (sin * rows + cos * cols) / zoom + offset_x
    coords = np.stack([texture_rows, texture_cols]).astype(np.float32)
    if texture.ndim == 2:
        return ndimage.map_coordinates(texture, coords, order=1, mode="mirror")
    channels = [ndimage.map_coordinates(texture[..., c], coords, order=1, mode="mirror") for c in range(3)]
    return np.stack(channels, axis=-1)


def _hue_rgb(hue_degrees: float) -> np.ndarray:
    """The fully saturated, full-value RGB colour of a hue."""
    h = (hue_degrees / 360.0) % 1.0
    rgb = [abs(h * 6 - 3) - 1, 2 - abs(h * 6 - 2), 2 - abs(h * 6 - 4)]
    return np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)


def _tint(gray: np.ndarray, hue: float, saturation: float, dark: float, bright: float) -> np.ndarray:
    """HSV colouring of a [0, 1] grey texture: value from the texture, hue and saturation fixed."""
    value = dark + (bright - dark) * gray
    chroma = (1.0 - saturation) + saturation * _hue_rgb(hue)
    return value[..., None] * chroma


def _object_colours(
    rng: np.random.Generator, look: ClassLook, rows: np.ndarray, cols: np.ndarray, height: int, width: int
) -> np.ndarray:
    factor = _size_factor(height, width)
    texture = _texture(look.texture, round(look.texture_scale * factor, 2))
    gray = _sample_texture(rng, texture, rows, cols, (0.75, 1.35))
    return _tint(
        gray,
        rng.uniform(*look.hue_range),
        rng.uniform(*look.saturation_range),
        rng.uniform(*look.dark_range),
        rng.uniform(*look.bright_range),
    )


# --- backgrounds ----------------------------------------------------------------------


def _render_background(rng: np.random.Generator, height: int, width: int, variant: Variant) -> np.ndarray:
    """HxWx3 float image in [0, 1]: a tinted texture or photo, a colour gradient, distractor blobs."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    choices = _STANDARD_BACKGROUNDS if variant == "standard" else _HOLDOUT_BACKGROUNDS
    first, second = rng.choice(len(choices), size=2, replace=False)
    material_a, texture = _background_material(rng, *choices[first], rows, cols)
    material_b, _ = _background_material(rng, *choices[second], rows, cols)
    # two materials in irregular patches
    patches = _smooth_noise(rng, (height, width), min(height, width) / 8)
    mix = np.clip(0.5 + patches, 0.0, 1.0)[..., None]
    material = mix * material_a + (1 - mix) * material_b
    ramp = _linear_ramp(rng, rows, cols) if variant == "standard" else _radial_ramp(rng, rows, cols)
    colour_a, colour_b = (_random_colour(rng, 0.6) for _ in range(2))
    gradient = colour_a * (1 - ramp[..., None]) + colour_b * ramp[..., None]
    weight = rng.uniform(0.2, 0.55)
    image = (1 - weight) * material + weight * gradient
    _add_distractors(rng, image, texture, variant)
    return image


def _background_material(
    rng: np.random.Generator, name: str, scale: float, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A tinted grey texture or a partly desaturated photo over the whole frame, and the
    grey texture it came from."""
    texture = _texture(name, round(scale * _size_factor(*rows.shape), 2))
    material = _sample_texture(rng, texture, rows, cols, (0.7, 1.4))
    if material.ndim == 2:
        hue, saturation = rng.uniform(0, 360), rng.uniform(0.0, 0.45)
        tinted = _tint(material, hue, saturation, rng.uniform(0.05, 0.4), rng.uniform(0.6, 0.95))
        return tinted, texture
    gray = material.mean(axis=-1, keepdims=True)
    return gray + rng.uniform(0.3, 0.9) * (material - gray), texture.mean(axis=-1)


def _random_colour(rng: np.random.Generator, max_saturation: float) -> np.ndarray:
    value = rng.uniform(0.3, 0.9)
    saturation = rng.uniform(0, max_saturation)
    return value * ((1 - saturation) + saturation * _hue_rgb(rng.uniform(0, 360)))


def _smooth_noise(rng: np.random.Generator, shape: Shape, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit std, made on a coarse grid and upsampled."""
    step = max(1.0, sigma / 3)
    coarse_shape = (int(np.ceil(shape[0] / step)) + 2, int(np.ceil(shape[1] / step)) + 2)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), sigma / step)
    coarse /= max(float(coarse.std()), 1e-6)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) / step
    return ndimage.map_coordinates(coarse, [rows, cols], order=1)


def _linear_ramp(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * cols + np.sin(angle) * rows
    return (t - t.min()) / max(float(t.max() - t.min()), 1e-6)


def _radial_ramp(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    centre_y, centre_x = rng.uniform(0, rows.shape[0]), rng.uniform(0, rows.shape[1])
    distance = np.hypot(rows - centre_y, cols - centre_x)
    return distance / max(float(distance.max()), 1e-6)


def _add_distractors(rng: np.random.Generator, image: np.ndarray, texture: np.ndarray, variant: Variant) -> None:
    """Small background blobs in object-class colours but background texture (standard: ellipses,
    holdout: thin strips)."""
    height, width = image.shape[:2]
    side = min(height, width)
    for _ in range(rng.integers(2, 7)):
        radius = side * rng.uniform(0.025, 0.07)
        centre = (rng.uniform(0, height), rng.uniform(0, width))
        if variant == "standard":
            mask = _ellipse_mask((height, width), centre, radius, radius * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi))
        else:
            mask = _superellipse_mask(
                (height, width), centre, radius * 2.5, radius * rng.uniform(0.25, 0.45), rng.uniform(0, np.pi), 8.0
            )
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        look = CLASS_LOOKS[rng.integers(len(CLASS_LOOKS))]
        gray = 0.5 + 0.5 * _sample_texture(rng, texture, rows, cols, (0.7, 1.4))
        hue, saturation = rng.uniform(*look.hue_range), rng.uniform(0.4, 0.9)
        image[rows, cols] = _tint(gray, hue, saturation, 0.1, rng.uniform(0.5, 0.95))


def _finish_image(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Mild blur and noise, then uint8."""
    blurred = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.3, 0.8),) * 2 + (0,))
    noisy = blurred + rng.normal(0.0, rng.uniform(0.008, 0.025), size=image.shape)
    return np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)


# --- shapes ---------------------------------------------------------------------------

def _rotated_coords(shape: Shape, centre: Centre, angle: float) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    dy, dx = rows - centre[0], cols - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


def _ellipse_mask(shape: Shape, centre: Centre, semi_a: float, semi_b: float, angle: float) -> np.ndarray:
    u, v = _rotated_coords(shape, centre, angle)
    return (u / semi_a) ** 2 + (v / semi_b) ** 2 <= 1.0


def _superellipse_mask(
    shape: Shape, centre: Centre, semi_a: float, semi_b: float, angle: float, exponent: float
) -> np.ndarray:
    u, v = _rotated_coords(shape, centre, angle)
    return np.abs(u / semi_a) ** exponent + np.abs(v / semi_b) ** exponent <= 1.0


def _polygon_mask(shape: Shape, centre: Centre, angles: np.ndarray, radii: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(centre[0] + radii * np.sin(angles), centre[1] + radii * np.cos(angles), shape)
    mask[rr, cc] = True
    return mask


def _random_ellipse(rng: np.random.Generator, shape: Shape, centre: Centre, radius: float) -> np.ndarray:
    semi_a = radius * rng.uniform(0.75, 1.0)
    return _ellipse_mask(shape, centre, semi_a, semi_a * rng.uniform(0.45, 1.0), rng.uniform(0, np.pi))


def _random_polygon(rng: np.random.Generator, shape: Shape, centre: Centre, radius: float) -> np.ndarray:
    """Star-convex polygon with 5-9 jittered vertices."""
    n = int(rng.integers(5, 10))
    step = 2 * np.pi / n
    angles = np.arange(n) * step + rng.uniform(-0.3, 0.3, n) * step + rng.uniform(0, 2 * np.pi)
    return _polygon_mask(shape, centre, angles, radius * rng.uniform(0.55, 1.0, n))


def _random_blob(rng: np.random.Generator, shape: Shape, centre: Centre, radius: float) -> np.ndarray:
    """Thresholded smoothed noise under a radial envelope; the piece holding the centre."""
    u, v = _rotated_coords(shape, centre, rng.uniform(0, np.pi))
    envelope = 1.0 - (u / radius) ** 2 - (v / (radius * rng.uniform(0.6, 1.0))) ** 2
    mask = envelope + 0.45 * _smooth_noise(rng, shape, radius / 3) > 0
    labels, _ = ndimage.label(mask)
    row = int(np.clip(centre[0], 0, shape[0] - 1))
    col = int(np.clip(centre[1], 0, shape[1] - 1))
    if labels[row, col] == 0:
        return _random_ellipse(rng, shape, centre, radius)
    return labels == labels[row, col]


def _random_rounded_rectangle(rng: np.random.Generator, shape: Shape, centre: Centre, radius: float) -> np.ndarray:
    semi_a = radius * rng.uniform(0.75, 1.0)
    return _superellipse_mask(
        shape, centre, semi_a, semi_a * rng.uniform(0.4, 0.9), rng.uniform(0, np.pi), rng.uniform(3.0, 6.0)
    )


def _random_star(rng: np.random.Generator, shape: Shape, centre: Centre, radius: float) -> np.ndarray:
    points = int(rng.integers(4, 8))
    angles = np.arange(2 * points) * np.pi / points + rng.uniform(0, 2 * np.pi)
    radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * rng.uniform(0.4, 0.6))
    return _polygon_mask(shape, centre, angles, radii)


def _random_crescent(rng: np.random.Generator, shape: Shape, centre: Centre, radius: float) -> np.ndarray:
    outer = _ellipse_mask(shape, centre, radius, radius, 0.0)
    direction = rng.uniform(0, 2 * np.pi)
    shift = radius * rng.uniform(0.4, 0.65)
    bite_centre = (centre[0] + shift * np.sin(direction), centre[1] + shift * np.cos(direction))
    bite_radius = radius * rng.uniform(0.6, 0.8)
    return outer & ~_ellipse_mask(shape, bite_centre, bite_radius, bite_radius, 0.0)


ShapeMaker = Callable[[np.random.Generator, Shape, Centre, float], np.ndarray]
_SHAPE_FAMILIES: dict[str, tuple[ShapeMaker, ...]] = {
    "standard": (_random_ellipse, _random_polygon, _random_blob),
    "holdout": (_random_rounded_rectangle, _random_star, _random_crescent),
}


def _layout_objects(rng: np.random.Generator, config: SyntheticConfig) -> tuple[np.ndarray, list[int]]:
    """Instance map (0 = background, k = k-th object, later ones in front) and each object's class.

    Layouts where an object is barely visible are redrawn, so every object keeps room for
    a scribble and a non-void GT region.
    """
    shape = (config.height, config.width)
    side = min(shape)
    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    makers = _SHAPE_FAMILIES[config.variant]
    min_core_area = max(12, round(40 * config.height * config.width / _REFERENCE_AREA))
    for _ in range(200):
        if config.variant == "standard":
            radii = side * rng.uniform(*_STANDARD_RADIUS_FRACTION, n_objects)
        else:
            radii = side * np.exp(rng.uniform(*np.log(_HOLDOUT_RADIUS_FRACTION), n_objects))
        radii = np.sort(radii)[::-1]  # big objects at the back
        instance_map = np.zeros(shape, dtype=np.uint8)
        areas = []
        for instance, radius in enumerate(radii, start=1):
            centre = (rng.uniform(0.15, 0.85) * shape[0], rng.uniform(0.15, 0.85) * shape[1])
            mask = makers[rng.integers(len(makers))](rng, shape, centre, float(radius))
            instance_map[mask] = instance
            areas.append(int(mask.sum()))
        classes = [int(c) for c in rng.integers(1, len(SYNTHETIC_CLASSES), n_objects)]
        gt = gt_from_instances(instance_map, classes, config.void_border)
        if all(
            (instance_map == k).sum() >= 0.35 * area and _stroke_core(instance_map == k, gt).sum() >= min_core_area
            for k, area in enumerate(areas, start=1)
        ):
            return instance_map, classes
    raise RuntimeError(f"could not place {n_objects} visible objects on a {shape} image; use fewer or larger")


# --- scribbles ------------------------------------------------------------------------


def _stroke_core(region: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Where a 3-px stroke's centre line may run: 2 px inside the region's non-void pixels."""
    allowed = region & (gt != IGNORE_INDEX)
    return ndimage.binary_erosion(allowed, iterations=2)


def _draw_scribbles(
    rng: np.random.Generator, instance_map: np.ndarray, instance_classes: list[int], gt: np.ndarray
) -> np.ndarray:
    """1-2 random-walk strokes per object and 2-4 on the background, 3 px wide; 255 elsewhere."""
    scribble = np.full(gt.shape, IGNORE_INDEX, dtype=np.uint8)
    side = min(gt.shape)
    regions = [(instance_map == 0, 0, int(rng.integers(2, 5)), side * 0.05)]
    for instance, class_index in enumerate(instance_classes, start=1):
        region = instance_map == instance
        step = max(3.0, 0.15 * float(np.sqrt(region.sum())))
        regions.append((region, class_index, int(rng.integers(1, 3)), step))
    for region, class_index, n_strokes, step in regions:
        core = _stroke_core(region, gt)
        if not core.any():
            continue
        for _ in range(n_strokes):
            centre_line = _random_walk(rng, core, int(rng.integers(4, 10)), step)
            stroke = ndimage.binary_dilation(centre_line, structure=np.ones((3, 3), dtype=bool))
            scribble[stroke & region & (gt != IGNORE_INDEX)] = class_index
    return scribble


def _random_walk(rng: np.random.Generator, core: np.ndarray, n_steps: int, step: float) -> np.ndarray:
    """A polyline with smoothly turning heading whose every pixel lies in core."""
    path = np.zeros(core.shape, dtype=bool)
    rows, cols = np.nonzero(core)
    start = rng.integers(rows.size)
    point = (int(rows[start]), int(cols[start]))
    path[point] = True
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(n_steps):
        for attempt in range(8):
            candidate = heading + rng.normal(0, 0.5) if attempt < 3 else rng.uniform(0, 2 * np.pi)
            target = (int(round(point[0] + step * np.sin(candidate))), int(round(point[1] + step * np.cos(candidate))))
            if not (0 <= target[0] < core.shape[0] and 0 <= target[1] < core.shape[1]):
                continue
            rr, cc = line(*point, *target)
            if core[rr, cc].all():
                break
        else:
            break
        path[rr, cc] = True
        point, heading = target, candidate
    return path
