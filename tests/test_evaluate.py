"""recipe.visurf.evaluate: score-only end to end (hand-computed metrics), compare, generate mode
with the tiny model on synthetic parquet (resumable, several datasets, prompt styles, the
programmatic API), and loading a verl FSDP checkpoint. Rule-by-rule parity with the public
scripts: tests/test_eval_parity.py."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from recipe.visurf import eval_backends as B
from recipe.visurf import eval_scoring as S
from recipe.visurf import evaluate as E


def _resp(answer, think="look at it"):
    return f"<think>{think}</think><answer>{json.dumps(answer) if not isinstance(answer, str) else answer}</answer>"


def _obj(box, point=None):
    point = point or [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]
    return {"bbox_2d": box, "point_2d": point}


def _line(id_, ds, gt, response, **extra):
    gt = gt if isinstance(gt, str) else json.dumps(gt)
    return {"id": id_, "data_source": ds, "ground_truth": gt, "response": response, **extra}


# --------------------------------------------------------------------------------------------
# parsing adapter
# --------------------------------------------------------------------------------------------
def test_parse_response_adapter():
    p = S.parse_response(_resp([_obj([0, 0, 10, 10])], think="two words"), "grounding")
    assert p.format_valid and p.answer_valid and not p.objects.is_empty_list and p.think == "two words"
    assert p.boxes.tolist() == [[0, 0, 10, 10]]
    p = S.parse_response(_resp([]), "grounding")
    assert p.format_valid and p.objects.is_empty_list and len(p.boxes) == 0
    p = S.parse_response("no tags at all", "grounding")
    assert not p.format_valid and not p.answer_valid and not p.objects.is_empty_list
    p = S.parse_response(_resp([{"bbox_2d": [0, 0, 10, 10]}]), "grounding")  # point missing
    assert p.answer_valid and not p.format_valid and len(p.boxes) == 1 and len(p.objects.points) == 0
    p = S.parse_response(_resp([{"point_2d": [3, 4]}]), "gui")
    assert p.format_valid and p.points.tolist() == [[3, 4]] and len(p.boxes) == 0
    p = S.parse_response(_resp("\\boxed{42}"), "math")
    assert p.format_valid and p.answer == "42"
    assert not S.parse_response("<think></think><answer> </answer>", "math").answer_valid
    # the public math protocol reads \boxed{} from the whole response, not <answer>
    assert S.parse_response("<think>x</think> so \\boxed{7}", "math", "visionreasoner").answer == "7"


# --------------------------------------------------------------------------------------------
# score-only mode, end to end
# --------------------------------------------------------------------------------------------
@pytest.fixture
def predictions(tmp_path):
    from pycocotools import mask as mask_utils

    left = np.zeros((84, 84), dtype=np.uint8)
    left[:, :42] = 255
    Image.fromarray(left).save(tmp_path / "m1.png")
    top = np.zeros((84, 84), dtype=np.uint8, order="F")
    top[:42, :] = 1
    rle = mask_utils.encode(top)
    rle["counts"] = rle["counts"].decode()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "img.png")
    lines = [
        # refcocog (inclusive pixel boxes, 100 x 100): IoU 0.5 (miss: not > 0.5) and 0.8 (hit)
        _line("r1", "refcocog", [_obj([0, 0, 99, 99])], _resp([_obj([0, 0, 99, 49])]), image="img.png"),
        _line("r2", "refcocog", [_obj([200, 200, 299, 299])], _resp([_obj([200, 200, 299, 279])])),
        # grefcoco: correct non-object, unparseable answer on a non-object label, two objects both found
        _line("n1", "grefcoco", [], _resp([])),
        _line("n2", "grefcoco", [], "no idea"),
        _line("n3", "grefcoco", [_obj([0, 0, 10, 10]), _obj([100, 0, 110, 10])],
              _resp([_obj([100, 0, 110, 10]), _obj([0, 0, 10, 10])])),
        # reasonseg with GT masks (PNG path relative to the JSONL, and COCO RLE)
        _line("s1", "reasonseg", [_obj([0, 0, 420, 840])], _resp([_obj([0, 0, 420, 420])]), gt_mask="m1.png"),
        _line("s2", "reasonseg", [_obj([0, 0, 840, 420])], _resp([_obj([0, 0, 840, 420])]), gt_mask=rle),
        # gui: point in the element box / outside
        _line("u1", "omniact", [_obj([10, 10, 20, 20])], _resp([{"point_2d": [12, 19]}])),
        _line("u2", "omniact", [_obj([10, 10, 20, 20])], _resp([{"point_2d": [30, 30]}])),
        # anomaly: normal answered [], defect found, defect missed
        _line("a1", "realiad", [], _resp([])),
        _line("a2", "realiad", [_obj([0, 0, 50, 50])], _resp([_obj([0, 0, 50, 50])])),
        _line("a3", "realiad", [_obj([0, 0, 50, 50])], _resp([])),
        # math: option text for a letter label; 0.5 == 1/2; wrong
        _line("x1", "mathvista", "B", _resp("15"), choices=["12", "15", "20"]),
        _line("x2", "geo3k", "\\frac{1}{2}", _resp("0.5"), n_tokens=7),
        _line("x3", "geo3k", "3", _resp("4")),
    ]
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _check_outputs(out):
    for name in (E.METRICS, E.REPORT, E.PREDICTIONS, E.BARS_PNG, E.SAMPLES_PNG):
        assert (out / name).is_file(), name
    for png in (E.BARS_PNG, E.SAMPLES_PNG):
        with Image.open(out / png) as im:
            im.verify()
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 100
    metrics = json.loads((out / E.METRICS).read_text())
    assert set(metrics[E.PROTOCOL_KEY]) == {"options", "rules"}
    for ds, m in metrics.items():
        if ds == E.PROTOCOL_KEY:
            continue
        for k in E.M.FRACTION_KEYS:
            if m.get(k) is not None:
                assert 0.0 <= m[k] <= 1.0, (ds, k)
    return metrics


def test_score_only_end_to_end(predictions, tmp_path, capsys):
    out = tmp_path / "out"
    assert E.main(["--predictions", str(predictions), "--out", str(out)]) == 0
    m = _check_outputs(out)
    approx = pytest.approx

    assert m["refcocog"]["n"] == 2
    assert m["refcocog"]["gIoU"] == approx(0.65) and m["refcocog"]["cIoU"] == approx(13000 / 20000)
    assert m["refcocog"]["BboxAcc"] == approx(0.5) and "N-Acc" not in m["refcocog"]
    assert m["refcocog"]["iou_on"] == "boxes"

    g = m["grefcoco"]  # public rule: the unparseable answer n2 on a non-object sample says "no target"
    assert g["gIoU"] == approx(1.0) and g["cIoU"] == approx(1.0) and g["T-Acc"] == 1.0
    assert g["N-Acc"] == approx(1.0) and g["BboxAcc"] == approx(1.0) and g["format"] == approx(2 / 3)

    s = m["reasonseg"]
    assert s["iou_on"] == "masks"
    assert s["gIoU"] == approx(0.75) and s["cIoU"] == approx((1764 + 3528) / (3528 + 3528))

    assert m["omniact"]["Acc"] == approx(0.5) and "gIoU" not in m["omniact"]
    a = m["realiad"]
    assert a["Acc"] == approx(2 / 3) and a["AUC"] == approx(0.75) and a["N-Acc"] == approx(1.0)
    assert m["mathvista"]["Acc"] == 1.0 and m["geo3k"]["Acc"] == approx(0.5)
    assert "resp_tokens" not in m["geo3k"]  # token counts only when every line has n_tokens

    o = m["overall"]
    assert o["n"] == 15 and o["Acc"] == approx(5 / 8) and o["AUC"] == approx(0.75)
    assert o["N-Acc"] == approx(1.0)  # n1, n2 (public rule), a1

    report = (out / E.REPORT).read_text()
    assert "non-object rule `public`, BboxAcc `public`, math `mathverify`" in report
    assert "calculate_iou_with_bbox_nonobj.py" in report and "compute_bbox_iou" in report
    assert m[E.PROTOCOL_KEY]["options"]["non_object"] == "public"
    assert "| refcocog | grounding | 2 | 65.0 | 65.0 |" in report
    assert "`reasonseg`: masks" in report and "`refcocog`: boxes" in report
    assert len((out / E.PREDICTIONS).read_text().splitlines()) == 15
    assert "overall" in capsys.readouterr().out


def test_score_only_strict_non_object_rule(predictions, tmp_path):
    """--non-object-rule strict: the unparseable answer n2 is wrong everywhere, and the report says so."""
    out = tmp_path / "strict"
    assert E.main(["--predictions", str(predictions), "--out", str(out), "--non-object-rule", "strict",
                   "--bbox-acc-strict", "--math-protocol", "mathvista"]) == 0
    m = _check_outputs(out)
    g = m["grefcoco"]
    assert g["gIoU"] == pytest.approx(2 / 3) and g["N-Acc"] == pytest.approx(0.5)
    assert g["BboxAcc"] == pytest.approx(2 / 3)
    assert m["overall"]["N-Acc"] == pytest.approx(2 / 3)
    # mathvista: "15" is the text of option B; "0.5" vs "\\frac{1}{2}" is not an exact string match
    assert m["mathvista"]["Acc"] == 1.0 and m["geo3k"]["Acc"] == 0.0
    report = (out / E.REPORT).read_text()
    assert "non-object rule `strict`, BboxAcc `strict`, math `mathvista`" in report
    assert "calculate_score.py" in report


def test_score_only_one_class_auc_and_bad_input(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_line("a1", "realiad", [], _resp([]))) + "\n")
    out = tmp_path / "out"
    E.main(["--predictions", str(path), "--out", str(out)])
    m = json.loads((out / E.METRICS).read_text())["realiad"]
    assert m["AUC"] is None and any("only normal" in n for n in m["notes"])
    assert "only normal" in (out / E.REPORT).read_text()
    path.write_text(json.dumps({"id": 1, "response": "x"}) + "\n")
    with pytest.raises(ValueError, match="missing"):
        E.main(["--predictions", str(path), "--out", str(out)])
    path.write_text(json.dumps(_line("q", "no_such_source", [], "x")) + "\n")
    with pytest.raises(ValueError, match="unknown data_source 'no_such_source'"):
        E.main(["--predictions", str(path), "--out", str(out)])


def _preds_file(path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(lines))
    return str(path)


def _good(i: int) -> bytes:
    return (json.dumps(_line(f"m{i}", "geo3k", "3", _resp("3"))) + "\n").encode()


def test_score_only_input_must_be_whole_and_errors_name_the_line(tmp_path, capsys):
    """--predictions is the user's file, not an interrupted run of ours: a bad last line is an error
    naming file:line (never a warning and a smaller n); so are bytes that are not UTF-8."""
    out = str(tmp_path / "out")
    cases = {
        "truncated_last": ([_good(0), _good(1), _good(2), _good(3)[:25]], r"p.jsonl:4: not a JSON line"),
        "bad_middle": ([_good(0), b"{oops\n", _good(2)], r"p.jsonl:2: not a JSON line"),
        "latin1": ([_good(0), b'{"id": "caf\xe9"}\n'], r"p.jsonl:2: not UTF-8 \(byte 0xe9 at column 12\)"),
        "not_an_object": ([_good(0), b"[1, 2]\n"], r"p.jsonl:2: prediction lines need"),
    }
    for name, (lines, message) in cases.items():
        path = _preds_file(tmp_path / "p.jsonl", lines)
        with pytest.raises(ValueError, match=message):
            E.main(["--predictions", path, "--out", out])
        assert E.cli(["--predictions", path, "--out", out]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and "p.jsonl:" in err[-1], name
    # a UTF-8 BOM (written by some editors) and a missing final newline are fine: n counts every line
    path = _preds_file(tmp_path / "p.jsonl", [b"\xef\xbb\xbf" + _good(0), _good(1), _good(2).rstrip(b"\n")])
    assert E.main(["--predictions", path, "--out", out]) == 0
    assert json.loads((tmp_path / "out" / E.METRICS).read_text())["overall"]["n"] == 3
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such predictions file"):
        E.main(["--predictions", missing, "--out", out])
    assert E.cli(["--predictions", missing, "--out", out]) == 1
    assert capsys.readouterr().err.strip() == f"error: {missing}: no such predictions file"
    with pytest.raises(FileNotFoundError, match="not a file"):
        E.read_predictions(tmp_path)


def test_resumable_predictions_drop_only_a_truncated_last_line(tmp_path, caplog):
    path = tmp_path / E.PREDICTIONS
    assert E.read_predictions(path, resumable=True) == []  # not started yet
    _preds_file(path, [_good(0), _good(1), _good(2)[:30]])
    assert [r["id"] for r in E.read_predictions(path, resumable=True)] == ["m0", "m1"]
    assert "predictions.jsonl:3: dropping a truncated last line (interrupted run)" in caplog.text
    _preds_file(path, [_good(0), b"{oops\n", _good(2)])
    with pytest.raises(ValueError, match="predictions.jsonl:2: not a JSON line"):
        E.read_predictions(path, resumable=True)


def test_a_missing_gt_mask_names_the_sample(tmp_path):
    path = tmp_path / "p.jsonl"
    line = _line("s9", "reasonseg", [_obj([0, 0, 10, 10])], _resp([_obj([0, 0, 10, 10])]), gt_mask="masks/none.png")
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=r"sample 's9' \(reasonseg\): cannot read gt_mask 'masks/none.png'"):
        E.main(["--predictions", str(path), "--out", str(tmp_path / "out")])


def test_segmenter_hook(predictions):
    class HalfSegmenter:  # stands in for SAM2: the left half of the image, whatever the boxes
        name = "fake"
        calls = 0

        def __call__(self, image, boxes, points, shape):
            assert image.size == (64, 64) and len(boxes) == 1
            HalfSegmenter.calls += 1
            mask = np.zeros(shape, dtype=bool)
            mask[:, : shape[1] // 2] = True
            return mask

    records = E.read_predictions(predictions)
    s1 = next(r for r in records if r["id"] == "s1")
    metrics, _ = S.score_all([{**s1, "image": "img.png"}], segmenter=HalfSegmenter(), base_dir=predictions.parent)
    assert HalfSegmenter.calls == 1
    assert metrics["reasonseg"]["iou_on"] == "masks (fake)" and metrics["reasonseg"]["gIoU"] == 1.0
    metrics, _ = S.score_all([s1], segmenter=HalfSegmenter(), base_dir=predictions.parent)  # no image
    assert metrics["reasonseg"]["iou_on"] == "masks" and metrics["reasonseg"]["gIoU"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown segmenter"):
        S.make_segmenter("sam3", None)
    assert S.make_segmenter("none", None) is None
    if importlib.util.find_spec("sam2") is None:  # import-guarded: a clear message, not a crash at import
        with pytest.raises(ImportError, match="optional `sam2` package"):
            S.make_segmenter("sam2", None)


def test_compare(predictions, tmp_path, capsys):
    a, b = tmp_path / "visurf", tmp_path / "grpo"
    E.main(["--predictions", str(predictions), "--out", str(a)])
    lines = [json.loads(x) for x in predictions.read_text().splitlines()]
    for x in lines:
        if x["id"] == "r1":
            x["response"] = _resp([_obj([0, 0, 99, 99])])  # now IoU 1
    (tmp_path / "p2.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    E.main(["--predictions", str(tmp_path / "p2.jsonl"), "--out", str(b)])
    capsys.readouterr()
    assert E.main(["--compare", str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert "| data_source | metric | visurf | grpo |" in table
    assert "| refcocog | gIoU | 65.0 | 90.0 |" in table
    with pytest.raises(FileNotFoundError):
        E.main(["--compare", str(tmp_path / "nope")])


# --------------------------------------------------------------------------------------------
# generate mode with the tiny model
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from verl_ext.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def parquets(tmp_path_factory):
    from data_prep.synthetic import generate

    d = tmp_path_factory.mktemp("data")
    generate("grounding", 3, 0, str(d / "g.parquet"), image_size=112)
    generate("math", 2, 0, str(d / "m.parquet"), image_size=112)
    return [str(d / "g.parquet"), str(d / "m.parquet")]


def test_generate_mode_and_resume(tiny, parquets, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = ["--model", str(tiny), "--data", *parquets, "--out", str(out), "--max-new-tokens", "8", "--batch-size", "2"]
    assert E.main(args) == 0
    m = _check_outputs(out)
    assert m["synthetic_grounding"]["n"] == 3 and m["synthetic_math"]["n"] == 2 and m["overall"]["n"] == 5
    assert "gIoU" in m["synthetic_grounding"] and "Acc" in m["synthetic_math"]
    preds = [json.loads(x) for x in (out / E.PREDICTIONS).read_text().splitlines()]
    assert len(preds) == 5 and all(0 < p["n_tokens"] <= 8 for p in preds)
    assert {p["data_source"] for p in preds} == {"synthetic_grounding", "synthetic_math"}

    # resume: keep 3 lines plus a truncated one (an interrupted run); only 2 rows are generated again
    lines = (out / E.PREDICTIONS).read_text().splitlines()
    (out / E.PREDICTIONS).write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    generated = []
    real = B.HFGenerator.generate
    monkeypatch.setattr(B.HFGenerator, "generate", lambda self, rows: generated.extend(r["id"] for r in rows)
                        or real(self, rows))
    assert E.main(args) == 0
    again = [json.loads(x) for x in (out / E.PREDICTIONS).read_text().splitlines()]
    assert again[:3] == preds[:3]
    assert sorted(generated) == sorted(p["id"] for p in preds[3:])
    assert sorted(p["id"] for p in again) == sorted(p["id"] for p in preds)

    # nothing left to do: the model is not even loaded
    monkeypatch.setattr(B, "resolve_model_dir", lambda *a: pytest.fail("model loaded with nothing to generate"))
    assert E.main(args) == 0


def test_verl_fsdp_checkpoint_is_merged_and_loaded(tiny, parquets, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText

    # a verl 0.9.1 FSDP checkpoint of one rank: actor/{huggingface/, fsdp_config.json, shards}
    actor = tmp_path / "ckpts" / "global_step_3" / "actor"
    shutil.copytree(tiny, actor / "huggingface", ignore=shutil.ignore_patterns("*.safetensors"))
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    torch.save(model.state_dict(), actor / "model_world_size_1_rank_0.pt")
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
    (tmp_path / "ckpts" / "latest_checkpointed_iteration.txt").write_text("3")

    out = tmp_path / "eval"
    merged = B.resolve_model_dir(str(tmp_path / "ckpts"), out)
    assert merged == out / "merged_model" and (merged / "config.json").is_file()
    reloaded = AutoModelForImageTextToText.from_pretrained(merged, dtype=torch.float32)
    ref, got = model.state_dict(), reloaded.state_dict()
    for k in list(ref)[:5]:
        torch.testing.assert_close(got[k], ref[k], atol=1e-2, rtol=1e-2)  # merged in bf16
    assert B.resolve_model_dir(str(actor.parent), out) == merged  # cached, also from global_step_N
    assert B.resolve_model_dir(str(tiny), out) == tiny  # an HF directory as is
    with pytest.raises(ValueError, match="neither an HF model directory"):
        B.resolve_model_dir(str(tmp_path), out)

    assert E.main(["--model", str(actor), "--data", parquets[0], "--out", str(out), "--limit", "1",
                   "--max-new-tokens", "4"]) == 0
    assert json.loads((out / E.METRICS).read_text())["overall"]["n"] == 1


def _as_source(src: str, dst, data_source: str) -> str:
    """A copy of the parquet ``src`` with every row's data_source set to ``data_source`` (ids kept)."""
    import pandas as pd

    df = pd.read_parquet(src)
    df["data_source"] = data_source
    df.to_parquet(dst)
    return str(dst)


def test_generate_several_datasets_sharing_ids(tiny, parquets, tmp_path):
    """Issue 14 item 13: RefCOCO and RefCOCO+ share ref/sentence ids; ids are unique per (data_source, id)."""
    a = _as_source(parquets[0], tmp_path / "refcoco_val.parquet", "refcoco")
    b = _as_source(parquets[0], tmp_path / "refcoco+_val.parquet", "refcoco+")
    out = tmp_path / "eval"
    assert E.main(["--model", str(tiny), "--data", a, b, "--out", str(out), "--max-new-tokens", "4"]) == 0
    m = json.loads((out / E.METRICS).read_text())
    assert m["refcoco"]["n"] == 3 and m["refcoco+"]["n"] == 3 and m["overall"]["n"] == 6
    preds = E.read_predictions(out / E.PREDICTIONS)
    assert sorted(B.sample_key(p) for p in preds) == sorted([("refcoco", p["id"]) for p in preds[:3]]
                                                           + [("refcoco+", p["id"]) for p in preds[:3]])
    assert E.main(["--model", str(tiny), "--data", a, b, "--out", str(out), "--max-new-tokens", "4"]) == 0  # resume
    assert len(E.read_predictions(out / E.PREDICTIONS)) == 6
    # the same file twice is a real duplicate: named, with both places
    with pytest.raises(ValueError, match=r"duplicate sample \(data_source='refcoco'.*refcoco_val.parquet row 0"):
        E.main(["--model", str(tiny), "--data", a, a, "--out", str(tmp_path / "dup")])


def test_generate_prompt_style_and_programmatic_api(tiny, parquets, tmp_path, monkeypatch):
    from verl_ext.constants import build_prompt

    prompts = []
    real = B.HFGenerator.generate
    monkeypatch.setattr(B.HFGenerator, "generate", lambda self, rows: prompts.extend(
        (r["data_source"], r["extra_info"]["question"], r["prompt"][0]["content"]) for r in rows) or real(self, rows))
    out = tmp_path / "vr"
    report = E.evaluate(parquets, str(tiny), out, max_new_tokens=4, prompt_style="visionreasoner",
                        protocol=E.EvalProtocol(math="visionreasoner"),
                        group_by=lambda rec: rec["data_source"].split("_")[1])
    assert len(prompts) == 5
    for ds, question, content in prompts:
        task = "math" if ds == "synthetic_math" else "grounding"
        assert content == build_prompt(task, question, "visionreasoner")
    assert report["n"] == 5 and report["metrics"]["overall"]["n"] == 5
    assert set(report["groups"]) == {"grounding", "math"} and report["groups"]["math"]["n"] == 2
    assert report["protocol"]["options"]["prompt_style"] == "visionreasoner"
    assert report["protocol"]["options"]["math"] == "visionreasoner"
    assert "calculate_math_acc.py" in report["protocol"]["rules"]["math"]
    assert json.loads((out / "groups.json").read_text())["grounding"]["n"] == 3
    assert all(p["prompt_style"] == "visionreasoner" for p in E.read_predictions(out / E.PREDICTIONS))
    with pytest.raises(ValueError, match="prompt style"):  # resuming under another style would mix prompts
        E.evaluate(parquets, str(tiny), out, max_new_tokens=4)
    with pytest.raises(ValueError, match="needs either model"):
        E.evaluate(parquets, None, out)


def test_eval_protocol_rejects_unknown_rules():
    with pytest.raises(ValueError, match="unknown math rule 'gpt4'; known: mathverify, mathvista, visionreasoner"):
        E.EvalProtocol(math="gpt4")
    with pytest.raises(ValueError, match="unknown non_object rule"):
        E.EvalProtocol(non_object="lenient")
    with pytest.raises(ValueError, match="unknown reader rule"):
        E.EvalProtocol(reader="regex")
    with pytest.raises(ValueError, match="unknown protocol preset"):
        E.preset("paper")
    assert set(E.EvalProtocol().describe()) == {"reader", "non_object", "BboxAcc", "gui", "anomaly", "math"}
