import numpy as np
import pytest

from wsss_core.metrics import ConfusionMatrix, format_iou_table

GT = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 2, 0, 2]], dtype=np.uint8)
# gt\pred   0  1  2
#   0       2  1  0
#   1       0  2  0
#   2       1  0  1      (the 255 pixel is ignored)
EXPECTED = [[2, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_hand_computed_confusion_matrix_and_scores():
    confusion = ConfusionMatrix(3).update(PRED, GT)
    assert confusion.matrix.tolist() == EXPECTED
    # IoU: class 0: 2 / (3 + 3 - 2) = .5; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 1 / (2 + 1 - 1) = .5
    np.testing.assert_allclose(confusion.iou(), [0.5, 2 / 3, 0.5])
    assert confusion.miou() == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert confusion.pixel_accuracy() == pytest.approx(5 / 7)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    confusion = ConfusionMatrix(4).update(PRED, GT)
    assert np.isnan(confusion.iou()[3])
    assert confusion.miou() == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    # predicted but absent from gt: IoU 0, not nan
    only_pred = ConfusionMatrix(2).update(np.array([[1, 0]]), np.array([[0, 0]]))
    assert only_pred.iou().tolist() == [0.5, 0.0]


def test_unlabelled_prediction_counts_as_a_miss():
    confusion = ConfusionMatrix(2).update(np.array([[0, 255, 1]]), np.array([[0, 0, 1]]))
    assert confusion.matrix.tolist() == [[1, 0], [0, 1]]
    assert confusion.unpredicted.tolist() == [1, 0]
    np.testing.assert_allclose(confusion.iou(), [0.5, 1.0])
    assert confusion.pixel_accuracy() == pytest.approx(2 / 3)


def test_merge_equals_updating_with_both():
    first = ConfusionMatrix(3).update(PRED, GT)
    second = ConfusionMatrix(3).update(GT.clip(0, 2), GT)
    both = ConfusionMatrix(3).update(PRED, GT).update(GT.clip(0, 2), GT)
    merged = first.merge(second)
    assert merged.matrix.tolist() == both.matrix.tolist()
    assert first.matrix.tolist() == EXPECTED  # merge leaves its operands alone
    with pytest.raises(ValueError):
        first.merge(ConfusionMatrix(4))


def test_bad_shapes_and_classes_raise():
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(PRED[:, :3], GT)
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(PRED, GT)  # gt class 2 out of range


def test_to_dict_is_json_ready():
    d = ConfusionMatrix(4).update(PRED, GT).to_dict()
    assert d["images"] == 1
    assert d["matrix"][0] == [2, 1, 0, 0]
    assert d["iou"][3] is None
    assert d["miou"] == pytest.approx(5 / 9)
    assert d["pixel_accuracy"] == pytest.approx(5 / 7)


def test_format_iou_table():
    results = {"gcn": ConfusionMatrix(3).update(PRED, GT), "rect": ConfusionMatrix(3).update(GT.clip(0, 2), GT)}
    table = format_iou_table(results, ["bg", "cat", "dog"])
    assert table.splitlines() == [
        "method     bg    cat    dog   mIoU",
        "gcn      50.0   66.7   50.0   55.6",
        "rect    100.0  100.0  100.0  100.0",
    ]
    empty = ConfusionMatrix(3)
    assert format_iou_table({"none": empty}, ["a", "b", "c"]).splitlines()[1].split() == ["none", "-", "-", "-", "-"]
    with pytest.raises(ValueError):
        format_iou_table(results, ["bg", "cat"])
