"""`wsss report`: one self-contained HTML page about a workspace, for a person to open.

Sections: the dataset; the results (mIoU per mask set and round per split, best per column in
bold; IoU per class; the best method's confusion matrix); overlays of a sample of images and of
the worst images; per-stage counts, wall times and failures; the configs and the weights each
training actually loaded; the MLflow runs. Images are PNG data URIs (one file, nothing fetched
from the network), downscaled thumbnails to keep the page small.

`gather` reads the workspace (and its MLflow store, read-only) into a `Report`; `render_html`
turns that into the page. No Prefect here: the command starts no server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsss_core.errors import WorkspaceError
from wsss_core.last_word import worse_last_rounds
from wsss_core.manual import MANUAL, NO_MANUAL, manual_ids
from wsss_core.metrics import ConfusionMatrix, align_columns
from wsss_core.plots import colorize, draw_boxes, draw_scribbles, overlay_mask
from wsss_core.registries import mask_method_of_stage, mask_round_of_stage, mask_stage_order, round_zero_stage
from wsss_core.store import Workspace

REPORT_DIR = "reports"
REPORT_FILE = "report.html"
ALL_SPLITS = "all"  # the results column over every image
MAX_FAILURES = 50  # failed images listed per stage
MAX_RUNS = 60  # MLflow runs listed, newest first
THUMB_COLOURS = 64  # palette size of overlay thumbnails (0: true colour)


@dataclass(frozen=True)
class ReportConfig:
    sample: int = 8  # images in the overlay sample (the first ids, in order)
    worst: int = 8  # worst images shown for the best mask set
    thumb_side: int = 96  # longest side of each overlay panel, pixels
    mlflow: bool = True  # list the workspace's MLflow runs (read-only)


@dataclass
class StageRow:
    stage: str
    key: str
    done: int
    failed: int
    pending: int
    stale: bool
    wall_s: float | None  # None: not recorded (stages run before wall times were recorded)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (image, kind, message)


@dataclass
class Panel:
    name: str
    png: bytes | None  # None: not computed for this image
    note: str = ""


@dataclass
class ImageRow:
    image_id: str
    panels: list[Panel]
    score: str = ""  # what ranked it (worst section), e.g. "mIoU 41.2%"


@dataclass
class Report:
    workspace: str
    created: float
    dataset: dict[str, Any]
    split_counts: dict[str, int]
    n_images: int
    weak_labels: list[str]
    has_gt: bool
    classes: list[str]
    # results[stage][split] = ConfusionMatrix.to_dict() (split ALL_SPLITS: every image)
    results: dict[str, dict[str, dict]] = field(default_factory=dict)
    best_stage: str | None = None
    confusion_png: bytes | None = None
    sample: list[ImageRow] = field(default_factory=list)
    worst: list[ImageRow] = field(default_factory=list)
    worst_note: str = ""
    stages: list[StageRow] = field(default_factory=list)
    configs: dict[str, dict] = field(default_factory=dict)
    weights: dict[str, dict] = field(default_factory=dict)  # training stage -> weights record
    runs: list[dict[str, str]] = field(default_factory=list)
    runs_note: str = ""
    manual: list[str] = field(default_factory=list)  # images with a person's full mask (wsss_core.manual)


# ----------------------------------------------------------------------------- gathering


def gather(ws: Workspace, config: ReportConfig = ReportConfig()) -> Report:
    """Everything the page shows, read from the workspace."""
    ws.require()
    ids = ws.image_ids()
    split_counts = {}
    for split in ws.splits():
        try:
            split_counts[split] = len(ws.split_ids(split))
        except WorkspaceError:  # a split whose images are not recorded: counted as unknown
            split_counts[split] = -1
    has_gt = any(ws.has_array("gt", i) for i in ids)
    report = Report(
        workspace=str(ws.path), created=time.time(), dataset=dict(ws.dataset), split_counts=split_counts,
        n_images=len(ids), weak_labels=sorted(ws.weak_labels()), has_gt=has_gt, classes=list(ws.classes),
    )
    report.manual = manual_ids(ws, ids)
    report.results = evaluation_results(ws)
    report.best_stage = best_stage(report.results)
    if report.best_stage:
        matrix = np.asarray(overall(report.results[report.best_stage])["matrix"])
        from wsss_core.plots import confusion_figure

        report.confusion_png = figure_png(confusion_figure(matrix, report.classes, title=report.best_stage))
    masks = {stage: ws.done_ids(stage) for stage in mask_stages(ws)}  # each stage's finished images, listed once
    report.sample = [image_row(ws, i, masks, config) for i in ids[: config.sample]]
    focus = report.best_stage or next(iter(masks), None)
    if focus:
        ranked, report.worst_note = worst_images(ws, focus, ids)
        report.worst = [
            image_row(ws, image_id, masks, config, score) for image_id, score in ranked[: config.worst]
        ]
    report.stages = stage_rows(ws)
    for stage in ws.stages():
        meta = ws.stage_meta(stage) or {}
        report.configs[stage] = {"key": meta.get("key"), **{k: v for k, v in meta.items() if k not in ("key", "time", "upstream", "wall_s", "finished")}}
        weights = (meta.get("config") or {}).get("weights") if isinstance(meta.get("config"), dict) else None
        if isinstance(weights, dict):
            report.weights[stage] = weights
    if config.mlflow:
        report.runs, report.runs_note = mlflow_runs(ws)
    return report


def evaluation_results(ws: Workspace) -> dict[str, dict[str, dict]]:
    """{stage: {split: scores}} from reports/evaluation-*.json; a stage scored by several
    reports keeps the newest one's scores."""
    newest: dict[str, tuple[float, dict[str, dict]]] = {}
    for path in sorted((ws.path / REPORT_DIR).glob("evaluation-*.json")):
        try:
            payload = json.loads(path.read_text())
            stamp = float(payload.get("time", 0))
            results = payload["results"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WorkspaceError(f"{path}: not an evaluation report ({error})") from None
        scored = "+".join(payload.get("splits") or []) or ALL_SPLITS  # what the overall scores are over
        for stage, scores in results.items():
            if stage in newest and newest[stage][0] >= stamp:
                continue
            columns = {scored: {k: v for k, v in scores.items() if k != "splits"}}
            columns.update(scores.get("splits") or {})
            newest[stage] = (stamp, columns)
    return {stage: newest[stage][1] for stage in sorted(newest, key=mask_stage_order)}


def best_stage(results: dict[str, dict[str, dict]]) -> str | None:
    """The mask set with the highest mIoU over every image (None: nothing scored)."""
    scored = [(s["miou"], stage) for stage, cols in results.items() if (s := overall(cols)) and s.get("miou") is not None]
    return max(scored)[1] if scored else None


def overall(columns: dict[str, dict]) -> dict | None:
    """A stage's scores over every image it was scored on: the "all" column, else its first one
    (a report made with --split scores only those splits)."""
    return columns.get(ALL_SPLITS) or next(iter(columns.values()), None)


def mask_stages(ws: Workspace) -> list[str]:
    """The workspace's mask sets (pseudo masks and rounds) with finished masks, in pipeline order."""
    return sorted((s for s in ws.stages() if mask_method_of_stage(s) and ws.done_ids(s)), key=mask_stage_order)


def image_iou(ws: Workspace, stage: str, image_id: str) -> float:
    gt = ws.read_array("gt", image_id)
    return ConfusionMatrix(len(ws.classes)).update(ws.read_array(stage, image_id), gt).miou()


def worst_images(ws: Workspace, stage: str, image_ids: Sequence[str]) -> tuple[list[tuple[str, str]], str]:
    """The stage's images worst first, each with the score that ranked it, and a note saying how.

    With GT: by per-image mIoU. Without: by `confidence_ranking` (label-free), when available.
    """
    done = ws.done_ids(stage)
    with_gt = [i for i in image_ids if i in done and ws.has_array("gt", i)]
    if with_gt:
        scores = [(i, image_iou(ws, stage, i)) for i in with_gt]
        scores.sort(key=lambda item: (math.inf if math.isnan(item[1]) else item[1], item[0]))
        return [(i, f"mIoU {100 * s:.1f}%") for i, s in scores], f"{stage}: lowest per-image mIoU against GT first"
    ranked = confidence_ranking(ws, stage, [i for i in image_ids if i in done])
    if ranked is None:
        return [], f"{stage}: no GT, and no label-free confidence of pseudo masks yet to rank the images by"
    return [(i, f"confidence {c:.3f}") for i, c in ranked], f"{stage}: lowest label-free confidence first (no GT)"


def confidence_ranking(ws: Workspace, stage: str, image_ids: Sequence[str]) -> list[tuple[str, float]] | None:
    """Images of a mask stage ranked least confident first, by the label-free per-image score
    stored with its masks (wsss_core.confidence); None when none of them has one."""
    from wsss_core.confidence import read_confidence, worst

    ranked = worst(read_confidence(ws, stage, image_ids=image_ids), len(image_ids))
    return ranked or None


def image_row(ws: Workspace, image_id: str, masks: dict[str, set[str]], config: ReportConfig, score: str = "") -> ImageRow:
    """image | GT | each weak label drawn | each mask set's pseudo mask | each round's prediction."""
    image = ws.read_array("images", image_id)
    _, tags = weak_label_panel(ws, image_id, image, "tags")  # the tags: a note under the image
    panels = [Panel("image", thumbnail_png(image, config.thumb_side), tags)]
    if ws.has_array("gt", image_id):
        panels.append(Panel("ground truth", thumbnail_png(overlay_mask(image, ws.read_array("gt", image_id)), config.thumb_side)))
    if ws.has_array(MANUAL, image_id):
        panels.append(Panel("manual mask", thumbnail_png(overlay_mask(image, ws.read_array(MANUAL, image_id)), config.thumb_side),
                            "a person's: used in place of the pseudo masks"))
    for kind in ("scribbles", "boxes"):
        picture, _ = weak_label_panel(ws, image_id, image, kind)
        if picture is not None:
            panels.append(Panel(kind, thumbnail_png(picture, config.thumb_side)))
    for stage, finished in masks.items():
        done = image_id in finished
        round_ = mask_round_of_stage(stage)
        name = stage.removeprefix("pseudo/") if not round_ else f"{round_zero_stage(stage).removeprefix('pseudo/')} round {round_}"
        picture = overlay_mask(image, ws.read_array(stage, image_id)) if done else None
        panels.append(Panel(name, thumbnail_png(picture, config.thumb_side) if picture is not None else None))
    return ImageRow(image_id, panels, score)


def weak_label_panel(
    workspace: Workspace, image_id: str, image: np.ndarray, supervision: str | None
) -> tuple[np.ndarray | None, str]:
    """The image with its weak labels drawn (scribbles, boxes), or with its tags as a note."""
    if supervision in ("scribbles", "boxes") and workspace.has_array(supervision, image_id):
        labels = workspace.read_array(supervision, image_id)
        return (draw_scribbles(image, labels) if supervision == "scribbles" else draw_boxes(image, labels)), ""
    if supervision == "tags" and workspace.has_array("tags", image_id):
        tags = workspace.read_array("tags", image_id)
        names = [workspace.classes[int(t)] for t in tags if 0 <= int(t) < len(workspace.classes)]
        return image, "tags: " + (", ".join(names) or "none")
    return None, ""


def stage_rows(ws: Workspace) -> list[StageRow]:
    rows = []
    for stage in ws.stages():
        status = ws.status(stage)
        meta = ws.stage_meta(stage) or {}
        failures = [(r.image_id, r.kind, r.message) for r in ws.failures(stage)][:MAX_FAILURES]
        wall = meta.get("wall_s")
        rows.append(StageRow(stage, status.key or "-", status.done, status.failed, status.pending, status.stale,
                             float(wall) if wall is not None else None, failures))
    return rows


def mlflow_runs(ws: Workspace) -> tuple[list[dict[str, str]], str]:
    """The newest runs of the workspace in its MLflow store (read-only): MLFLOW_TRACKING_URI's (a
    server several workspaces share: the runs tagged with this one), else its own; and a note."""
    from wsss_core.tracking import experiment_name, tracking_uri, workspace_store

    uri = tracking_uri(ws.path)
    shared = uri != workspace_store(ws.path)
    db = uri if shared else ws.path / "mlflow.db"
    if not shared and not (ws.path / "mlflow.db").is_file():
        return [], "no MLflow store in this workspace (runs were made with --no-mlflow)"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    mine = f"tags.workspace = '{ws.path.resolve()}'" if shared else ""
    try:
        experiment = client.get_experiment_by_name(experiment_name())
        if experiment is None:
            return [], f"no experiment {experiment_name()!r} in {db}"
        found = client.search_runs([experiment.experiment_id], mine, max_results=MAX_RUNS,
                                   order_by=["attributes.start_time DESC"])
    except Exception as error:  # a store this mlflow cannot read: the report still renders
        return [], f"{db}: cannot read the runs ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    runs = []
    for run in found:
        info = run.info
        duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        runs.append({
            "name": info.run_name or "", "id": info.run_id, "status": info.status,
            "kind": run.data.tags.get("kind", ""), "parent": run.data.tags.get("mlflow.parentRunId", ""),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.start_time / 1000)) if info.start_time else "",
            "duration": format_seconds(duration),
            "miou": f"{run.data.metrics['miou']:.1f}" if "miou" in run.data.metrics else "",
        })
    where = f"(its UI: {uri})" if uri.startswith("http") else "(open them with `wsss ui`)"
    return runs, f"{len(runs)} newest runs of experiment {experiment.name!r} in {db} {where}"


# ----------------------------------------------------------------------------- pictures


def thumbnail_png(picture: np.ndarray, side: int, colours: int = THUMB_COLOURS) -> bytes:
    """A PNG of the picture, its longest side at most `side` pixels (nearest: masks stay crisp)."""
    from PIL import Image

    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = colorize(picture)
    image = Image.fromarray(picture.astype(np.uint8))
    scale = side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)
    if colours:  # an adaptive palette: a third of the bytes of a true-colour PNG, hardly visible at this size
        image = image.quantize(colours)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def figure_png(figure: Any, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ----------------------------------------------------------------------------- rendering

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1400px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums} td.best{font-weight:bold;background:#e8f4e8}
.muted{color:#777} .bad{color:#b00} nav ul{columns:2;font-size:.95em}
.grid td{padding:2px;text-align:center;font-size:.75em} .grid img{display:block;margin:auto;width:80px} .scroll{overflow-x:auto}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:.8em;max-height:20em}
"""

SECTIONS = (
    ("dataset", "Dataset"), ("results", "Results"), ("sample", "Sample overlays"), ("worst", "Worst images"),
    ("stages", "Stages: counts, wall times, failures"), ("configs", "Configs and weights"), ("runs", "MLflow runs"),
)


def esc(value: Any) -> str:
    return html.escape(str(value))


def percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], css: str = "") -> str:
    """A table from already-escaped cells; a cell may be given as (html, class). headers None: no header row."""
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>" if headers else ""
    body = []
    for row in rows:
        cells = []
        for cell in row:
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            cells.append(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{css}">{head}<tbody>{"".join(body)}</tbody></table>'


def best_marked(values: Sequence[float | None]) -> list[tuple[str, str]]:
    """Cells of one column in percent, the highest bold (class "best"; ties all marked)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    top = max(finite) if finite else None
    return [(percent(v), "num best" if top is not None and v == top else "num") for v in values]


def columns_marked(rows: Sequence[Sequence[float | None]]) -> list[list[tuple[str, str]]]:
    """Per-column best marking of a rows x columns table of fractions."""
    if not rows:
        return []
    columns = [best_marked([row[c] for row in rows]) for c in range(len(rows[0]))]
    return [[columns[c][r] for c in range(len(columns))] for r in range(len(rows))]


def render_dataset(report: Report) -> str:
    d = report.dataset
    splits = ", ".join(f"{s}: {n if n >= 0 else 'unrecorded'}" for s, n in report.split_counts.items()) or "-"
    rows = [
        ("name", esc(d.get("name", "-"))), ("format", esc(d.get("format", "-"))), ("root", esc(d.get("root", "-"))),
        ("images", esc(report.n_images)), ("splits (images)", esc(splits)),
        ("classes", esc(f"{len(report.classes)}: " + ", ".join(report.classes))),
        ("weak labels", esc(", ".join(report.weak_labels) or "none")),
        ("ground truth", "yes" if report.has_gt else "no"),
        ("manual masks", esc(f"{len(report.manual)}: " + ", ".join(report.manual[:20]) + (", ..." if len(report.manual) > 20 else ""))
         + f" (a person's full masks, used in place of the pseudo masks; the {NO_MANUAL} column scores without them)"
         if report.manual else "none"),
    ]
    return table(None, rows, "dataset")


def render_results(report: Report) -> str:
    if not report.results:
        why = "no ground truth in this workspace" if not report.has_gt else "no evaluation report yet (run `wsss evaluate`)"
        return f'<p class="muted">Nothing scored: {esc(why)}.</p>'
    splits = list(dict.fromkeys(s for cols in report.results.values() for s in cols))
    stages = list(report.results)
    values = [[(report.results[st].get(sp) or {}).get("miou") for sp in splits] for st in stages]
    marked = columns_marked(values)
    rows = []
    for stage, cells in zip(stages, marked):
        found = mask_method_of_stage(stage)
        round_ = mask_round_of_stage(stage)
        images = (overall(report.results[stage]) or {}).get("images", "-")
        rows.append([esc(found[0] if found else stage), esc(round_ if round_ is not None else 0), esc(stage), *cells, (esc(images), "num")])
    parts = [
        "<h3>mIoU (%) per mask set and round, per split</h3>",
        table(["method", "round", "mask set", *[f"mIoU {s}" for s in splits], "images"], rows, "results"),
        "<p class='muted'>Bold: the best of each column.</p>",
        *(f"<p class='bad'>{esc(worse.line())}</p>" for worse in worse_last_rounds(
            {stage: {split: scores.get("miou") for split, scores in cols.items()} for stage, cols in report.results.items()})),
        "<h3>IoU (%) per class (all images scored)</h3>",
    ]
    class_values = [[(overall(report.results[st]) or {}).get("iou", [None] * len(report.classes))[c]
                     for c in range(len(report.classes))] for st in stages]
    parts.append(table(["mask set", *report.classes], [[esc(st), *cells] for st, cells in zip(stages, columns_marked(class_values))], "per-class"))
    if report.confusion_png:
        parts.append(f"<h3>Confusion matrix of the best mask set ({esc(report.best_stage)})</h3>")
        parts.append(f'<img alt="confusion matrix of {esc(report.best_stage)}" src="{data_uri(report.confusion_png)}">')
    return "".join(parts)


def results_text(results: dict[str, dict]) -> str:
    """The results as plain text: mIoU (%) per mask set and round (rows, pipeline order) and per
    split (columns), then the images scored; `*` marks the best of each column.

    results: {stage: scores over its images, with "splits": {split: scores}}, as an
    evaluation returns them (flows.evaluate, reports/evaluation-*.json)."""
    stages = sorted(results, key=mask_stage_order)
    splits = list(dict.fromkeys(sp for st in stages for sp in (results[st].get("splits") or {})))

    def miou(stage: str, split: str) -> float | None:
        scores = (results[stage].get("splits") or {}).get(split) or {}
        return scores.get("miou")

    best = {sp: max((v for st in stages if (v := miou(st, sp)) is not None), default=None) for sp in splits}
    header = ["method", "round", "mask set", *[f"mIoU {sp}" for sp in splits], "images"]
    rows = [header]
    for stage in stages:
        found = mask_method_of_stage(stage)
        round_ = mask_round_of_stage(stage)
        cells = []
        for sp in splits:
            value = miou(stage, sp)
            cells.append("-" if value is None else f"{100 * value:.1f}" + ("*" if value == best[sp] else " "))
        rows.append([found[0] if found else stage, str(round_ if round_ is not None else "-"), stage, *cells,
                     str(results[stage].get("images", "-"))])
    return align_columns(rows, right=range(3, len(header)))


def render_grid(rows: Sequence[ImageRow]) -> str:
    if not rows:
        return '<p class="muted">No images.</p>'
    names = list(dict.fromkeys(p.name for row in rows for p in row.panels))
    body = []
    for row in rows:
        by_name = {p.name: p for p in row.panels}
        cells = [esc(row.image_id) + (f"<br><b>{esc(row.score)}</b>" if row.score else "")]
        for name in names:
            panel = by_name.get(name)
            if panel is None or panel.png is None:
                cells.append('<span class="muted">not computed</span>')
            else:
                note = f"<br>{esc(panel.note)}" if panel.note else ""
                cells.append(f'<img alt="{esc(row.image_id)} {esc(name)}" src="{data_uri(panel.png)}">{note}')
        body.append(cells)
    return '<div class="scroll">' + table(["image id", *names], body, "grid") + "</div>"


def render_stages(report: Report) -> str:
    rows = [
        [esc(s.stage), esc(s.key), (esc(s.done), "num"), (esc(s.failed), "num bad" if s.failed else "num"),
         (esc(s.pending), "num"), (esc(format_seconds(s.wall_s)), "num"), "stale" if s.stale else ""]
        for s in report.stages
    ]
    parts = [table(["stage", "config", "done", "failed", "pending", "wall time (last run)", "note"], rows, "stages")]
    parts.append("<p class='muted'>Wall time: of the stage's last run in a pipeline; - where not recorded.</p>")
    failed = [s for s in report.stages if s.failures]
    if failed:
        parts.append("<h3>Failed images</h3>")
        for s in failed:
            parts.append(f"<h4 class='bad'>{esc(s.stage)}: {s.failed} failed</h4>")
            parts.append(table(["image", "kind", "error"], [[esc(i), esc(k), esc(m)] for i, k, m in s.failures]))
    return "".join(parts)


def render_configs(report: Report) -> str:
    parts = ["<h3>Weights actually loaded</h3>"]
    if report.weights:
        rows = [[esc(stage), esc(w.get("requested")), esc(w.get("used", w.get("weights"))),
                 ("yes" if w.get("fallback") else "no", "bad" if w.get("fallback") else ""), esc(w.get("note", ""))]
                for stage, w in report.weights.items()]
        parts.append(table(["training", "requested", "loaded", "fallback", "note"], rows))
    else:
        parts.append('<p class="muted">No trained network in this workspace.</p>')
    parts.append("<h3>Configs by stage</h3>")
    for stage, config in report.configs.items():
        parts.append(f"<details><summary>{esc(stage)} ({esc(config.get('key'))})</summary>"
                     f"<pre>{esc(json.dumps(config, indent=1, sort_keys=True, default=str))}</pre></details>")
    return "".join(parts)


def render_runs(report: Report) -> str:
    parts = [f"<p>{esc(report.runs_note)}</p>"]
    if report.runs:
        rows = [[esc(r["name"]), f"<code>{esc(r['id'])}</code>", esc(r["kind"]), esc(r["status"]), esc(r["started"]),
                 (esc(r["duration"]), "num"), (esc(r["miou"]), "num"), f"<code>{esc(r['parent'][:8])}</code>"]
                for r in report.runs]
        parts.append(table(["run", "run id", "kind", "status", "started", "duration", "mIoU %", "parent"], rows, "runs"))
    return "".join(parts)


def render_html(report: Report) -> str:
    worst_intro = f"<p>{esc(report.worst_note)}</p>" if report.worst_note else ""
    bodies = {
        "dataset": render_dataset(report),
        "results": render_results(report),
        "sample": "<p>The first images of the workspace.</p>" + render_grid(report.sample),
        "worst": worst_intro + render_grid(report.worst),
        "stages": render_stages(report),
        "configs": render_configs(report),
        "runs": render_runs(report),
    }
    toc = "".join(f'<li><a href="#{key}">{esc(title)}</a></li>' for key, title in SECTIONS)
    sections = "".join(f'<section id="{key}"><h2>{esc(title)}</h2>{bodies[key]}</section>' for key, title in SECTIONS)
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.created))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>wsss report: {esc(report.dataset.get('name', report.workspace))}</title><style>{CSS}</style></head><body>"
        f"<h1>wsss report</h1><p class='muted'>workspace {esc(report.workspace)}, made {esc(created)}</p>"
        f"<nav><ul>{toc}</ul></nav>{sections}</body></html>"
    )


def write_report(workspace: str | Path, out: str | Path | None = None, config: ReportConfig = ReportConfig()) -> Path:
    """Gather and render the report of a workspace; returns the file (default WS/reports/report.html)."""
    ws = Workspace(workspace)
    path = Path(out) if out else ws.path / REPORT_DIR / REPORT_FILE
    page = render_html(gather(ws, config))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
