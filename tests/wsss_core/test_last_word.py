from wsss_core.last_word import evaluation_mious, worse_last_rounds


def test_a_last_round_below_its_labels_names_the_better_masks():
    mious = {
        "pseudo/gcn-boxes": {"train": 0.90, "val": 0.918, "labels:boxes": 0.9, "no-manual": 0.9},
        "pseudo/gcn-boxes/round-1": {"train": 0.80, "val": 0.763, "labels:boxes": 0.7, "no-manual": 0.7},
        "pseudo/gcn-scribbles": {"train": 0.85, "val": 0.80},
        "pseudo/gcn-scribbles/round-1": {"train": 0.852, "val": 0.797},  # within half a point: not worse
        "pseudo/cam": {"val": 0.5},  # no rounds: nothing to say
    }
    found = worse_last_rounds(mious)
    assert [(w.stage, w.split, w.better) for w in found] == [
        ("pseudo/gcn-boxes/round-1", "train", "pseudo/gcn-boxes"), ("pseudo/gcn-boxes/round-1", "val", "pseudo/gcn-boxes"),
    ]
    assert found[1].line() == (
        "pseudo/gcn-boxes/round-1 scored 76.3 mIoU on val, below pseudo/gcn-boxes (91.8): "
        "the better masks of this method are pseudo/gcn-boxes"
    )


def test_the_last_of_several_rounds_is_held_against_the_best_before_it():
    m = "pseudo/gcn-tags"
    mious = {m: {"val": 0.6}, f"{m}/round-1": {"val": 0.7}, f"{m}/round-2": {"val": 0.65},
             f"{m}-crf": {"val": 0.9}}  # the CRF masks: a lineage of their own (without rounds)
    [worse] = worse_last_rounds(mious)
    assert (worse.stage, worse.better, worse.better_miou) == (f"{m}/round-2", f"{m}/round-1", 0.7)
    assert worse_last_rounds({**mious, f"{m}/round-2": {"val": 0.71}}) == []


def test_an_evaluation_without_splits_counts_as_all():
    results = {"pseudo/m": {"miou": 0.5}, "pseudo/m/round-1": {"miou": 0.4, "splits": {"val": {"miou": 0.3}}}}
    assert evaluation_mious(results) == {"pseudo/m": {"all": 0.5}, "pseudo/m/round-1": {"val": 0.3}}
