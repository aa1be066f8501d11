"""data_prep.to_sft reads labels exactly as the GT injection does (one label reader, issue 19.5).

Every label form the recipe accepts (JSON string, list-of-struct column, one struct, a number, a
plain string) and every ``data_source`` (the project's table, verl's own sources, a user's)
becomes an SFT row whose assistant turn is the text the GT injection would train on
(``verl_ext.visurf.gt_injection.gt_response_texts``); a label the GT injection rejects fails the
conversion with the renderer's message, naming the row. Expected answers are written out by
hand (rounding half up, clipping to the 840 frame, swapped corners reordered: docs/METHOD.md §3.1).
The parquets are real pyarrow files read back by ``convert``, as verl's datasets read them.
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.common import DataPrepError
from data_prep.to_sft import convert, main
from verl_ext.constants import DATA_SOURCE_TASK
from verl_ext.visurf.config import VisurfConfig
from verl_ext.visurf.gt_injection import gt_response_texts

OBJ_TYPE = pa.struct([("bbox_2d", pa.list_(pa.float64())), ("point_2d", pa.list_(pa.float64()))])
ONE = '<answer>[{"bbox_2d": [10, 21, 30, 40], "point_2d": [15, 25]}]</answer>'


def _write(path, source, labels, label_type=None, images=False):
    """An RL parquet of one data_source: one text prompt per label (optionally one image each)."""
    n = len(labels)
    columns = {
        "data_source": pa.array([source] * n),
        "prompt": pa.array([[{"role": "user", "content": ("<image>" if images else "") + f"question {i}"}]
                            for i in range(n)]),
        "reward_model": pa.array([{"style": "rule", "ground_truth": g} for g in labels],
                                 type=pa.struct([("style", pa.string()), ("ground_truth", label_type)])
                                 if label_type is not None else None),
        "extra_info": pa.array([{"id": f"{source}-{i}", "index": i} for i in range(n)]),
    }
    if images:
        columns["images"] = pa.array([[{"bytes": b"img"}]] * n)
    pq.write_table(pa.table(columns), path)
    return path


def _answers(src, tmp_path, **kw):
    out = tmp_path / "sft.parquet"
    assert convert(src, out, **kw) == pq.read_metadata(src).num_rows
    rows = pq.read_table(out).to_pylist()
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    return [row["messages"][-1]["content"] for row in rows]


# the same objects in every form a loader can hand over
LABEL_FORMS = {
    "json_string": ('[{"bbox_2d": [10.4, 20.5, 30, 40], "point_2d": [15, 25]}]', pa.string()),
    "list_of_struct": ([{"bbox_2d": [10.4, 20.5, 30.0, 40.0], "point_2d": [15.0, 25.0]}], pa.list_(OBJ_TYPE)),
    "one_struct": ({"bbox_2d": [10.4, 20.5, 30.0, 40.0], "point_2d": [15.0, 25.0]}, OBJ_TYPE),
    "swapped_corners_string": ('[{"bbox_2d": [30, 40, 10.4, 20.5], "point_2d": [15, 25]}]', pa.string()),
}


@pytest.mark.parametrize("form", list(LABEL_FORMS))
def test_every_object_label_form_converts_to_the_aligned_gt(tmp_path, form):
    label, label_type = LABEL_FORMS[form]
    src = _write(tmp_path / "rl.parquet", "refcocog", [label], label_type, images=True)
    assert _answers(src, tmp_path) == [ONE]


@pytest.mark.parametrize("source", sorted(DATA_SOURCE_TASK))
def test_every_project_data_source_converts(tmp_path, source):
    task = DATA_SOURCE_TASK[source]
    label, expected = {
        "grounding": ('[{"bbox_2d": [900, 5, 100, 50], "point_2d": [120, 20]}]',
                      '<answer>[{"bbox_2d": [100, 5, 840, 50], "point_2d": [120, 20]}]</answer>'),
        "anomaly": ("[]", "<answer>[]</answer>"),
        "lesion": ('[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}]',
                   '<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}]</answer>'),
        "gui": ('[{"bbox_2d": [100, 200, 300, 400], "point_2d": [200.5, 300]}]', '<answer>[{"point_2d": [201, 300]}]</answer>'),
        "math": (" \\frac{1}{2} ", "<answer>\\frac{1}{2}</answer>"),
    }[task]
    src = _write(tmp_path / "rl.parquet", source, [label], pa.string(), images=True)
    assert _answers(src, tmp_path) == [expected]


def test_sources_outside_the_table_and_number_labels_convert_with_the_template(tmp_path):
    """verl's GSM8K parquet (text only, integer or string answers) and a user's own source: the
    label in ``--gt-template``, as the GT injection renders any source outside the table."""
    gsm8k = _write(tmp_path / "gsm8k.parquet", "openai/gsm8k", [72, 1000000], pa.int64())
    assert _answers(gsm8k, tmp_path, gt_template="#### {answer}") == ["#### 72", "#### 1000000"]
    mine = _write(tmp_path / "mine.parquet", "my_qa", ["Paris ", "Rome"], pa.string())
    assert _answers(mine, tmp_path, gt_template="A: {answer}") == ["A: Paris", "A: Rome"]
    # a number label of a project math source: the number as text
    math = _write(tmp_path / "math.parquet", "geo3k", [3.5], pa.float64(), images=True)
    assert _answers(math, tmp_path) == ["<answer>3.5</answer>"]


@pytest.mark.parametrize("align", [True, False])
def test_to_sft_answer_is_the_gt_injections_text_for_every_form(tmp_path, align):
    """The property the issue asks for: the SFT target equals the GT member's text, label for label."""
    # (a gui label is one object with its box and point: every object form above is one)
    cases = [(src, label, t) for src in ("refcocog", "omniact") for label, t in LABEL_FORMS.values()]
    cases += [("openai/gsm8k", 72, pa.int64()), ("mathvista", "B", pa.string()), ("realiad", "[]", pa.string())]
    control = VisurfConfig(align=align)
    for i, (source, label, label_type) in enumerate(cases):
        src = _write(tmp_path / f"rl{i}.parquet", source, [label], label_type)
        read_back = pq.read_table(src).to_pylist()[0]["reward_model"]["ground_truth"]  # as a loader hands it over
        texts, reasons = gt_response_texts([read_back], [source], control)
        assert reasons == [""], (source, label)
        assert _answers(src, tmp_path, align=align) == texts, (source, label)


@pytest.mark.parametrize("label, label_type, message", [
    (None, pa.string(), r"row 1 \(id 'refcocog-1', data_source 'refcocog'\): reward_model.ground_truth is missing"),
    ("  ", pa.string(), r"row 1 .*ground_truth is missing or empty"),
    ('[{"bbox_2d": [1, 2]}]', pa.string(), r"row 1 \(id 'refcocog-1'.*bad grounding label"),
    ([{"bbox_2d": [1.0, 2.0], "point_2d": [1.0, 1.0]}], pa.list_(OBJ_TYPE), r"row 1 .*bad grounding label"),
])
def test_a_label_the_gt_injection_rejects_fails_naming_the_row(tmp_path, capsys, label, label_type, message):
    good = '[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}]'
    if label_type != pa.string():
        good = [{"bbox_2d": [1.0, 2.0, 3.0, 4.0], "point_2d": [2.0, 3.0]}]
    src = _write(tmp_path / "rl.parquet", "refcocog", [good, label], label_type)
    read_back = pq.read_table(src).to_pylist()[1]["reward_model"]["ground_truth"]
    assert gt_response_texts([read_back], ["refcocog"], VisurfConfig())[1] != [""]  # rejected there too
    out = tmp_path / "sft.parquet"
    with pytest.raises(DataPrepError, match=message):
        convert(src, out)
    assert not out.exists()
    assert main(["--in", str(src), "--out", str(out)]) == 2
    assert "row 1" in capsys.readouterr().err and not out.exists()
