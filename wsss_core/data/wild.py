"""A family of procedurally varied synthetic datasets: every seed is a different dataset.

The built-in dataset (synthetic.py) has six fixed classes, each a tinted grey texture;
methods tuned on it can overfit its look. Here the seed draws the dataset itself:

- 3 to 7 object classes, each a *material*: an untinted crop of a colour photo (fur,
  coffee, hair, rocket, tissue, ...), a grey photo texture in natural colours, or a
  procedural texture (fractal noise, stripes, cells, spots) with random parameters;
- backgrounds of 1 to 3 materials none of the classes uses, in irregular regions, with
  a lighting gradient, and clutter: object-like shapes made of
  background materials (things no tag names);
- objects of every shape family, at log-uniform scales (small to a third of the frame),
  1 to 4 per image, partly occluding each other; image sizes vary around the requested size.

Same VOC layout, GT (void border), scribbles, boxes and tags as synthetic.py. Tune on a few
seeds, report on a seed you never tuned on: the class looks, their number and the
backgrounds all change with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from wsss_core.config import config_to_dict
from wsss_core.data.label_mix import LabelMix, assign_groups, keep_labels
from wsss_core.data.sample import IGNORE_INDEX, Sample
from wsss_core.errors import UsageError
from wsss_core.data.synthetic import (
    _OWNER_MARKER,
    _SHAPE_FAMILIES,
    _clear_previous_output,
    _draw_scribbles,
    _finish_image,
    _sample_texture,
    _smooth_noise,
    _stroke_core,
    _texture,
    dataset_hash,
    gt_from_instances,
    image_id,
    instance_boxes,
    mix_record,
    write_sample,
)

# Colour photos of skimage.data that load offline, and grey textures: the material pool.
_COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")
_GREY_TEXTURES = ("brick", "gravel", "grass", "moon", "coins", "cell", "camera", "clock", "page", "text")
_PROCEDURAL = ("fractal", "stripes", "cells", "spots")
_ALL_SHAPES = tuple(maker for family in _SHAPE_FAMILIES.values() for maker in family)
_CLASS_NAMES = ("amber", "bluebell", "coral", "denim", "ember", "fern", "granite", "heather")


@dataclass(frozen=True)
class WildConfig:
    """Which dataset of the family (seed), how many images and about how big."""

    n_images: int = 200
    width: int = 256
    height: int = 192
    seed: int = 0
    size_jitter: float = 0.0  # each image's sides vary by up to this fraction (0: all the given size)
    void_border: int = 2
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.width < 64 or self.height < 64:
            raise ValueError(f"wild images must be at least 64x64, got {self.width}x{self.height}")
        if not 0.0 <= self.size_jitter < 0.5:
            raise ValueError(f"size_jitter must lie in [0, 0.5), got {self.size_jitter}")


@dataclass(frozen=True)
class Material:
    """How a region is coloured: a source (photo, grey texture or procedural kind) and its parameters."""

    kind: str  # "photo", "grey" or one of _PROCEDURAL
    source: str  # photo / texture name, or the procedural kind
    scale: float  # texture rescale at 192 px
    palette: tuple[tuple[float, float, float], ...]  # 2 RGB colours: dark and bright ends (grey, procedural)
    params: tuple[float, ...] = ()  # procedural parameters
    colour_jitter: float = 0.08  # per-instance colour shift


@dataclass(frozen=True)
class DatasetLook:
    """What one seed's dataset looks like: its classes' and its backgrounds' materials."""

    class_names: tuple[str, ...]  # without background
    class_materials: tuple[Material, ...]
    background_materials: tuple[Material, ...]


def dataset_look(config: WildConfig) -> DatasetLook:
    """The seed's classes (3-7) and background materials, all distinct sources."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(7, 0)))
    n_classes = int(rng.integers(3, 8))
    pool = [("photo", name) for name in _COLOUR_PHOTOS] + [("grey", name) for name in _GREY_TEXTURES]
    pool += [(kind, kind) for kind in _PROCEDURAL for _ in range(2)]  # procedural kinds may repeat, params differ
    order = rng.permutation(len(pool))
    picked = [pool[i] for i in order]
    class_materials = tuple(_random_material(rng, kind, source) for kind, source in picked[:n_classes])
    n_background = int(rng.integers(3, 6))
    background = tuple(_random_material(rng, kind, source) for kind, source in picked[n_classes : n_classes + n_background])
    names = tuple(str(n) for n in rng.permutation(_CLASS_NAMES)[:n_classes])
    return DatasetLook(names, class_materials, background)


def _random_palette(rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    hue = rng.uniform(0, 1)
    dark = _hsv(hue + rng.normal(0, 0.05), rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.4))
    bright = _hsv(hue + rng.normal(0, 0.08), rng.uniform(0.1, 0.8), rng.uniform(0.55, 1.0))
    return (dark, bright)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    h = h % 1.0
    rgb = np.clip([abs(h * 6 - 3) - 1, 2 - abs(h * 6 - 2), 2 - abs(h * 6 - 4)], 0, 1)
    colour = v * ((1 - s) + s * rgb)
    return (float(colour[0]), float(colour[1]), float(colour[2]))


def _random_material(rng: np.random.Generator, kind: str, source: str) -> Material:
    scale = float(rng.uniform(0.3, 0.9))
    params: tuple[float, ...] = ()
    if kind == "fractal":
        params = (float(rng.uniform(2, 12)), float(rng.uniform(0.4, 0.8)))  # base size px, persistence
    elif kind == "stripes":
        params = (float(rng.uniform(4, 16)), float(rng.uniform(0, np.pi)), float(rng.uniform(0.0, 0.6)))  # period, angle, wobble
    elif kind == "cells":
        params = (float(rng.uniform(6, 20)),)  # cell size
    elif kind == "spots":
        params = (float(rng.uniform(2, 6)), float(rng.uniform(0.05, 0.3)))  # spot radius, density
    return Material(kind, source, scale, _random_palette(rng), params, float(rng.uniform(0.03, 0.12)))


def paint(rng: np.random.Generator, material: Material, rows: np.ndarray, cols: np.ndarray, side: int) -> np.ndarray:
    """(n, 3) colours of the material at the given pixels, with a random placement and colour shift."""
    factor = side / 192
    if material.kind == "photo":
        texture = _texture(material.source, round(material.scale * factor * 1.5, 2))
        colours = _sample_texture(rng, texture, rows, cols, (0.8, 1.25))
    else:
        if material.kind == "grey":
            grey = _sample_texture(rng, _texture(material.source, round(material.scale * factor, 2)), rows, cols, (0.75, 1.35))
        else:
            grey = _procedural(rng, material, rows, cols, factor)
        dark, bright = (np.asarray(c, dtype=np.float32) for c in material.palette)
        colours = dark + grey[:, None] * (bright - dark)
    shift = rng.normal(0, material.colour_jitter, 3).astype(np.float32)
    return np.clip(colours * rng.uniform(0.85, 1.15) + shift, 0.0, 1.0)


def _procedural(rng: np.random.Generator, material: Material, rows: np.ndarray, cols: np.ndarray, factor: float) -> np.ndarray:
    """A [0, 1] grey procedural texture at the pixels (computed on their bounding box)."""
    top, left = int(rows.min()), int(cols.min())
    shape = (int(rows.max()) - top + 1, int(cols.max()) - left + 1)
    r, c = rows - top, cols - left
    if material.kind == "fractal":
        base, persistence = material.params
        field = np.zeros(shape, np.float32)
        for octave in range(4):
            field += persistence**octave * _smooth_noise(rng, shape, max(1.0, base * factor / 2**octave))
        grey = field[r, c]
    elif material.kind == "stripes":
        period, angle, wobble = material.params
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) / (period * factor)
        phase += wobble * _smooth_noise(rng, shape, period * factor * 2)
        grey = (0.5 + 0.5 * np.sin(2 * np.pi * phase))[r, c]
    elif material.kind == "cells":
        (size,) = material.params
        n_points = max(4, int(shape[0] * shape[1] / (size * factor) ** 2))
        points = rng.uniform(0, 1, (n_points, 2)) * np.asarray(shape)
        values = rng.uniform(0, 1, n_points).astype(np.float32)
        nearest = ndimage.distance_transform_edt(
            _seed_image(shape, points), return_distances=False, return_indices=True
        )
        index = _point_index(shape, points)[nearest[0], nearest[1]]
        grey = values[index][r, c]
    else:  # spots
        radius, density = material.params
        noise = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), radius * factor)
        threshold = np.quantile(noise, 1 - density)
        grey = (noise > threshold).astype(np.float32)[r, c] * 0.8 + 0.2 * rng.random(r.shape).astype(np.float32)
    low, high = np.percentile(grey, (1, 99)) if grey.size > 1 else (0.0, 1.0)
    return np.clip((grey - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


def _seed_image(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """False at the (clipped) points, True elsewhere: the input of a nearest-point transform."""
    image = np.ones(shape, dtype=bool)
    rr = np.clip(points[:, 0].astype(int), 0, shape[0] - 1)
    cc = np.clip(points[:, 1].astype(int), 0, shape[1] - 1)
    image[rr, cc] = False
    return image


def _point_index(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    index = np.zeros(shape, dtype=np.int64)
    rr = np.clip(points[:, 0].astype(int), 0, shape[0] - 1)
    cc = np.clip(points[:, 1].astype(int), 0, shape[1] - 1)
    index[rr, cc] = np.arange(len(points))
    return index


def _image_size(rng: np.random.Generator, config: WildConfig) -> tuple[int, int]:
    if config.size_jitter == 0:
        return config.height, config.width
    scale = np.exp(rng.uniform(np.log(1 - config.size_jitter), np.log(1 + config.size_jitter)))
    return max(64, round(config.height * scale)), max(64, round(config.width * scale))


def _background(rng: np.random.Generator, look: DatasetLook, shape: tuple[int, int]) -> np.ndarray:
    """1-3 background materials in irregular regions, a lighting gradient and clutter shapes."""
    side = min(shape)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    rows, cols = rows.ravel(), cols.ravel()
    n = int(rng.integers(1, 4))
    chosen = rng.choice(len(look.background_materials), size=min(n, len(look.background_materials)), replace=False)
    layers = [paint(rng, look.background_materials[i], rows, cols, side).reshape(*shape, 3) for i in chosen]
    image = layers[0]
    for layer in layers[1:]:
        region = _smooth_noise(rng, shape, side / rng.uniform(3, 8)) > rng.uniform(-0.5, 0.5)
        image = np.where(region[..., None], layer, image)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = image * (1 - rng.uniform(0.0, 0.45) * ramp)[..., None]
    for _ in range(int(rng.integers(0, 5))):  # clutter: object-like shapes of background material
        mask = _ALL_SHAPES[rng.integers(len(_ALL_SHAPES))](
            rng, shape, (rng.uniform(0, shape[0]), rng.uniform(0, shape[1])), side * float(np.exp(rng.uniform(np.log(0.04), np.log(0.18))))
        )
        r, c = np.nonzero(mask)
        if r.size:
            material = look.background_materials[rng.integers(len(look.background_materials))]
            image[r, c] = paint(rng, material, r, c, side)
    return image


def _layout(rng: np.random.Generator, look: DatasetLook, shape: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Instance map and classes: 1-4 objects of any shape, log-uniform sizes, big ones behind."""
    side = min(shape)
    min_core_area = max(12, round(40 * shape[0] * shape[1] / (256 * 192)))
    for _ in range(200):
        n_objects = int(rng.integers(1, 5))
        radii = np.sort(side * np.exp(rng.uniform(np.log(0.09), np.log(0.34), n_objects)))[::-1]
        instance_map = np.zeros(shape, dtype=np.uint8)
        areas = []
        for instance, radius in enumerate(radii, start=1):
            centre = (rng.uniform(0.12, 0.88) * shape[0], rng.uniform(0.12, 0.88) * shape[1])
            mask = _ALL_SHAPES[rng.integers(len(_ALL_SHAPES))](rng, shape, centre, float(radius))
            instance_map[mask] = instance
            areas.append(int(mask.sum()))
        classes = [int(c) for c in rng.integers(1, len(look.class_names) + 1, n_objects)]
        gt = gt_from_instances(instance_map, classes, 2)
        if all(
            area > 0 and (instance_map == k).sum() >= 0.35 * area and _stroke_core(instance_map == k, gt).sum() >= min_core_area
            for k, area in enumerate(areas, start=1)
        ):
            return instance_map, classes
    raise RuntimeError(f"could not place visible objects on a {shape} image")


def generate_wild_sample(index: int, config: WildConfig, look: DatasetLook | None = None) -> Sample:
    """Image number index of the seed's dataset, with gt, scribble, boxes and tags."""
    look = look or dataset_look(config)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(7, 1, index)))
    shape = _image_size(rng, config)
    image = _background(rng, look, shape)
    instance_map, classes = _layout(rng, look, shape)
    side = min(shape)
    for instance, class_index in enumerate(classes, start=1):
        rows, cols = np.nonzero(instance_map == instance)
        image[rows, cols] = paint(rng, look.class_materials[class_index - 1], rows, cols, side)
    image = _finish_image(rng, image)
    gt = gt_from_instances(instance_map, classes, config.void_border)
    scribble = _draw_scribbles(rng, instance_map, classes, gt)
    tags = sorted({int(c) for c in np.unique(gt) if c not in (0, IGNORE_INDEX)})
    return Sample(image_id(index), image, gt=gt, scribble=scribble, boxes=instance_boxes(instance_map, classes), tags=tags)


def generate_wild_dataset(out_dir: str | Path, config: WildConfig = WildConfig(), label_mix: LabelMix | None = None) -> Path:
    """Write the seed's dataset in the VOC layout (as synthetic.generate_dataset) under out_dir."""
    root = Path(out_dir)
    _clear_previous_output(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / _OWNER_MARKER).write_text("written by wsss_core.data.wild.generate_wild_dataset\n")
    look = dataset_look(config)
    ids = [image_id(i) for i in range(config.n_images)]
    groups = assign_groups(config.n_images, label_mix, config.seed) if label_mix else None
    for index in range(config.n_images):
        sample = generate_wild_sample(index, config, look)
        write_sample(root, keep_labels(sample, groups[index]) if groups else sample, ("background",) + look.class_names)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(7, 2)))
    n_val = min(len(ids) - 1, round(len(ids) * config.val_fraction)) if len(ids) > 1 else 0
    val = set(rng.permutation(len(ids))[:n_val].tolist())
    split_dir = root / "ImageSets" / "Segmentation"
    split_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": [i for k, i in enumerate(ids) if k not in val], "val": [i for k, i in enumerate(ids) if k in val], "trainval": ids}
    for name, split in splits.items():
        (split_dir / f"{name}.txt").write_text("".join(f"{i}\n" for i in split))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in ("background",) + look.class_names))
    metadata = {
        "config": config_to_dict(config), "config_hash": dataset_hash(config, label_mix), "family": "wild",
        **mix_record(label_mix, ids, groups),
        "classes": [{"name": n, "material": m.kind, "source": m.source} for n, m in zip(look.class_names, look.class_materials)],
        "background": [{"material": m.kind, "source": m.source} for m in look.background_materials],
    }
    (root / "synthetic.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return root


VARIANTS = ("standard", "holdout", "wild")


def variant_config(variant: str, n_images: int, width: int, height: int, seed: int) -> Any:
    """The generator config of a variant: WildConfig for "wild", else SyntheticConfig."""
    if variant == "wild":
        return WildConfig(n_images=n_images, width=width, height=height, seed=seed)
    if variant not in VARIANTS:
        raise UsageError(f"variant {variant!r}: choose {', '.join(VARIANTS)}")
    from wsss_core.data.synthetic import SyntheticConfig

    return SyntheticConfig(n_images=n_images, width=width, height=height, seed=seed, variant=variant)  # type: ignore[arg-type]


def generate_variant(
    out_dir: str | Path, variant: str, n_images: int, width: int, height: int, seed: int, label_mix: LabelMix | None = None
) -> Path:
    """`wsss generate`: the built-in dataset ("standard", "holdout") or the seed's "wild" dataset;
    label_mix: which weak labels each image keeps (default: all of them)."""
    config = variant_config(variant, n_images, width, height, seed)
    if variant == "wild":
        return generate_wild_dataset(out_dir, config, label_mix)
    from wsss_core.data.synthetic import generate_dataset

    return generate_dataset(out_dir, config, label_mix)


def ensure_variant(
    out_dir: str | Path, variant: str, n_images: int, width: int, height: int, seed: int, label_mix: LabelMix | None = None
) -> bool:
    """Generate the dataset into out_dir unless it already holds exactly that one; True when it
    wrote it. synthetic.json (written last) says what a folder holds; a folder holding another
    generated dataset is refused (a workspace must not mix two), as is one holding a dataset
    the generator did not write."""
    root = Path(out_dir)
    config = variant_config(variant, n_images, width, height, seed)
    record = root / "synthetic.json"
    if record.is_file():
        try:
            found = json.loads(record.read_text())
        except ValueError:
            found = {}
        if found.get("config_hash") == dataset_hash(config, label_mix):
            return False
        held = found.get("config") or {}
        raise UsageError(
            f"{root}: holds another generated dataset ({held.get('n_images', '?')} images of "
            f"{held.get('width', '?')}x{held.get('height', '?')}, variant {held.get('variant', 'wild' if found.get('family') else '?')}, "
            f"seed {held.get('seed', '?')}) than the one asked for ({n_images} images of {width}x{height}, "
            f"variant {variant}, seed {seed}): choose another folder, or remove it"
        )
    generate_variant(root, variant, n_images, width, height, seed, label_mix)  # refuses a folder it did not write
    return True
