from __future__ import annotations

import json
from collections import Counter

import pytest

from wsss_core.data.label_mix import assign_groups, parse_label_mix
from wsss_core.data.voc import VocReader
from wsss_core.data.wild import ensure_variant, generate_variant
from wsss_core.errors import UsageError


def test_a_mix_names_groups_of_kinds_and_their_shares():
    mix = parse_label_mix("scribbles=0.2, boxes+scribbles=0.2,tags=0.6")
    assert mix.shares == (("scribbles", 0.2), ("boxes+scribbles", 0.2), ("tags", 0.6))
    assert parse_label_mix("tags+boxes=1").shares == (("boxes", 1.0),)  # tags go with every group


@pytest.mark.parametrize("text", ["scribbles=0.5,tags=0.4", "scribble=1", "tags", "tags=x", "tags=0.5,tags=0.5"])
def test_a_malformed_mix_is_refused_by_name(text):
    with pytest.raises(UsageError, match="label mix"):
        parse_label_mix(text)


def test_groups_take_their_shares_and_follow_the_seed():
    mix = parse_label_mix("scribbles=0.2,boxes=0.2,tags=0.6")
    groups = assign_groups(11, mix, seed=3)
    assert Counter(groups) == {"scribbles": 2, "boxes": 2, "tags": 7}  # largest remainder: 2.2, 2.2, 6.6
    assert assign_groups(11, mix, seed=3) == groups
    assert assign_groups(11, mix, seed=4) != groups


def test_each_image_keeps_only_its_groups_labels_and_its_tags(tmp_path):
    mix = parse_label_mix("scribbles=0.25,boxes=0.25,boxes+scribbles=0.25,tags=0.25")
    root = generate_variant(tmp_path / "d", "wild", 8, 80, 64, 5, mix)
    groups = json.loads((root / "synthetic.json").read_text())["label_groups"]
    reader = VocReader(root, "trainval")
    for image_id, group in groups.items():
        sample = reader.load(image_id)
        assert (sample.scribble is not None) == ("scribbles" in group)
        assert bool(sample.boxes) == ("boxes" in group)
        assert sample.tags and sample.tags == sorted({b.class_index for b in reader.load(image_id).boxes} or sample.tags)
        assert not sample.warnings  # an image tagged only is no annotation with a lost box
    assert Counter(groups.values()) == {"scribbles": 2, "boxes": 2, "boxes+scribbles": 2, "tags": 2}
    # the mix is part of what the folder holds: another mix is another dataset
    assert not ensure_variant(root, "wild", 8, 80, 64, 5, mix)
    with pytest.raises(UsageError, match="another generated dataset"):
        ensure_variant(root, "wild", 8, 80, 64, 5)
