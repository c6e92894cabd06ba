"""Which masks a run ends on: a segmentation round's predictions are the pipeline's last word
only where they scored no worse than the masks they came from.

A round trains DeepLab on round k-1's masks and predicts every image; on a small dataset with
the CPU's short trainings it can end below its own labels (the demo: 91.8 -> 76.3 on val for
boxes). Where an evaluation measured that, the run says which of the method's mask sets to
take instead of letting the last round speak for it unnoticed. Without ground truth nothing
was measured and nothing is said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wsss_core.manual import NO_MANUAL
from wsss_core.registries import mask_round_of_stage, round_zero_stage

LABEL_GROUP = "labels:"  # the prefix of a label group's rows beside the splits' ("labels:tags")

# mIoU (a fraction) a last round may lose against an earlier mask set before it is called worse:
# half a point, below what a few dozen validation images resolve.
TOLERANCE = 0.005


@dataclass(frozen=True)
class WorseLastRound:
    """A method's last round that scored below an earlier mask set of it on one split."""

    stage: str
    split: str
    miou: float
    better: str  # the best earlier mask set of the same method (its pseudo masks or a round)
    better_miou: float

    def line(self) -> str:
        return (f"{self.stage} scored {100 * self.miou:.1f} mIoU on {self.split}, below {self.better} "
                f"({100 * self.better_miou:.1f}): the better masks of this method are {self.better}")


def worse_last_rounds(mious: Mapping[str, Mapping[str, float | None]]) -> list[WorseLastRound]:
    """mious: {mask stage: {split: mIoU}}. For each method with rounds, its last round on each
    split against the best of its earlier mask sets there (round 0 = the pseudo masks)."""
    lineages: dict[str, list[tuple[int, str]]] = {}
    for stage in mious:
        round_ = mask_round_of_stage(stage)
        if round_ is not None:
            lineages.setdefault(round_zero_stage(stage), []).append((round_, stage))
    found = []
    for members in lineages.values():
        members.sort()
        last = members[-1][1]
        for split, value in mious[last].items():
            if split.startswith(LABEL_GROUP) or split == NO_MANUAL:  # views of the splits' images: said there
                continue
            earlier = [(mious[stage].get(split), stage) for _, stage in members[:-1]]
            earlier = [(score, stage) for score, stage in earlier if score is not None]
            if value is None or not earlier:
                continue
            best_score, best = max(earlier)
            if value < best_score - TOLERANCE:
                found.append(WorseLastRound(last, split, value, best, best_score))
    return found


def evaluation_mious(results: Mapping[str, Mapping]) -> dict[str, dict[str, float | None]]:
    """{stage: {split: mIoU}} of an evaluation's results ({stage: scores, with "splits": {split:
    scores}}, as flows.evaluate returns them); a stage scored without splits counts as "all"."""
    return {
        stage: ({split: s.get("miou") for split, s in scores["splits"].items()} if scores.get("splits")
                else {"all": scores.get("miou")})
        for stage, scores in results.items()
    }
