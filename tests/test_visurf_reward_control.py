"""Reward control (docs/METHOD.md §3): align_gt, gt_response (§3.1), smooth_gt_rewards (§3.3)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_ext.constants import FRAME, TASKS
from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
from verl_ext.visurf.config import VisurfConfig
from verl_ext.visurf.group_step import smooth_gt_rewards
from verl_ext.visurf.reward_control import align_gt, gt_response

# --------------------------------------------------------------------------------------------
# align_gt
# --------------------------------------------------------------------------------------------
TWO_OBJECTS = '[{"point_2d":[30,110],"bbox_2d":[10,100,200,210]},{"bbox_2d":[225,296,706,786],"point_2d":[302,410]}]'
TWO_OBJECTS_ALIGNED = (
    '<answer>[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}, '
    '{"bbox_2d": [225, 296, 706, 786], "point_2d": [302, 410]}]</answer>'
)


@pytest.mark.parametrize("task", ["grounding", "anomaly", "lesion"])
def test_align_objects_rollout_style(task):
    # key order bbox_2d then point_2d, json.dumps default separators, template
    assert align_gt(TWO_OBJECTS, task) == TWO_OBJECTS_ALIGNED


@pytest.mark.parametrize("task", ["grounding", "anomaly", "lesion"])
@pytest.mark.parametrize("label", ["[]", " [ ] \n"])
def test_align_non_object(task, label):
    assert align_gt(label, task) == "<answer>[]</answer>"


def test_align_rounds_half_up_to_int():
    label = '[{"bbox_2d": [10.5, 2.5, 200.49, 210.0], "point_2d": [30.5, 110.4999]}]'
    # Python's round() would give 2 for 2.5 (banker's rounding); we round half up
    assert align_gt(label, "grounding") == '<answer>[{"bbox_2d": [11, 3, 200, 210], "point_2d": [31, 110]}]</answer>'


def test_align_rejects_labels_the_reward_cannot_score():
    # the task scorers need a box and a point on every object: such a GT is a bad label here
    # (skipped and counted), never a crash of the reward worker later
    with pytest.raises(ValueError, match="point_missing"):
        align_gt('[{"bbox_2d": [0, 0, 840, 840]}]', "lesion")


def test_align_gui_point_from_label():
    label = '[{"bbox_2d": [10, 100, 200, 210], "point_2d": [105, 155]}]'
    assert align_gt(label, "gui") == '<answer>[{"point_2d": [105, 155]}]</answer>'


def test_align_gui_needs_the_element_point():
    with pytest.raises(ValueError, match="point_missing"):
        align_gt('[{"bbox_2d": [10, 100, 201, 211]}]', "gui")


@pytest.mark.parametrize(("label", "expected"), [(" \\frac{1}{2}\n", "\\frac{1}{2}"), ("B", "B"), ("3", "3")])
def test_align_math(label, expected):
    assert align_gt(label, "math") == f"<answer>{expected}</answer>"


def test_align_custom_template():
    assert align_gt("[]", "grounding", template="<ans>{answer}</ans>") == "<ans>[]</ans>"
    assert align_gt("7", "math", template="{answer}") == "7"


def test_align_round_trips_rollout_json():
    # the aligned GT parses back to the label and is a fixed point of the serialiser
    answer = align_gt(TWO_OBJECTS, "grounding")[len("<answer>") : -len("</answer>")]
    assert json.loads(answer) == json.loads(TWO_OBJECTS)
    assert json.dumps(json.loads(answer)) == answer


@pytest.mark.parametrize(
    ("label", "task", "what"),
    [  # the messages are the task scorer's own (verl_ext.rewards.labels / parsing.parse_label)
        ("[{bbox_2d: 1}]", "grounding", "not valid JSON"),
        ('"[1, 2]"', "grounding", "JSON list"),
        ("[[1, 2, 3, 4]]", "anomaly", "object_not_dict"),
        ("[{}]", "lesion", "bbox_missing, point_missing"),
        ('[{"bbox_2d": [1, 2, 3], "point_2d": [1, 2]}]', "grounding", "bbox_wrong_length"),
        ('[{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2, 3]}]', "grounding", "point_wrong_length"),
        ('[{"bbox_2d": [1, 2, 3, NaN], "point_2d": [1, 2]}]', "grounding", "bbox_non_finite"),
        ('[{"bbox_2d": [1, 2, 3, true], "point_2d": [1, 2]}]', "grounding", "bbox_wrong_type"),
        ('[{"bbox_2d": [1, 2, "3", 4], "point_2d": [1, 2]}]', "grounding", "bbox_wrong_type"),
        ('[{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2]}, {"bbox_2d": [1, 2, 3, 4], "point_2d": [3, 4]}]', "gui",
         "exactly one element"),
        ("[]", "gui", "exactly one element"),
        ("   ", "math", "no label"),
        (None, "grounding", "no label"),
        (7, "grounding", "a list of objects or one object"),
    ],
)
def test_align_bad_label_names_label_and_problem(label, task, what):
    with pytest.raises(ValueError) as err:
        align_gt(label, task)
    assert what in str(err.value)
    assert repr(label) in str(err.value)


@pytest.mark.parametrize(("label", "aligned"), [
    # what the scorer does with such a label, the renderer does too: clip to [0, FRAME], reorder corners
    ('[{"bbox_2d": [-1, 2, 3, 4], "point_2d": [1, 2]}]', '[{"bbox_2d": [0, 2, 3, 4], "point_2d": [1, 2]}]'),
    (f'[{{"bbox_2d": [1, 2, 3, {FRAME + 60}], "point_2d": [1, {FRAME + 1}]}}]',
     f'[{{"bbox_2d": [1, 2, 3, {FRAME}], "point_2d": [1, {FRAME}]}}]'),
    ('[{"bbox_2d": [30, 2, 3, 4], "point_2d": [5, 3]}]', '[{"bbox_2d": [3, 2, 30, 4], "point_2d": [5, 3]}]'),
    ('[{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2], "label": "cat"}]',  # other keys: ignored by both
     '[{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2]}]'),
    (["B"], None),  # math: a list label is its JSON text, as the math scorer reads it
])
def test_align_normalises_labels_as_the_scorer_reads_them(label, aligned):
    if aligned is None:
        assert align_gt(label, "math") == '<answer>["B"]</answer>'
    else:
        assert align_gt(label, "grounding") == f"<answer>{aligned}</answer>"


def test_align_bad_label_repr_is_truncated():
    label = "[" + ", ".join(['{"bbox_2d": [1, 2, 3]}'] * 100) + "]"
    with pytest.raises(ValueError, match=r"\.\.\.: invalid label object\(s\): bbox_wrong_length") as err:
        align_gt(label, "grounding")
    assert len(str(err.value)) < 400


def test_align_rejects_unknown_task_and_bad_template():
    with pytest.raises(ValueError, match="unknown task 'ocr'"):
        align_gt("[]", "ocr")
    with pytest.raises(ValueError, match="exactly once"):
        align_gt("[]", "grounding", template="<answer></answer>")


def test_every_task_is_aligned():
    labels = {
        "grounding": TWO_OBJECTS,
        "anomaly": "[]",
        "lesion": TWO_OBJECTS,
        "gui": '[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}]',
        "math": "2",
    }
    assert set(labels) == set(TASKS)
    for task, label in labels.items():
        out = align_gt(label, task)
        assert out.startswith("<answer>") and out.endswith("</answer>")


# --------------------------------------------------------------------------------------------
# smooth_gt_rewards
# --------------------------------------------------------------------------------------------
def _batch():
    # a: rollouts 0, 1, 2 + GT 1.5 -> max 2 >= 1.5 -> GT := mean 1.0
    # b: rollouts 0, .5 + GT 3 -> GT beats every rollout, kept
    # c: no GT -> untouched; d: GT only -> untouched
    # e: rollouts 1, 2 + GT 2 (tie counts as matched) -> GT := 1.5
    index = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c", "d", "e", "e", "e"], dtype=object)
    scores = torch.tensor([0.0, 1.0, 2.0, 1.5, 0.0, 0.5, 3.0, 1.0, 2.0, 5.0, 1.0, 2.0, 2.0])
    is_gt = np.array([0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1], dtype=bool)
    expected = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0, 0.5, 3.0, 1.0, 2.0, 5.0, 1.0, 2.0, 1.5])
    return scores, index, is_gt, expected


def test_smoothing_hand_computed():
    scores, index, is_gt, expected = _batch()
    before = scores.clone()
    out = smooth_gt_rewards(scores, index, is_gt)
    torch.testing.assert_close(out, expected)
    assert out is not scores and torch.equal(scores, before)  # new tensor, input untouched


def test_smoothing_shuffled_rows_and_label_types():
    scores, index, is_gt, expected = _batch()
    perm = np.random.default_rng(0).permutation(len(index))
    int_index = np.unique(index, return_inverse=True)[1] + 100
    for idx in (index[perm], int_index[perm], list(index[perm])):
        for gt in (is_gt[perm], torch.from_numpy(is_gt[perm]), is_gt[perm].tolist()):
            torch.testing.assert_close(smooth_gt_rewards(scores[perm], idx, gt), expected[perm])


def test_smoothing_keeps_dtype_and_checks_lengths():
    scores, index, is_gt, _ = _batch()
    assert smooth_gt_rewards(scores.double(), index, is_gt).dtype == torch.float64
    with pytest.raises(ValueError, match="differ in length"):
        smooth_gt_rewards(scores, index[:-1], is_gt)


# rewards on a grid of exactly representable values, like the task rewards (format 0/1, accuracy x/8)
_reward = st.integers(0, 56).map(lambda k: k / 8)


@st.composite
def _augmented_groups(draw):
    """A batch of groups: G rollouts (G in 1..8) + one GT row each, rows shuffled."""
    n_groups = draw(st.integers(1, 6))
    scores, index, is_gt = [], [], []
    for g in range(n_groups):
        rollouts = draw(st.lists(_reward, min_size=1, max_size=8))
        scores += rollouts + [draw(_reward)]
        index += [f"uid-{g}"] * (len(rollouts) + 1)
        is_gt += [False] * len(rollouts) + [True]
    perm = draw(st.permutations(range(len(scores))))
    return (
        # float32, as verl stores rewards: r_gt is the rollout mean rounded to float32 (e.g. rollouts
        # (2, 2, 2.125)), and the visurf estimator still gives the smoothed GT exactly Â = 0
        torch.tensor([scores[i] for i in perm], dtype=torch.float32),
        np.array([index[i] for i in perm], dtype=object),
        np.array([is_gt[i] for i in perm]),
    )


@settings(max_examples=60, deadline=None)
@given(_augmented_groups())
def test_smoothing_zeroes_gt_advantage_when_a_rollout_matches(batch):
    scores, index, is_gt = batch
    smoothed = smooth_gt_rewards(scores, index, is_gt)
    adv, _ = compute_visurf_outcome_advantage(smoothed[:, None], torch.ones(len(scores), 1), index)
    for uid in np.unique(index):
        rows = index == uid
        gt_row = np.flatnonzero(rows & is_gt)[0]
        rollout_max = scores[torch.from_numpy(rows & ~is_gt)].max()
        if rollout_max >= scores[gt_row]:
            assert adv[gt_row, 0].item() == 0.0
        else:
            assert smoothed[gt_row] == scores[gt_row]
    torch.testing.assert_close(smoothed[torch.from_numpy(~is_gt)], scores[torch.from_numpy(~is_gt)])


# --------------------------------------------------------------------------------------------
# gt_response: the alignment switch (VisurfConfig.gt_response delegates here)
# --------------------------------------------------------------------------------------------
def test_gt_response_alignment_switch():
    assert gt_response(TWO_OBJECTS, "grounding") == TWO_OBJECTS_ALIGNED
    assert VisurfConfig().gt_response(TWO_OBJECTS, "grounding") == TWO_OBJECTS_ALIGNED
    raw = VisurfConfig(align=False).gt_response(f" {TWO_OBJECTS} ", "grounding")
    assert raw == f"<answer>{TWO_OBJECTS}</answer>"
    assert gt_response("7", "math", align=False, template="#### {answer}") == "#### 7"
    with pytest.raises(ValueError, match="bad math label"):
        gt_response("", "math", align=False)
