"""verl_ext.metrics (shared geometry, text stats) against hand-computed values (docs/METHOD.md §5).
The scoring rules (verl_ext/eval_protocols) are tested in tests/test_eval_parity.py."""

import numpy as np
import pytest

from verl_ext import metrics as M
from verl_ext.constants import FRAME


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


# --------------------------------------------------------------------------------------------
# aggregates (the scoring rules are tested against the public scripts in tests/test_eval_parity.py)
# --------------------------------------------------------------------------------------------
def test_accuracy_and_text_stats():
    assert M.accuracy([True, False, True, True]) == 0.75
    assert M.accuracy([]) is None
    t = M.TextStats()
    t.add(True, "<think>a b c</think><answer>[]</answer>", "a b c", n_tokens=10)
    t.add(False, "one two", None, n_tokens=4)
    m = t.metrics()
    assert m == {"format": 0.5, "resp_len": 2.5, "think_len": 1.5, "resp_tokens": 7.0}  # 3 and 2 words
    assert M.TextStats().metrics() == {}
