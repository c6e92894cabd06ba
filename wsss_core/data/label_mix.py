"""Which weak labels each generated image keeps: `wsss generate --label-mix scribbles=0.2,boxes=0.2,tags=0.6`.

A real dataset mixes its labels: some images get scribbles, some boxes, most only tags. A
label mix gives each image one group of weak labels, drawn reproducibly from the dataset's
seed; the other kinds' files are not written. Tags are implied by every group (an image
with a scribble or a box knows which classes it shows): the annotation XML of every image
names its objects, with a <bndbox> only where the group has boxes. A group joins kinds with
"+": `scribbles+boxes=0.1` keeps both on a tenth of the images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from wsss_core.data.sample import Sample
from wsss_core.errors import UsageError

LABEL_KINDS = ("scribbles", "boxes", "tags")
_MIX_SEED_KEY = 11  # spawn-key slot of the label draw: no generator's image or split stream uses it


@dataclass(frozen=True)
class LabelMix:
    """Groups of weak labels ("scribbles", "boxes+scribbles", "tags", ...) and each one's share of the images."""

    shares: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.shares:
            raise UsageError("a label mix needs at least one group")
        for group, share in self.shares:
            if share < 0:
                raise UsageError(f"label mix: {group} has a negative share ({share})")
        total = sum(share for _, share in self.shares)
        if abs(total - 1.0) > 1e-6:
            raise UsageError(f"label mix: the shares add up to {total:g}, not 1")

    def describe(self) -> str:
        return ",".join(f"{group}={share:g}" for group, share in self.shares)


def normalise_group(text: str) -> str:
    """"boxes+scribbles" of "scribbles+boxes" (kinds sorted, tags implied and left out unless alone)."""
    kinds = {kind.strip() for kind in text.split("+") if kind.strip()}
    unknown = kinds - set(LABEL_KINDS)
    if not kinds or unknown:
        raise UsageError(f"label mix: {text!r} is not a group of {', '.join(LABEL_KINDS)} joined by '+'")
    kinds.discard("tags")
    return "+".join(sorted(kinds)) or "tags"


def parse_label_mix(text: str) -> LabelMix:
    """`scribbles=0.2,boxes=0.2,tags=0.6` -> LabelMix; a malformed mix is a UsageError naming it."""
    shares: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        group, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"label mix: {part.strip()!r} is not GROUP=SHARE (e.g. scribbles=0.2)")
        try:
            share = float(value)
        except ValueError:
            raise UsageError(f"label mix: share {value.strip()!r} of {group.strip()} is not a number") from None
        name = normalise_group(group)
        if name in shares:
            raise UsageError(f"label mix: group {name} is given twice")
        shares[name] = share
    return LabelMix(tuple(shares.items()))


def assign_groups(n_images: int, mix: LabelMix, seed: int) -> list[str]:
    """The label group of each of n_images images: each group's share of them, rounded by largest
    remainder (so the counts add up), spread over the images by a permutation drawn from seed."""
    exact = [share * n_images for _, share in mix.shares]
    counts = [int(np.floor(value)) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: n_images - sum(counts)]:
        counts[k] += 1
    groups = [group for (group, _), count in zip(mix.shares, counts) for _ in range(count)]
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_MIX_SEED_KEY,))).permutation(n_images)
    return [groups[k] for k in order]


def keep_labels(sample: Sample, group: str) -> Sample:
    """The sample with only its group's weak labels: no scribble unless the group has scribbles, no
    boxes unless it has boxes; tags and GT (for evaluation) stay."""
    kinds = set(group.split("+"))
    return replace(
        sample,
        scribble=sample.scribble if "scribbles" in kinds else None,
        boxes=list(sample.boxes) if "boxes" in kinds else [],
    )
