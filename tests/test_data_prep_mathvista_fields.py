"""data_prep.mathvista carries MathVista's scoring fields (``question_type``, ``answer_type``,
``precision``, ``choices``) into ``extra_info`` (issue 14), and ``--math-protocol mathvista``
(MathVista evaluation/calculate_score.py ``normalize_extracted_answer``) scores a prepared row
with the row's own precision.

Records: the real testmini records of tests/assets/mathvista_testmini_records.json
(lupantech/MathVista data/testmini.json, commit named in the file), placeholder images of the
recorded size. Real testmini float answers all have as many decimals as their ``precision``
(so inferring the precision from the label happens to agree there); the end-to-end check
therefore adds one variant of pid 1 (answer "1.2") whose record says precision 2, the case
where only the carried field gives MathVista's verdict.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_prep_fixtures as F

from data_prep import common, mathvista
from data_prep.common import RowError

ASSET = Path(__file__).parent / "assets" / "mathvista_testmini_records.json"
RECORDS = {r["pid"]: r for r in json.loads(ASSET.read_text())["records"]}
VARIANT = "1p2"  # pid 1 with precision 2 instead of 1 (not a real record; see the module docstring)


def _records(variant: bool = False, pids=None) -> dict:
    recs = {pid: dict(r) for pid, r in RECORDS.items() if pids is None or pid in pids}
    if variant:
        recs[VARIANT] = dict(RECORDS["1"], pid=VARIANT, precision=2)
    return recs


def make_root(root: Path, variant: bool = False, pids=None) -> Path:
    """MathVista checkout (official layout: data/testmini.json, images in data/images/)."""
    recs = _records(variant, pids)
    for r in recs.values():
        F.write_image(str(root / "data" / r["image"]), r["img_width"], r["img_height"])
    (root / "data" / "testmini.json").write_text(json.dumps(recs))
    return root


def make_hf_parquet(path: Path) -> Path:
    """The HF AI4Math/MathVista layout: precision is a float64 column (null when absent)."""
    rows = []
    for r in RECORDS.values():
        rows.append({"pid": r["pid"], "question": r["question"], "image": r["image"],
                     "decoded_image": {"bytes": F.image_bytes(64, 48, fmt="JPEG"), "path": r["image"]},
                     "choices": r["choices"], "unit": r["unit"], "precision": r["precision"], "answer": r["answer"],
                     "question_type": r["question_type"], "answer_type": r["answer_type"]})
    schema = pa.schema([("pid", pa.string()), ("question", pa.string()), ("image", pa.string()),
                        ("decoded_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("choices", pa.list_(pa.string())), ("unit", pa.string()), ("precision", pa.float64()),
                        ("answer", pa.string()), ("question_type", pa.string()), ("answer_type", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mv")
    out = {"root": d / "root.parquet", "hf": d / "hf.parquet", "variant": d / "variant.parquet",
           "small": d / "small.parquet"}
    assert mathvista.main(["--root", str(make_root(d / "MathVista")), "--out", str(out["root"]), "--quiet"]) == 0
    assert mathvista.main(["--hf-parquet", str(make_hf_parquet(d / "testmini.parquet")), "--out", str(out["hf"]),
                           "--quiet"]) == 0
    assert mathvista.main(["--root", str(make_root(d / "MathVistaVariant", variant=True)), "--out",
                           str(out["variant"]), "--quiet"]) == 0
    assert mathvista.main(["--root", str(make_root(d / "MathVistaSmall", variant=True, pids=("1", "2", "3"))),
                           "--out", str(out["small"]), "--quiet"]) == 0
    return out


# ---------------------------------------------------------------------------------------------
# The fields arrive, with one parquet type per column
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["root", "hf"])
def test_scoring_fields_arrive_in_extra_info(prepared, source):
    table = pq.read_table(prepared[source])
    assert table.schema.equals(common.ROW_SCHEMA)  # the one row schema every source writes
    ei_type = table.schema.field("extra_info").type
    assert ei_type.field("precision").type == pa.float64()
    assert ei_type.field("question_type").type == ei_type.field("answer_type").type == pa.string()
    rows = table.to_pylist()
    assert [r["extra_info"]["id"] for r in rows] == list(RECORDS)  # every record converted
    for row in rows:
        rec, ei = RECORDS[row["extra_info"]["id"]], row["extra_info"]
        assert (ei["question_type"], ei["answer_type"]) == (rec["question_type"], rec["answer_type"])
        assert ei["precision"] == (None if rec["precision"] is None else float(rec["precision"]))
        assert ei["choices"] == rec["choices"]
    by_id = {r["extra_info"]["id"]: r["extra_info"] for r in rows}
    assert by_id["1"]["precision"] == 1.0 and by_id["108"]["precision"] == 2.0
    assert by_id["225"]["answer_type"] == "list" and by_id["225"]["precision"] is None
    assert by_id["3"]["question_type"] == "multi_choice" and by_id["3"]["choices"] == ["135°", "140°", "145°", "150°"]


def test_other_sources_write_null_scoring_fields():
    row = common.build_row(data_source="geo3k", question="Find x.", image_bytes=b"x", ground_truth="B",
                           row_id="0", split="test", width=1, height=1, choices=["1", "3"])
    assert {k: row["extra_info"][k] for k in ("question_type", "answer_type", "precision")} == {
        "question_type": None, "answer_type": None, "precision": None}


def test_scoring_fields_normalisation_and_errors():
    f = mathvista.scoring_fields
    rec = {"name": "pid 1", "question_type": "free_form", "answer_type": "float"}
    assert f({**rec, "precision": 2}, None) == {"question_type": "free_form", "answer_type": "float", "precision": 2.0}
    assert f({**rec, "precision": 1.0}, None)["precision"] == 1.0
    assert f({**rec, "precision": math.nan}, None)["precision"] is None  # an HF float column's "none" via pandas
    assert f({**rec, "precision": None}, None)["precision"] is None
    assert f({"name": "pid 9"}, None) == {"question_type": None, "answer_type": None, "precision": None}
    for bad in (1.5, -1, "two", math.inf):
        with pytest.raises(RowError) as e:
            f({**rec, "precision": bad}, None)
        assert e.value.reason == "bad_precision" and "pid 1" in e.value.message
    with pytest.raises(RowError) as e:
        f({"name": "pid 4", "question_type": "multi_choice", "answer_type": "text"}, None)
    assert e.value.reason == "no_choices"


def test_prepared_file_passes_validate_and_loads_in_verl(prepared):
    from data_prep import validate

    assert validate.validate(str(prepared["small"])) == []  # row checks + verl RLHFDataset load (4 rows)


# ---------------------------------------------------------------------------------------------
# End to end: prepared row -> evaluation record -> mathvista protocol uses the row's precision
# ---------------------------------------------------------------------------------------------
def _scored(parquet: Path, responses: dict[str, str], protocol: str = "mathvista") -> dict[str, bool]:
    from recipe.visurf import eval_backends as B
    from recipe.visurf import eval_scoring as S
    from verl_ext.eval_protocols import EvalProtocol

    out = {}
    for row in B.iter_rows([str(parquet)]):  # the evaluation's own reader (pandas) and record builder
        if row["id"] in responses:
            record = {**B.row_record(row), "response": responses[row["id"]]}
            out[row["id"]] = S.score_record(record, EvalProtocol(math=protocol)).correct
    return out


def _answer(text: str) -> str:
    return f"<think>t</think><answer>{text}</answer>"


def test_mathvista_protocol_uses_the_rows_precision(prepared):
    # calculate_score.py: str(round(float("1.23"), precision)) == answer "1.2"?
    #   precision 1 -> "1.2" == "1.2" (correct); precision 2 -> "1.23" != "1.2" (wrong).
    # Inferred from the label "1.2" the precision would be 1 for both rows.
    verdict = _scored(prepared["variant"], {"1": _answer("1.23"), VARIANT: _answer("1.23")})
    assert verdict == {"1": True, VARIANT: False}
    # and "1.20" is right under both (round(1.2, 2) -> "1.2")
    assert _scored(prepared["variant"], {"1": _answer("1.20"), VARIANT: _answer("1.20")}) == {"1": True, VARIANT: True}


def test_mathvista_protocol_on_real_prepared_rows(prepared):
    # hand-computed with calculate_score.py normalize_extracted_answer + safe_equal
    responses = {
        "108": _answer("51.041"),  # float, precision 2: round(51.041, 2) -> "51.04" == "51.04"
        "2": _answer("1000.0"),  # integer: str(int(float("1000.0"))) -> "1000"
        "3": _answer("145"),  # multi_choice: nearest option by edit distance -> "145°" (answer)
        "6": _answer("(B)"),  # multi_choice: (B) -> letter B -> "7cm" != "6cm"
        "225": _answer("[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 6]"),  # list: str(x)
    }
    assert _scored(prepared["hf"], responses) == {"108": True, "2": True, "3": True, "6": False, "225": True}


def test_evaluate_cli_generate_mode_carries_the_fields(prepared, tiny_model_dir, tmp_path):
    """``python -m recipe.visurf.evaluate --model TINY --data mv.parquet --math-protocol mathvista``:
    the prediction lines carry the rows' fields; the same lines with set answers score by them."""
    from recipe.visurf import evaluate as E

    out = tmp_path / "eval"
    assert E.main(["--model", str(tiny_model_dir), "--data", str(prepared["small"]), "--out", str(out),
                   "--max-new-tokens", "2", "--batch-size", "4", "--math-protocol", "mathvista"]) == 0
    preds = [json.loads(x) for x in (out / E.PREDICTIONS).read_text().splitlines()]
    by_id = {p["id"]: p for p in preds}
    assert sorted(by_id) == sorted(["1", VARIANT, "2", "3"])
    assert (by_id["1"]["precision"], by_id[VARIANT]["precision"], by_id["1"]["answer_type"]) == (1.0, 2.0, "float")
    assert by_id["2"]["answer_type"] == "integer" and "precision" not in by_id["2"]  # a null field is left out
    assert by_id["3"]["question_type"] == "multi_choice" and by_id["3"]["choices"][2] == "145°"
    metrics = json.loads((out / E.METRICS).read_text())
    assert metrics["mathvista"]["n"] == 4 and metrics[E.PROTOCOL_KEY]["options"]["math"] == "mathvista"

    answers = {"1": "1.23", VARIANT: "1.23", "2": "1000", "3": "C"}  # right, wrong (precision 2), right, right
    lines = [{**p, "response": _answer(answers[p["id"]])} for p in preds]
    (tmp_path / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    assert E.main(["--predictions", str(tmp_path / "preds.jsonl"), "--out", str(tmp_path / "s"),
                   "--math-protocol", "mathvista"]) == 0
    assert json.loads((tmp_path / "s" / E.METRICS).read_text())["mathvista"]["Acc"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("answer", [None, float("nan"), "", "  "])
def test_a_missing_answer_is_a_skipped_record_not_the_label_nan(answer):
    from data_prep.common import RowError
    from data_prep.mathvista import math_label

    with pytest.raises(RowError, match="no answer") as e:
        math_label({"name": "pid 7", "answer": answer, "question_type": "free_form"})
    assert e.value.reason == "no_answer"
    assert math_label({"name": "pid 8", "answer": 3.5, "question_type": "free_form"}) == ("3.5", None)
