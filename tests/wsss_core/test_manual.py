"""A person's full mask in place of an image's pseudo mask wherever a mask set is used."""

import pickle

import numpy as np
from PIL import Image

from wsss_core.data.image_io import save_palette_png
from wsss_core.data.voc import MANUAL_DIR, VocReader
from wsss_core.export import export_masks
from wsss_core.manual import MANUAL, UsedMaskColumn, manual_ids, used_mask
from wsss_core.store import INGEST_STAGE, Workspace

DATASET = {"name": "voc:toy", "format": "voc", "root": "/data/toy", "classes": ["background", "cat", "dog"], "split": "train"}
STAGE = "pseudo/gcn-scribbles"


def workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.bind_dataset(DATASET)
    ws.begin_stage(INGEST_STAGE, "k0", {})
    ws.begin_stage(STAGE, "k1", {})
    for image_id in ("a", "b"):
        ws.write_array("images", image_id, np.zeros((4, 6, 3), np.uint8))
        ws.write_array(STAGE, image_id, np.ones((4, 6), np.uint8))
        ws.mark_done(INGEST_STAGE, image_id, "k0")
        ws.mark_done(STAGE, image_id, "k1")
    ws.write_array(MANUAL, "b", np.full((4, 6), 2, np.uint8))
    return ws


def test_the_manual_mask_stands_in_for_the_pseudo_mask_where_an_image_has_one(tmp_path):
    ws = workspace(tmp_path)
    assert manual_ids(ws, ["a", "b"]) == ["b"]
    assert (used_mask(ws, STAGE, "a") == 1).all() and (used_mask(ws, STAGE, "b") == 2).all()
    column = pickle.loads(pickle.dumps(UsedMaskColumn(ws, STAGE, ["a", "b"])))  # training loader workers get a copy
    assert len(column) == 2 and (column[0] == 1).all() and (column[1] == 2).all()

    written = export_masks(ws, STAGE, tmp_path / "used")
    assert [np.array(Image.open(p)).max() for p in written] == [1, 2]
    own = export_masks(ws, STAGE, tmp_path / "own", manual=False)
    assert [np.array(Image.open(p)).max() for p in own] == [1, 1]
    assert (np.array(Image.open(export_masks(ws, MANUAL, tmp_path / "manual")[0])) == 2).all()


def test_the_voc_reader_reads_and_fingerprints_a_manual_mask_apart_from_gt(tmp_path):
    from wsss_core.data.synthetic import SyntheticConfig, generate_dataset

    root = generate_dataset(tmp_path / "data", SyntheticConfig(n_images=2, width=64, height=48, seed=1))
    reader = VocReader(root)
    image_id = reader.image_ids()[0]
    assert reader.load(image_id).manual is None and reader.sources(image_id)["manual"] is None
    drawn = np.zeros((48, 64), np.uint8)
    drawn[10:20, 10:30] = 1
    save_palette_png(root / MANUAL_DIR / f"{image_id}.png", drawn)
    sample = reader.load(image_id)
    assert np.array_equal(sample.manual, drawn) and not np.array_equal(sample.gt, drawn)
    assert reader.sources(image_id)["manual"] == root / MANUAL_DIR / f"{image_id}.png"

