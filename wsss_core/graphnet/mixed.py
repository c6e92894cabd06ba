"""GraphNet over a mixed dataset: every image seeded by the weak labels it has, one shared GCN.

A real dataset labels a few images with scribbles or boxes and most only with tags. Each
image's graph is seeded by what it carries: its scribble (the strongest), its boxes, both at
once (the scribble's nodes keep their class, the boxes seed the rest and bound the classes
of every other node), or, with neither, the confident labels of its CAM (the tags path's seeds).
With the offline preset (one GCN fitted on every image's seeds labels every node) the drawn
labels teach the tag-only images in two steps: a GCN fitted on the drawn images' seeds only
labels every image, a tag-only image keeps the CAM seeds that GCN agrees with (agreed_seeds:
CAM seeds are guesses, and a wrong guess taught to the shared GCN spreads to every image), and
the shared GCN is fitted on all those seeds.

pseudo/mixed is then each image's mask from its strongest labels, by a GCN that learned from
labels at least as strong as the image's own: a person-drawn full mask (the ingested "manual"
array) where there is one; for a scribbled image, the GCN fitted on the scribbled images (with
their boxes, where they have some); for a boxed one, the GCN fitted on the scribbled and boxed
images; for a tag-only image, the shared GCN's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsss_core.errors import BadInputError
from wsss_core.graphnet.seeds import (
    BoxSeedConfig,
    NodeSeeds,
    ScribbleSeedConfig,
    TagSeedConfig,
    seeds_from_affinity_labels,
    seeds_from_boxes,
    seeds_from_scribbles,
)


@dataclass(frozen=True)
class MixedSeedConfig:
    """Each kind's own seeding config (GraphNetConfig's scribble_seeds, box_seeds, tag_seeds)."""

    scribbles: ScribbleSeedConfig = ScribbleSeedConfig()
    boxes: BoxSeedConfig = BoxSeedConfig()
    tags: TagSeedConfig = TagSeedConfig()


def combine_seeds(strong: NodeSeeds, bounds: NodeSeeds) -> NodeSeeds:
    """One graph's seeds from a scribble (strong) and boxes (bounds): the scribble's class wins
    where both seed a node, the boxes seed the rest; a node may take the classes the boxes allow
    it (background and the boxes it touches: a scribble may miss an object, a box does not) and
    always its own seed's class."""
    if strong.labels.shape != bounds.labels.shape or strong.num_classes != bounds.num_classes:
        raise ValueError("seeds of one image must agree on nodes and classes")
    labels = np.where(strong.labelled, strong.labels, bounds.labels)
    candidates = bounds.candidates.copy()
    seeded = np.flatnonzero(labels >= 0)
    candidates[seeded, labels[seeded]] = True
    return NodeSeeds(labels=labels, candidates=candidates)


def mixed_seeds(
    superpixels: np.ndarray,
    num_classes: int,
    tags: np.ndarray,
    config: MixedSeedConfig = MixedSeedConfig(),
    scribble: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    affinity_labels: np.ndarray | None = None,
) -> NodeSeeds:
    """An image's seeds from its strongest labels: scribble and boxes combined, either alone, or
    (neither given, or an empty box list) its tags' confident CAM labels."""
    has_boxes = boxes is not None and len(boxes) > 0
    found = []
    if scribble is not None:
        found.append(seeds_from_scribbles(superpixels, scribble, num_classes, config.scribbles))
    if has_boxes:
        found.append(seeds_from_boxes(superpixels, boxes, num_classes, config.boxes))
    if not found:
        if affinity_labels is None:
            raise BadInputError("affinity-labels", "an image with tags only needs its affinity labels")
        return seeds_from_affinity_labels(superpixels, tags, num_classes, config.tags, affinity_labels)
    seeds = found[0] if len(found) == 1 else combine_seeds(found[0], found[1])
    return seeds


def agreed_seeds(cam_seeds: NodeSeeds, drawn_probabilities: np.ndarray) -> NodeSeeds:
    """A tag-only image's seeds in a mixed dataset: the nodes where its CAM's confident label and
    the GCN fitted on the drawn images' seeds (scribbles, boxes) give the same class. Two
    sources that learned from different labels rarely agree by mistake; a node where they
    disagree is left open. Where they agree nowhere, the CAM's seeds stay."""
    if drawn_probabilities.shape != cam_seeds.candidates.shape:
        raise BadInputError("nodes", f"probabilities of shape {drawn_probabilities.shape} for seeds of {cam_seeds.candidates.shape}")
    predicted = np.where(cam_seeds.candidates, drawn_probabilities, -np.inf).argmax(axis=1)
    labels = np.where(cam_seeds.labelled & (predicted == cam_seeds.labels), cam_seeds.labels, -1)
    if not (labels >= 0).any():
        return cam_seeds
    return NodeSeeds(labels=labels, candidates=cam_seeds.candidates)


def seed_source(has_scribble: bool, has_boxes: bool) -> str:
    """Which labels seed an image's graph: "boxes+scribbles", "scribbles", "boxes" or "tags"."""
    return "+".join(kind for kind, present in (("boxes", has_boxes), ("scribbles", has_scribble)) if present) or "tags"


def strongest_mask(
    manual: np.ndarray | None, tiers: Sequence[np.ndarray | None], shared_mask: np.ndarray
) -> tuple[np.ndarray, str]:
    """pseudo/mixed of one image and where it came from: the person-drawn full mask when there is
    one (it outranks every weak label); else the first mask of tiers (the GCN fitted on the
    scribbled images, for a scribbled image; the one fitted on the scribbled and boxed images,
    for a boxed one: weaker labels never outvote an image's own); else the shared GCN's."""
    if manual is not None:
        if manual.shape != shared_mask.shape:
            raise BadInputError("manual", f"mask of shape {manual.shape} for an image of {shared_mask.shape}")
        return manual.astype(np.uint8, copy=False), "manual"
    for index, mask in enumerate(tiers):
        if mask is not None:
            return mask, f"tier-{index}"
    return shared_mask, "shared"
