"""When a dataset-level model is fitted again: the rule for images that join late.

A dataset-level stage (the shared GCN, the CAM classifier, AffinityNet) learns from every
image that was ready when it ran. Images can join afterwards: a retried failure, a
re-ingested image, a dataset that grew. Refitting for each of them would recompute every
image's later stages; never refitting would let a model learn from an ever smaller part
of the data. The rule:

    a late image is served by the model as it is (its later stages run with it), until the
    images served this way exceed `late_fraction` of the images the model was fitted on;
    then the model is fitted again on every ready image, and everything after it is
    recomputed.

Why this is safe for quality: each path still adapts to the image itself after the shared
model (the GraphNet GCN trains per image on the image's own seeds, starting from the
shared one; the CAM classifier and AffinityNet are used as trained classifiers, which
is what they are for on unseen images). A model fitted on 90 % of the images differs
little from one fitted on all of them; tests/flows/test_retry.py checks that retried
images' masks stay within one mIoU point of a clean run.
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
