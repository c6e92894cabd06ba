"""The Zarr workspace: every per-image array of a dataset run, plus its bookkeeping.

Layout of a workspace directory::

    store.zarr/                 Zarr v3 store; root attributes hold the dataset description and
                                each stage's config and key
      <group>/_packs/<pack>     a batch's images of one array (images, superpixels, graphs' edges,
                                pseudo/gcn-scribbles, ...): one Zarr array, a row per image
                                (flattened), one chunk (a sharded array, an inner chunk per row,
                                above 16 MiB), written whole by one batch task
      <group>/<id>[/<name>]     one array per (group, image): workspaces written before packs, and
                                arrays written outside a batch (Workspace.write_array alone; it
                                points a packed image's marker to the new array)
    markers/<stage>/<key>/<id>.json   completion markers, written after the image's arrays; a
                                marker of a packed image says where each of its arrays lives; an
                                ingest marker keeps its sources' fingerprints (flows/ingest.py)
    records/failures/<stage>/<id>.json   one failure record per (stage, image); an ingest failure
                                also names the split(s) whose list holds the id
    records/warnings/<stage>/<id>.json   conversions and other notes made while processing
    splits/<split>.json         the ids of one split (e.g. train, val) that were ingested, as its
                                list named them at the last ingest: the dataset is their union
    records/fits/<stage>/<key>.json   the images a dataset-level model was fitted on
    (root attribute "requests") how each pipeline was last asked for, for `wsss retry-failed`
    locks/<stage>.lock          held (flock) by the process running a dataset-level stage

Markers and records are small files written atomically (temp file + rename), one per
image, so any number of processes may write them at once. Arrays: inside
Workspace.packing() (wsss_core.runner.run_batch opens it around every batch), an image's
arrays wait in memory until the batch (or PACK_BYTES of it) is done, then each array
group's images go into one new pack, named uniquely, so no two writers ever share a file
(Zarr is safe across processes only when each writer owns whole shards); then the
images' markers are written, pointing into the packs. An image is still done only when
its marker exists, and a recomputed image (a retry, a repair) goes into a new pack, its
marker pointing there. Reading one image reads its marker, then only its own inner
chunk of the pack. Zarr attributes and split records are written only by the single
flow process.

The package, by concern; Workspace (workspace.py) composes the parts as mixins and holds
only paths:

    names.py     stage, array and file names; the image id, split and stage name checks
    files.py     workspace_path (a local directory, no object-store URL), atomic JSON files
    stages.py    the root attributes: the dataset, each stage's config and key, lineage, requests
    splits.py    which images each split holds (and the legacy split of older workspaces)
    markers.py   which images are done; what their markers keep
    records.py   failure and warning records; status counts
    packs.py     a batch's arrays written as packs, and read back from them
    arrays.py    an image's array, packed or of its own (older workspaces, writes outside a batch)
    locks.py     one process at a time in a dataset-level stage (a training, the shared GCN fit)
"""

from wsss_core.store.arrays import ArrayColumn
from wsss_core.store.files import OBJECT_STORE_LIMITS, LocalFiles, workspace_path, write_json_atomic
from wsss_core.store.markers import PREVIOUS
from wsss_core.store.names import (
    AFFINITYNET_CHECKPOINT,
    CAM_CHECKPOINT,
    IMAGES,
    INGEST_ARRAYS,
    INGEST_STAGE,
    PACKS,
    PER_IMAGE_LABELS,
    SPLITS_DIR,
    STORE_NAME,
    TAGS,
    check_image_id,
    check_split_name,
    check_stage_name,
    owning_stage,
    stage_arrays,
)
from wsss_core.store.packs import PACK_BYTES, PACK_HANDLES, PackBatch, forget_open_packs
from wsss_core.store.records import StageRecord, StageStatus, prune_failures, split_counts
from wsss_core.store.workspace import Workspace

__all__ = [
    "AFFINITYNET_CHECKPOINT",
    "CAM_CHECKPOINT",
    "IMAGES",
    "INGEST_ARRAYS",
    "INGEST_STAGE",
    "OBJECT_STORE_LIMITS",
    "PACKS",
    "PACK_BYTES",
    "PER_IMAGE_LABELS",
    "PACK_HANDLES",
    "forget_open_packs",
    "PREVIOUS",
    "SPLITS_DIR",
    "STORE_NAME",
    "TAGS",
    "ArrayColumn",
    "LocalFiles",
    "PackBatch",
    "StageRecord",
    "StageStatus",
    "Workspace",
    "check_image_id",
    "check_split_name",
    "check_stage_name",
    "owning_stage",
    "prune_failures",
    "split_counts",
    "stage_arrays",
    "workspace_path",
    "write_json_atomic",
]
