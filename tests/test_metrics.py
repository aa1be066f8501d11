"""verl_ext.metrics against hand-computed values (METHOD.md §5)."""

import numpy as np
import pytest

from verl_ext import metrics as M
from verl_ext.constants import FRAME

GS = M.GroundingSample


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def test_rasterize_union_of_overlapping_boxes():
    # inclusive pixel boxes: [0, 0, 9, 9] is 10 x 10 pixels
    mask = M.rasterize_boxes([[0, 0, 9, 9], [5, 5, 14, 14]])
    assert mask.shape == (FRAME, FRAME)
    assert mask.sum() == 100 + 100 - 25
    assert mask[0, 0] and mask[14, 14] and not mask[15, 15] and not mask[0, 14]


def test_rasterize_edge_cases():
    assert M.rasterize_boxes([]).sum() == 0
    assert M.rasterize_boxes(None).sum() == 0
    assert M.rasterize_boxes([[9, 9, 0, 0]]).sum() == 100  # swapped corners are reordered
    assert M.rasterize_boxes([[-50, -50, 9, 9]]).sum() == 100  # clipped to the frame
    assert M.rasterize_boxes([[830, 830, 2000, 2000]]).sum() == 100  # pixels 830..839
    assert M.rasterize_boxes([[0, 0, np.nan, 10], [0, 0, np.inf, 5]]).sum() == 0  # non-finite dropped
    assert M.rasterize_boxes([[5, 5, 5, 20]]).sum() == 16  # a one-pixel-wide box covers 16 pixels
    # another resolution: frame pixels 0..419 (a quarter of the frame) at 100 x 100 are 50 x 50 pixels
    assert M.rasterize_boxes([[0, 0, FRAME / 2 - 1, FRAME / 2 - 1]], height=100, width=100).sum() == 2500


def test_rasterize_many_boxes_matches_loop():
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, FRAME, size=(120, 4))
    ref = np.zeros((FRAME, FRAME), dtype=bool)
    for x1, y1, x2, y2 in M.as_boxes(boxes).astype(int):
        ref[y1 : y2 + 1, x1 : x2 + 1] = True
    assert np.array_equal(M.rasterize_boxes(boxes), ref)


def test_pairwise_box_iou():
    # 10 x 10 pixel boxes overlapping in 5 x 10 pixels: 50 / (100 + 100 - 50)
    iou = M.pairwise_box_iou([[0, 0, 9, 9], [100, 100, 109, 109]], [[5, 0, 14, 9]])
    assert iou.shape == (2, 1)
    assert iou[0, 0] == pytest.approx(50 / 150)
    # the same number the training reward computes (one IoU for both)
    from verl_ext.rewards.grounding import box_iou

    assert iou[0, 0] == box_iou(np.array([0, 0, 9, 9.0]), np.array([5, 0, 14, 9.0]))
    assert M.pairwise_box_iou([[100, 100, 100, 300]], [[100, 100, 100, 300]])[0, 0] == 1.0  # 1 px wide
    assert iou[1, 0] == 0
    assert M.pairwise_box_iou([], [[0, 0, 1, 1]]).shape == (0, 1)


def test_intersection_union_boxes_and_masks():
    # union of two predicted boxes vs one GT box
    assert M.intersection_union([[0, 0, 9, 9], [20, 0, 29, 9]], [[0, 0, 9, 9]]) == (100, 200)
    assert M.intersection_union([], [[0, 0, 9, 9]]) == (0, 100)
    assert M.intersection_union([[0, 0, 9, 9]], []) == (0, 100)
    assert M.intersection_union([], []) == (0, 0)
    # GT mask 84 x 84 (a tenth of the frame): left half set; prediction = top-left quarter of the frame
    gt = np.zeros((84, 84), dtype=bool)
    gt[:, :42] = True
    inter, union = M.intersection_union([[0, 0, 419, 419]], gt_mask=gt)  # frame pixels 0..419 -> 0..41
    assert (inter, union) == (42 * 42, 42 * 84)
    # a segmenter's mask replaces the rasterised boxes
    pred = np.zeros((84, 84), dtype=bool)
    pred[:, :21] = True
    assert M.intersection_union([[0, 0, 419, 419]], gt_mask=gt, pred_mask=pred) == (84 * 21, 84 * 42)
    with pytest.raises(ValueError, match="shapes differ"):
        M.mask_intersection_union(np.zeros((2, 2)), np.zeros((3, 3)))


def test_bbox_hit_single_object_follows_public_rule():
    gt = [[0, 0, 9, 9]]  # 10 x 10 pixels
    assert M.bbox_hit([[0, 0, 9, 8]], gt)  # IoU 0.9
    assert not M.bbox_hit([[0, 0, 9, 4]], gt)  # IoU 0.5 is not > 0.5
    assert M.bbox_hit([[500, 500, 600, 600], [0, 0, 9, 8]], gt)  # an extra box is allowed ...
    assert not M.bbox_hit([[500, 500, 600, 600], [0, 0, 9, 8]], gt, strict=True)  # ... unless strict
    assert not M.bbox_hit([], gt)


def test_bbox_hit_multi_object_one_to_one():
    a, b = [0, 0, 10, 10], [100, 0, 110, 10]
    assert M.bbox_hit([b, a], [a, b])  # order does not matter
    assert not M.bbox_hit([a], [a, b])  # one GT box unmatched
    assert not M.bbox_hit([a, a], [a, b])  # one prediction cannot match two GT boxes
    # greedy-by-IoU would give p1 to A and leave B unmatched; the Hungarian match finds p1->B, p2->A
    A, B = [0, 0, 10, 10], [1, 0, 11, 10]
    p1, p2 = [0.5, 0, 10.5, 10], [-3, 0, 7, 10]
    iou = M.pairwise_box_iou([p1, p2], [A, B])
    assert iou[0, 0] > 0.5 and iou[0, 1] > 0.5 and iou[1, 0] > 0.5 and iou[1, 1] < 0.5
    assert M.bbox_hit([p1, p2], [A, B])


def test_bbox_hit_non_object():
    assert M.bbox_hit([], [])
    assert not M.bbox_hit([[0, 0, 10, 10]], [])


def test_point_in_box():
    box = [10, 10, 20, 20]
    assert M.point_in_box([[15, 15]], box)
    assert M.point_in_box([[20, 10]], box)  # border included
    assert not M.point_in_box([[21, 15]], box)
    assert M.point_in_box([[0, 0], [12, 19]], box)  # any predicted point (public rule)
    assert not M.point_in_box([], box)
    assert not M.point_in_box([[15, 15]], None)


# --------------------------------------------------------------------------------------------
# aggregates
# --------------------------------------------------------------------------------------------
def test_grounding_metrics_hand_computed():
    samples = [
        GS(50, 150, gt_empty=False, pred_empty=False, hit=False),  # IoU 1/3
        GS(0, 0, gt_empty=True, pred_empty=True, hit=True),  # correct non-object: IoU 1
        GS(0, 100, gt_empty=True, pred_empty=False, hit=False),  # false positive: IoU 0
        GS(0, 200, gt_empty=False, pred_empty=True, hit=False),  # missed object: IoU 0
    ]
    m = M.grounding_metrics(samples)
    assert m["gIoU"] == pytest.approx((1 / 3 + 1) / 4)
    assert m["cIoU"] == pytest.approx(50 / 450)
    assert m["N-Acc"] == pytest.approx(1 / 2)
    assert m["BboxAcc"] == pytest.approx(1 / 4)
    assert "notes" not in m


def test_grounding_metrics_all_non_object():
    # three correct "[]" answers and one unparseable answer (no boxes, but not a valid empty list)
    samples = [GS(0, 0, True, True, True)] * 3 + [GS(0, 0, True, False, False)]
    m = M.grounding_metrics(samples)
    assert m["gIoU"] == pytest.approx(0.75)
    assert m["N-Acc"] == pytest.approx(0.75)
    assert m["BboxAcc"] == pytest.approx(0.75)
    assert m["cIoU"] is None and "cIoU undefined" in m["notes"][0]


def test_grounding_metrics_empty_predictions_and_no_non_object():
    m = M.grounding_metrics([GS(0, 100, False, True, False), GS(0, 400, False, False, False)])
    assert m == {"gIoU": 0.0, "cIoU": 0.0, "BboxAcc": 0.0}  # no N-Acc without non-object labels
    assert M.grounding_metrics([]) == {}


def test_roc_auc():
    assert M.roc_auc([0, 0, 1, 1], [0, 1, 1, 1]) == (pytest.approx(0.75), None)
    auc, note = M.roc_auc([0, 0, 0], [0, 1, 0])
    assert auc is None and "only normal" in note
    auc, note = M.roc_auc([1, 1], [1, 1])
    assert auc is None and "only anomalous" in note
    assert M.roc_auc([], [])[0] is None


def test_anomaly_metrics():
    m = M.anomaly_metrics([1, 1, 0, 0], [1, 0, 0, 1])
    assert m == {"Acc": 0.5, "AUC": pytest.approx(0.5)}
    one_class = M.anomaly_metrics([0, 0], [0, 1])
    assert one_class["Acc"] == 0.5 and one_class["AUC"] is None
    assert "only normal" in one_class["notes"][0]
    assert M.anomaly_metrics([], []) == {}


def test_math_correct():
    assert M.math_correct("0.5", "\\frac{1}{2}")
    assert M.math_correct("3", "3")
    assert not M.math_correct("4", "3")
    assert not M.math_correct(None, "3")
    assert not M.math_correct("  ", "3")
    choices = ["12", "15", "20"]
    assert M.math_correct("B", "B", choices)
    assert M.math_correct("(b)", "B", choices)
    assert M.math_correct("15", "B", choices)  # the option text
    assert not M.math_correct("A", "B", choices)
    assert not M.math_correct("12", "B", choices)
    # the same rule as the training reward: a letter answer against an option-text label
    assert M.math_correct("B", "15", choices) and not M.math_correct("A", "15", choices)


def test_accuracy_and_text_stats():
    assert M.accuracy([True, False, True, True]) == 0.75
    assert M.accuracy([]) is None
    t = M.TextStats()
    t.add(True, "<think>a b c</think><answer>[]</answer>", "a b c", n_tokens=10)
    t.add(False, "one two", None, n_tokens=4)
    m = t.metrics()
    assert m == {"format": 0.5, "resp_len": 2.5, "think_len": 1.5, "resp_tokens": 7.0}  # 3 and 2 words
    assert M.TextStats().metrics() == {}
