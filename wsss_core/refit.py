"""When a dataset-level model is fitted again: the rule for images that join late.

A dataset-level stage (the shared GCN, the CAM classifier, AffinityNet) learns from every
image that was ready when it ran. Images can join afterwards: a retried failure, a
re-ingested image, a dataset that grew. The rule:

    a late image is served by the model as it is kept (its later stages run with it),
    until the images served this way exceed `late_fraction` of the images the model kept
    when it was fitted; then the model is fitted again on every ready image, and
    everything after it is recomputed.

An image fitted on whose input changed since (ingest made it not done) is late too, and
an image fitted on that left the dataset counts like one (ModelDrift): a model never
drifts further than the rule allows from what a clean run of the dataset as it is now fits.

"Served" is the stage task's choice. The shared GCN fits itself again with the late
images and serves them that model (a clean run's model, in seconds), so its rule only
bounds how far the images done earlier drift from a clean run. The trainings have no
cheap equivalent, and late images served by networks trained without them lost more
than the training noise (benchmarks/late_images_psa.py), so their rows use a fraction
of 0: any late image trains them again (flows/affinitynet.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsss_core.store import Workspace

DEFAULT_LATE_FRACTION = 0.10


@dataclass(frozen=True)
class RefitRule:
    late_fraction: float = DEFAULT_LATE_FRACTION

    def __post_init__(self) -> None:
        if not 0 <= self.late_fraction:
            raise ValueError(f"late_fraction must be >= 0, got {self.late_fraction}")

    def needs_refit(self, fitted_on: int, served_late: int) -> bool:
        """True when a model fitted on `fitted_on` images should be fitted again, given that
        `served_late` images (counting the ones joining now) would otherwise use it unfitted."""
        if fitted_on <= 0:
            return True
        return served_late > self.late_fraction * fitted_on


@dataclass(frozen=True)
class ModelDrift:
    """How far the images a dataset-level model serves have moved from the ones it was fitted on."""

    joined: int = 0  # new images, and refused ones now retried
    changed: int = 0  # fitted on, but an input changed since (ingest made them not done)
    removed: int = 0  # fitted on, no longer in the dataset
    served_late: int = 0  # joined after the fit and served since

    @property
    def total(self) -> int:
        return self.joined + self.changed + self.removed + self.served_late

    def describe(self) -> str:
        parts = [(self.changed, "changed"), (self.removed, "removed"), (self.joined, "joined"),
                 (self.served_late, "joined earlier")]
        return ", ".join(f"{count} {what}" for count, what in parts if count) or "nothing changed"


def model_drift(ws: Workspace, stage: str, key: str, fitted_on: int, done: set[str], late: list[str]) -> ModelDrift:
    """Count, against the images the model was fitted on (Workspace.record_fit; older fits: the
    images done then), the images that joined or changed since and those that left the dataset."""
    fitted = ws.fitted_ids(stage, key)
    current = set(ws.image_ids())
    if fitted is None:  # fitted before these records: every done image but the late ones was fitted on
        return ModelDrift(joined=len(late), removed=len(done - current), served_late=max(0, len(done) - fitted_on))
    changed = [i for i in late if i in fitted]
    return ModelDrift(
        joined=len(late) - len(changed), changed=len(changed), removed=len(fitted - current),
        served_late=len((done & current) - fitted),
    )
