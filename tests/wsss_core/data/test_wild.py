from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsss_core.data.sample import IGNORE_INDEX
from wsss_core.data.voc import VocReader
from wsss_core.data.wild import (
    WildConfig,
    dataset_look,
    ensure_variant,
    generate_variant,
    generate_wild_dataset,
    generate_wild_sample,
)
from wsss_core.errors import UsageError

SMALL = WildConfig(n_images=6, width=96, height=72, seed=5)


@pytest.fixture(scope="module")
def wild(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_wild_dataset(tmp_path_factory.mktemp("wild") / "seed5", SMALL)


def test_each_seed_draws_its_own_classes_and_materials() -> None:
    looks = [dataset_look(WildConfig(seed=seed)) for seed in range(8)]
    assert all(3 <= len(look.class_names) <= 7 for look in looks)
    assert len({len(look.class_names) for look in looks}) > 1  # the class count varies
    assert len({tuple((m.kind, m.source) for m in look.class_materials) for look in looks}) == len(looks)
    for look in looks:
        class_sources = {m.source for m in look.class_materials if m.kind in ("photo", "grey")}
        background_sources = {m.source for m in look.background_materials if m.kind in ("photo", "grey")}
        assert not class_sources & background_sources  # no class looks like the background it stands on
    assert dataset_look(WildConfig(seed=3)) == dataset_look(WildConfig(seed=3, n_images=10))


def test_samples_are_deterministic_and_labels_consistent() -> None:
    first, again = generate_wild_sample(2, SMALL), generate_wild_sample(2, SMALL)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.gt, again.gt)
    n_classes = len(dataset_look(SMALL).class_names)
    for index in range(4):
        sample = generate_wild_sample(index, SMALL)
        assert sample.image.shape == (72, 96, 3) and sample.image.dtype == np.uint8
        present = {int(c) for c in np.unique(sample.gt)} - {0, IGNORE_INDEX}
        assert present and present <= set(range(1, n_classes + 1))
        assert sample.tags == sorted(present)
        assert {box.class_index for box in sample.boxes} == present
        drawn = {int(c) for c in np.unique(sample.scribble)} - {IGNORE_INDEX}
        assert present <= drawn  # every object got a scribble


def test_size_jitter_varies_the_image_size() -> None:
    config = WildConfig(n_images=8, width=96, height=72, seed=1, size_jitter=0.3)
    samples = [generate_wild_sample(i, config) for i in range(8)]
    assert len({s.image.shape for s in samples}) > 1
    assert all(s.gt.shape == s.image.shape[:2] == s.scribble.shape for s in samples)


def test_the_voc_reader_reads_it_with_its_own_classes(wild: Path) -> None:
    reader = VocReader(wild, split="train")
    look = dataset_look(SMALL)
    assert list(reader.classes) == ["background", *look.class_names]
    ids = reader.image_ids()
    assert 0 < len(ids) < SMALL.n_images
    for image_id in ids:
        sample = reader.load(image_id)
        generated = generate_wild_sample(int(image_id.split("_")[1]), SMALL)
        assert sample.tags == generated.tags
        assert np.array_equal(sample.gt, generated.gt)
        assert [b.class_index for b in sample.boxes] == [b.class_index for b in generated.boxes]


def test_generate_variant_dispatches(tmp_path: Path) -> None:
    generate_variant(tmp_path / "w", "wild", 2, 80, 64, 9)
    assert (tmp_path / "w" / "classes.txt").read_text().splitlines()[1:] == list(dataset_look(WildConfig(seed=9)).class_names)
    generate_variant(tmp_path / "s", "standard", 2, 80, 64, 9)
    assert (tmp_path / "s" / "classes.txt").read_text().splitlines()[1] == "brick-red"
    with pytest.raises(ValueError, match="64x64"):
        WildConfig(width=48)


def test_ensure_variant_writes_once_and_refuses_another_dataset(tmp_path: Path) -> None:
    root = tmp_path / "d"
    assert ensure_variant(root, "standard", 2, 80, 64, 9)  # written
    written = (root / "synthetic.json").stat().st_mtime_ns
    assert not ensure_variant(root, "standard", 2, 80, 64, 9)  # that one is there: left alone
    assert (root / "synthetic.json").stat().st_mtime_ns == written
    with pytest.raises(UsageError, match="another generated dataset"):  # a workspace must not mix two
        ensure_variant(root, "standard", 3, 80, 64, 9)
    with pytest.raises(UsageError, match="variant 'nope'"):
        ensure_variant(tmp_path / "e", "nope", 2, 80, 64, 9)
