"""When a dataset-level model is fitted again: the rule for images that join late.

A dataset-level stage (the shared GCN, the CAM classifier, AffinityNet) learns from every
image that was ready when it ran. Images can join afterwards: a retried failure, a
re-ingested image, a dataset that grew. The rule:

    a late image is served by the model as it is kept (its later stages run with it),
    until the images served this way exceed `late_fraction` of the images the model kept
    when it was fitted; then the model is fitted again on every ready image, and
    everything after it is recomputed.

"Served" is the stage task's choice. The shared GCN fits itself again with the late
images and serves them that model (a clean run's model, in seconds), so its rule only
bounds how far the images done earlier drift from a clean run. The trainings have no
cheap equivalent, and late images served by networks trained without them lost more
than the training noise (benchmarks/late_images_psa.py), so their rows use a fraction
of 0: any late image trains them again (flows/affinitynet.py).
"""

from __future__ import annotations

from dataclasses import dataclass

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
