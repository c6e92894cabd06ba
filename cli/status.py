"""`wsss status`: what each stage of the workspace did (no Prefect, no server start)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wsss_core.confidence import DEFAULT_MEASURE, has_scores, read_confidence, worst
from wsss_core.errors import WorkspaceError
from wsss_core.manual import manual_ids
from wsss_core.store import INGEST_STAGE, Workspace, split_counts


MASK_PREFIX = "pseudo/"


def print_status(workspace: Path, all_failures: bool = False, worst_n: int = 3) -> None:
    console = Console(stderr=True, soft_wrap=True)
    ws = Workspace(workspace)
    if not ws.exists():
        raise WorkspaceError(f"{workspace}: no workspace here (run `wsss ingest` first)")
    dataset = ws.dataset
    console.print(
        f"workspace {workspace}: dataset {dataset.get('name')} ({len(dataset.get('classes', []))} classes, "
        f"splits {', '.join(ws.splits()) or '-'}), {len(ws.image_ids())} images"
    )
    for line in change_lines(ws) + label_group_lines(ws):
        console.print(line)
    drawn = manual_ids(ws)
    if drawn:
        shown = ", ".join(drawn[:10]) + (", ..." if len(drawn) > 10 else "")
        console.print(escape(f"manual masks: {len(drawn)} image{'s' if len(drawn) != 1 else ''} ({shown}): a person's masks, used in place of every "
                             "mask set's, left out of the lowest-confidence lists"))
    table = Table("stage", "config", "done", "failed", "pending", "warnings", "note")
    for stage in ws.stages():
        st = ws.status(stage)
        note = "stale: an input stage has since changed config" if st.stale else ""
        table.add_row(stage, st.key or "-", str(st.done), str(st.failed), str(st.pending), str(len(ws.warnings(stage))), note)
        for split, counts in split_counts(ws, stage).items():
            table.add_row(f"  {split}", "", str(counts.done), str(counts.failed), str(counts.pending), "", "")
    console.print(table)
    print_confidence(console, ws, worst_n)
    missing = ws.unrecorded_splits()
    if missing:
        commands = " and ".join(f"`wsss ingest --split {s}`" for s in missing)
        console.print(f"[yellow]splits {', '.join(missing)}: their images are not recorded; re-run {commands}[/yellow]")
    limit = None if all_failures else 20
    for stage in ws.stages():
        failures = ws.failures(stage)
        if failures:
            console.print(f"[red]{stage}: {len(failures)} failed[/red]")
            for record in failures[:limit]:
                console.print(escape(f"  {record.image_id} [{record.kind}] {record.message}"))  # not markup
            if limit is not None and len(failures) > limit:
                console.print(f"  ... {len(failures) - limit} more (--all lists them)")


def label_group_lines(ws: Workspace) -> list[str]:
    """A mixed dataset's images by the weak labels they carry (a path counts only its own images)."""
    groups = Counter(ws.label_group(image_id) for image_id in ws.image_ids())
    if len(groups) < 2:
        return []
    return ["label groups: " + ", ".join(f"{n} {group}" for group, n in sorted(groups.items()))]


def change_lines(ws: Workspace) -> list[str]:
    """What the last ingest found changed, and the images whose arrays wait for `wsss gc`."""
    lines = []
    changes = (ws.stage_meta(INGEST_STAGE) or {}).get("changes")
    if changes:
        lines.append("last ingest: " + ", ".join(f"{changes[k]} {k}" for k in ("changed", "new", "removed", "unchanged")))
    dropped = ws.dropped_ids()
    if dropped:
        lines.append(f"{len(dropped)} image(s) no split lists any more are in no result; their arrays stay until "
                     f"`wsss gc --workspace {ws.path}`")
    return lines


def print_confidence(console: Console, ws: Workspace, worst_n: int) -> None:
    """Per mask stage: the median confidence of its done images and the lowest ones (check those by
    hand; an image with a manual mask is not listed: a person drew it already)."""
    drawn = set(manual_ids(ws))
    for stage in ws.stages():
        if not stage.startswith(MASK_PREFIX):
            continue
        scores = read_confidence(ws, stage)
        if not scores:
            continue
        if not has_scores(scores):
            console.print(f"{stage}: no confidence (a baseline without class probabilities, or masks written before scores were)")
            continue
        values = [v for v in scores.values() if v is not None]
        undrawn = {image_id: value for image_id, value in scores.items() if image_id not in drawn}
        lowest = ", ".join(f"{image_id} {value:.2f}" for image_id, value in worst(undrawn, worst_n))
        console.print(
            escape(f"{stage}: confidence ({DEFAULT_MEASURE}) median {float(np.median(values)):.2f} "
                   f"over {len(values)} images" + (f"; lowest: {lowest}" if lowest else ""))
        )
