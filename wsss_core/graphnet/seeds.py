"""Seed labels of superpixel nodes from scribbles, boxes or image tags (GraphNet).

Scribbles: a node touched by a scribble takes its majority class. Boxes: pixels outside
every box are background; inside a box, the box-crop CAM of its class thresholded at
0.75 plus a centre prior covering 10% of the box seed that class; nodes vote. Tags: the
AffinityNet path's confident labels (CAM foreground at alpha 4, background at alpha 32,
each dCRF'd; the rest neutral) seed the nodes that are mostly confident.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.errors import BadInputError

UNLABELLED = -1
BACKGROUND = 0


@dataclass(frozen=True)
class NodeSeeds:
    """labels: (n,) int64, -1 = unlabelled. candidates: (n, C) bool, classes a node may take."""

    labels: np.ndarray
    candidates: np.ndarray

    def __post_init__(self) -> None:
        if self.labels.ndim != 1 or self.candidates.ndim != 2:
            raise ValueError("labels must be (n,) and candidates (n, C)")
        if self.candidates.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"{self.labels.shape[0]} labels but {self.candidates.shape[0]} candidate rows"
            )

    @property
    def n_nodes(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.candidates.shape[1])

    @property
    def labelled(self) -> np.ndarray:
        """Boolean (n,) mask of seeded nodes."""
        return self.labels >= 0


@dataclass(frozen=True)
class BoxSeedConfig:
    """Box seeding (GraphNet): CAM threshold 0.75 and a centre prior on 10% of the box area.

    background_outside_fraction: a node votes background only when at least this share
    of its pixels lies outside every box, so superpixels straddling a box edge stay open.
    """

    cam_threshold: float = 0.75
    centre_fraction: float = 0.1
    background_outside_fraction: float = 0.95


@dataclass(frozen=True)
class ScribbleSeedConfig:
    """drawn_classes_only: a node may only take a class some scribble of its image was drawn
    with (scribbles name the classes present, as image tags would)."""

    drawn_classes_only: bool = True


@dataclass(frozen=True)
class TagSeedConfig:
    """min_confident_share: a node is a seed only when at least this share of its pixels is
    confident (not neutral) in the affinity labels; it then takes their majority. At 0.5 a
    seed is a node whose pixels are mostly confident: a superpixel straddling an object's
    uncertain rim (neutral there) stays open for the GCN to decide, while nodes well inside
    an object or the background seed it. An image where no node reaches it is seeded by its
    nodes of the highest share (so a weak CAM still gives seeds, never none).

    scribbles: where an image of a tags dataset has a scribble (a reviewer's correction,
    `wsss review import`), the nodes it touches take its class over the CAM's, and its classes
    join the image's candidates. Off by default: on a dataset that has scribbles for every
    image, the tags path would otherwise stop being a tags path.
    """

    min_confident_share: float = 0.5
    scribbles: bool = False


def seeds_from_scribbles(
    superpixels: np.ndarray, scribble: np.ndarray, num_classes: int, config: ScribbleSeedConfig = ScribbleSeedConfig()
) -> NodeSeeds:
    """The seeds stage for scribbles (SUPERVISIONS["scribbles"])."""
    seeds = scribble_seeds(superpixels, scribble, num_classes, int(superpixels.max()) + 1)
    return drawn_classes_only(seeds) if config.drawn_classes_only else seeds


def seeds_from_boxes(
    superpixels: np.ndarray, boxes: np.ndarray, num_classes: int, config: BoxSeedConfig = BoxSeedConfig()
) -> NodeSeeds:
    """The seeds stage for boxes (SUPERVISIONS["boxes"]); no CAM (the centre prior seeds the objects)."""
    return box_seeds(superpixels, boxes, num_classes, None, config, int(superpixels.max()) + 1)


def seeds_from_affinity_labels(
    superpixels: np.ndarray,
    tags: np.ndarray,
    num_classes: int,
    config: TagSeedConfig = TagSeedConfig(),
    affinity_labels: np.ndarray | None = None,
    scribble: np.ndarray | None = None,
) -> NodeSeeds:
    """The seeds stage for image tags (SUPERVISIONS["tags"]).

    affinity_labels: HxW uint8 of the affinity-labels stage (0 background, class c, 255
    neutral). A node takes the majority confident label of its pixels when they are at
    least config.min_confident_share confident, else it is unlabelled. Candidates are
    background plus the image's tags, so no node can take a class the image lacks (a
    confident label outside the tags, which CAMs of tagged classes never give, is ignored).
    scribble: HxW (255 undrawn) corrections that override the CAM's seeds (TagSeedConfig.scribbles).
    """
    labels_map = _check_superpixels(superpixels)
    if affinity_labels is None:
        raise BadInputError("affinity-labels", "the tags seeds need the affinity labels of the image")
    confident_map = np.asarray(affinity_labels)
    if confident_map.shape != labels_map.shape:
        raise BadInputError("affinity-labels", f"shape {confident_map.shape} != superpixels {labels_map.shape}")
    tags = np.asarray(tags).astype(np.int64).ravel()
    if tags.size and (tags.min() < 1 or tags.max() >= num_classes):
        raise BadInputError("tags", f"tags {tags.tolist()} are not foreground classes 1..{num_classes - 1}")
    n_nodes = _count_nodes(labels_map, None)
    allowed = np.zeros(num_classes, dtype=bool)
    allowed[[BACKGROUND, *tags.tolist()]] = True

    values = confident_map.astype(np.int64)
    confident = values != IGNORE_INDEX
    confident[confident] = allowed[np.minimum(values[confident], num_classes - 1)] & (values[confident] < num_classes)
    counts = _class_counts(labels_map[confident], values[confident], n_nodes, num_classes)
    size = np.bincount(labels_map.ravel(), minlength=n_nodes)
    share = counts.sum(axis=1) / np.maximum(size, 1)
    labels = _majority(counts)
    # an image whose labels are mostly neutral (a weak CAM) still seeds its most confident
    # nodes rather than none: the threshold drops to the best share the image has
    labels[share < min(config.min_confident_share, share.max(initial=0.0))] = UNLABELLED
    if scribble is not None:
        drawn = scribble_seeds(labels_map, scribble, num_classes, n_nodes).labels
        labels = np.where(drawn >= 0, drawn, labels)  # a person's stroke outranks the CAM
        allowed[np.unique(drawn[drawn >= 0])] = True
    return NodeSeeds(labels=labels, candidates=np.broadcast_to(allowed, (n_nodes, num_classes)).copy())


def scribble_seeds(
    superpixels: np.ndarray, scribble: np.ndarray, num_classes: int, n_nodes: int | None = None
) -> NodeSeeds:
    """A node takes the majority class of the scribble pixels in it (255 ignored; ties -> smaller class)."""
    labels_map = _check_superpixels(superpixels)
    scribble = np.asarray(scribble)
    if scribble.shape != labels_map.shape:
        raise BadInputError("scribble", f"shape {scribble.shape} != superpixels {labels_map.shape}")
    n_nodes = _count_nodes(labels_map, n_nodes)
    drawn = scribble != IGNORE_INDEX
    classes = scribble[drawn].astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise BadInputError("scribble", f"class values outside 0..{num_classes - 1} (and 255)")
    counts = _class_counts(labels_map[drawn], classes, n_nodes, num_classes)
    return NodeSeeds(
        labels=_majority(counts), candidates=np.ones((n_nodes, num_classes), dtype=bool)
    )


def drawn_classes_only(seeds: NodeSeeds) -> NodeSeeds:
    """Candidates limited to the classes some seed node carries (the image's scribbled classes)."""
    drawn = np.zeros(seeds.num_classes, dtype=bool)
    drawn[np.unique(seeds.labels[seeds.labelled])] = True
    return NodeSeeds(labels=seeds.labels, candidates=seeds.candidates & drawn[None, :])


def box_owner_map(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW int64: index of the box a pixel belongs to, -1 outside every box.

    Where boxes overlap the smaller box wins (equal areas: the later box).
    """
    boxes = _clip_boxes(boxes, shape)
    owner = np.full(shape, -1, dtype=np.int64)
    areas = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    for index in np.argsort(-areas, kind="stable"):  # largest first, smaller painted on top
        _, x0, y0, x1, y1 = boxes[index]
        owner[y0:y1, x0:x1] = index
    return owner


def box_pixel_seeds(
    boxes: np.ndarray,
    shape: tuple[int, int],
    num_classes: int,
    cam: np.ndarray | None = None,
    config: BoxSeedConfig = BoxSeedConfig(),
) -> np.ndarray:
    """HxW int64 pixel seeds from boxes: class index, or -1 = unlabelled (inside a box, unsure).

    cam: (C, H, W) with channel c = class c (channel 0 unused). Each box uses its class's
    CAM cropped to the box and divided by the crop's maximum, so the threshold is relative
    to the box as in the paper's box-crop CAM.
    """
    boxes = _clip_boxes(boxes, shape)
    _check_box_classes(boxes, num_classes)
    if cam is not None:
        cam = np.asarray(cam, dtype=np.float64)
        if cam.shape != (num_classes, *shape):
            raise BadInputError("cam", f"expected shape {(num_classes, *shape)}, got {cam.shape}")
    owner = box_owner_map(boxes, shape)
    seeds = np.where(owner < 0, BACKGROUND, UNLABELLED).astype(np.int64)
    for index, (class_index, x0, y0, x1, y1) in enumerate(boxes):
        owned = owner[y0:y1, x0:x1] == index
        seeded = _centre_prior(y1 - y0, x1 - x0, config.centre_fraction)
        if cam is not None:
            crop = cam[class_index, y0:y1, x0:x1]
            peak = crop.max()
            if peak > 0:
                seeded |= crop / peak >= config.cam_threshold
        seeds[y0:y1, x0:x1][owned & seeded] = class_index
    return seeds


def box_seeds(
    superpixels: np.ndarray,
    boxes: np.ndarray,
    num_classes: int,
    cam: np.ndarray | None = None,
    config: BoxSeedConfig = BoxSeedConfig(),
    n_nodes: int | None = None,
) -> NodeSeeds:
    """Node seeds from boxes (n, 5) int32 [class, x0, y0, x1, y1], x1/y1 exclusive.

    Label = majority of the node's seeded pixels, background counting only for nodes
    (almost) entirely outside every box. Candidates = background plus the classes of the
    boxes the node's pixels touch.
    """
    labels_map = _check_superpixels(superpixels)
    n_nodes = _count_nodes(labels_map, n_nodes)
    boxes = _clip_boxes(boxes, labels_map.shape)
    pixel_seeds = box_pixel_seeds(boxes, labels_map.shape, num_classes, cam, config)

    seeded = pixel_seeds >= 0
    counts = _class_counts(labels_map[seeded], pixel_seeds[seeded], n_nodes, num_classes)
    outside_every_box = (box_owner_map(boxes, labels_map.shape) < 0).ravel()
    outside = np.bincount(labels_map.ravel(), weights=outside_every_box, minlength=n_nodes)
    size = np.bincount(labels_map.ravel(), minlength=n_nodes)
    mostly_inside = outside < config.background_outside_fraction * np.maximum(size, 1)
    counts[mostly_inside, BACKGROUND] = 0

    candidates = np.zeros((n_nodes, num_classes), dtype=bool)
    candidates[:, BACKGROUND] = True
    for class_index, x0, y0, x1, y1 in boxes:
        candidates[np.unique(labels_map[y0:y1, x0:x1]), class_index] = True
    return NodeSeeds(labels=_majority(counts), candidates=candidates)


def _centre_prior(height: int, width: int, fraction: float) -> np.ndarray:
    """Boolean (height, width) mask: a centred rectangle of `fraction` of the box area (same aspect)."""
    mask = np.zeros((height, width), dtype=bool)
    if fraction <= 0:
        return mask
    scale = np.sqrt(fraction)
    prior_h = min(height, max(1, round(height * scale)))
    prior_w = min(width, max(1, round(width * scale)))
    top, left = (height - prior_h) // 2, (width - prior_w) // 2
    mask[top : top + prior_h, left : left + prior_w] = True
    return mask


def _class_counts(nodes: np.ndarray, classes: np.ndarray, n_nodes: int, num_classes: int) -> np.ndarray:
    """(n, C) int64 pixel counts of each class per node."""
    flat = nodes.astype(np.int64) * num_classes + classes.astype(np.int64)
    return np.bincount(flat, minlength=n_nodes * num_classes).reshape(n_nodes, num_classes)


def _majority(counts: np.ndarray) -> np.ndarray:
    """Argmax class per node (ties -> smaller index), -1 where the node has no votes."""
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), UNLABELLED).astype(np.int64)


def _clip_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, 5) int64 boxes clipped to the image; an empty box is bad input."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise BadInputError("boxes", f"expected (n, 5) [class, x0, y0, x1, y1], got shape {boxes.shape}")
    boxes = boxes.astype(np.int64)
    height, width = shape
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, width)
    boxes[:, [2, 4]] = boxes[:, [2, 4]].clip(0, height)
    empty = (boxes[:, 3] <= boxes[:, 1]) | (boxes[:, 4] <= boxes[:, 2])
    if empty.any():
        first = int(np.argmax(empty))
        raise BadInputError("boxes", f"box {first} is empty inside the {height}x{width} image")
    return boxes


def _check_box_classes(boxes: np.ndarray, num_classes: int) -> None:
    classes = boxes[:, 0]
    if classes.size and (classes.min() < 1 or classes.max() >= num_classes):
        raise BadInputError("boxes", f"box classes must be foreground 1..{num_classes - 1}")


def _check_superpixels(superpixels: np.ndarray) -> np.ndarray:
    labels = np.asarray(superpixels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise BadInputError("superpixels", f"expected an HxW integer map, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise BadInputError("superpixels", "negative label")
    return labels


def _count_nodes(labels_map: np.ndarray, n_nodes: int | None) -> int:
    present = int(labels_map.max()) + 1 if labels_map.size else 0
    if n_nodes is None:
        return present
    if n_nodes < present:
        raise BadInputError("superpixels", f"label {present - 1} but n_nodes={n_nodes}")
    return n_nodes
