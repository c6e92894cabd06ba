"""Which stages a changed input reaches: the lineage of the pipeline tables.

Every stage a workspace ran recorded what its row reads (Workspace.begin_stage): earlier
stages ("superpixels", "seeds/scribbles") and ingested arrays ("images", "scribbles",
"boxes", "tags", "gt"). A changed array of one image makes that image stale in every stage
that reads it, directly or through other stages, and in no other: a fixed scribble reaches
seeds/scribbles and what follows it, not the superpixels; a changed GT mask reaches no stage
(only the scores, which follow the ingest marker).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def affected_stages(reads: Mapping[str, Iterable[str]], changed: set[str]) -> list[str]:
    """The stages that read any of `changed` (array or stage names), directly or through
    other stages of `reads` (stage -> what it reads), sorted."""
    reads = {stage: set(inputs) for stage, inputs in reads.items()}
    affected: set[str] = set()
    frontier = set(changed)
    while frontier:
        reached = {stage for stage, inputs in reads.items() if stage not in affected and inputs & frontier}
        affected |= reached
        frontier = reached
    return sorted(affected)
