"""Names in a workspace: its stages, array groups and files, and the checks that keep image
ids, split names and stage names safe to use as file and array names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from wsss_core.errors import BadInputError, WorkspaceError

STORE_NAME = "store.zarr"
SPLITS_DIR = "splits"
INGEST_STAGE = "ingest"
# The array groups the ingest stage writes (tasks/ingest.py write_sample); every other
# group is written by the stage of the same name (superpixels, graphs, seeds/scribbles).
INGEST_ARRAYS = ("images", "gt", "scribbles", "boxes", "tags", "manual")
IMAGES, TAGS = "images", "tags"  # the ingested arrays the pipeline tables name most
# Weak labels an image may lack in a mixed dataset: a row that reads one runs over the images
# that carry it, and an image without it is no failure of that row (Workspace.carries). Every
# image has tags (none: an image showing no object). A person-drawn full mask ("manual") is no
# such label: rows that read it use it where an image has one.
PER_IMAGE_LABELS = ("scribbles", "boxes")
# Trained networks, inside a workspace; both paths read the CAM classifier's.
CAM_CHECKPOINT = Path("models") / "cam" / "model.pt"
AFFINITYNET_CHECKPOINT = Path("models") / "affinitynet" / "model.pt"
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")

# Packs: <group>/_packs/<pack>, a batch's images of one array group. "_" starts no stage
# name segment and no image id, so a pack never clashes with an image's array or a stage.
PACKS = "_packs"


def stage_arrays(stage: str) -> tuple[str, ...]:
    """The array groups a stage writes: the ingested ones for ingest, else its own name."""
    return INGEST_ARRAYS if stage == INGEST_STAGE else (stage,)


def owning_stage(array: str) -> str:
    """The stage that writes an array group, and so must recompute it: ingest for the
    ingested arrays ("images", "gt", ...), else the stage of that name ("graphs" for
    graphs/<id>/edges, "seeds/scribbles" for seeds/scribbles/<id>/labels)."""
    return INGEST_STAGE if array in INGEST_ARRAYS else array


def check_image_id(image_id: str) -> str:
    """Image ids become file and array names: letters, digits, '.', '_', '-' only."""
    if not _IMAGE_ID.match(image_id) or image_id in {".", ".."}:
        raise BadInputError(image_id, f"invalid image id {image_id!r} (allowed: letters, digits, '.', '_', '-')")
    return image_id


def check_split_name(split: str) -> str:
    """Split names become file names (splits/<split>.json): letters, digits, '.', '_', '-' only."""
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise WorkspaceError(
            f"invalid split name {split!r} (allowed: letters, digits, '.', '_', '-'; first a letter or digit)"
        )
    return split


def check_stage_name(stage: str) -> str:
    if not _STAGE_NAME.match(stage):
        raise ValueError(f"invalid stage name {stage!r}")
    return stage


def _safe_name(image_id: str) -> str:
    """The record file name of an id: the id itself when valid (as in older workspaces).

    Records also exist for ids that are not valid (e.g. '../x' or 'uni_é' in a split
    list). Their sanitised form alone would give 'uni_é' and 'uni_ü' one record, so a
    hash of the real id follows, after a '~' that no valid id holds: distinct ids get
    distinct names, and no invalid id's name is a valid id's.
    """
    if _IMAGE_ID.match(image_id):
        return image_id
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return "invalid-" + re.sub(r"[^A-Za-z0-9._-]", "_", image_id)[:150] + "~" + digest
