"""Held-out evaluation of one model directory: greedy accuracy per part, format rate, GT log-likelihood.

Greedy decoding and scoring are the evaluation CLI's (``recipe.visurf.evaluate.evaluate``, ``hf``
backend, the same as ``python -m recipe.visurf.evaluate --model DIR --data FILE
--non-object-rule strict --bbox-acc-strict --group-id-regex '(?:grid_target|grid_source)-(\\w+)-'``),
with the strict rules: a row is correct when its answer is exactly one box with IoU > 0.5 with the
label's box (parts a/b, source rows), or a well-formed ``[]`` (part c; under the public rule any
unreadable answer would count as "no target").

``acc``: the CLI's ``BboxAcc`` (share of rows correct) overall; ``acc_<part>``: the same per part
(a / b / c / d; retention rows: ``source``); ``format``: share of responses in the full
``<think>…</think><answer>[json]</answer>`` format. ``ll_<part>``: mean over the part's rows of
``log(sum_k p(<think>{think_k}</think><answer>{gt}</answer>) + p(<answer>{gt}</answer>))`` (each with
EOS; ``think_k`` = template k of ``thinks.THINK_TEMPLATES`` for the row's scene): the model's
probability of the correct answer in any of the base's thinking styles or in the injected GT's
answer-only style, a smooth measure that moves before greedy accuracy does, and favours neither style.

``style_gap``: under the thinking prompt, the mean log-likelihood of the correct answer with a think
block (``log sum_k p(think_k + answer)``) and without (``log p(<answer>{gt}</answer>)``) and their
difference: how foreign the paper's answer-only GT is to the model (a few nats for an
instruction-tuned model). ``sampled_accuracy``: the share of temperature-1 samples that are correct
(the strict rules above), per part: how often RL's own rollouts find the answer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from recipe.visurf.micro.task import part_of
from verl_ext.constants import ANSWER_TEMPLATE

MAX_NEW_TOKENS = 112  # the longest base response (5 objects listed + answer) is ~100 tokens


def logsumexp2(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))``, stable."""
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def strict_protocol():
    """The instrument's scoring rules (module docstring): the evaluation CLI's ``--non-object-rule strict
    --bbox-acc-strict``."""
    from verl_ext.eval_protocols import EvalProtocol

    return EvalProtocol(non_object="strict", bbox_acc="strict")


def _part(record: dict) -> str:
    return part_of(record["id"])


def report_summary(report: dict) -> dict:
    """``{n, acc, format, acc_<part>, format_<part>}`` from an ``evaluate()`` report grouped by part."""
    overall = report["metrics"]["overall"]
    out = {"n": int(overall["n"]), "acc": overall.get("BboxAcc"), "format": overall.get("format")}
    for part, m in sorted(report.get("groups", {}).items()):
        out[f"acc_{part}"] = m.get("BboxAcc")
        out[f"format_{part}"] = m.get("format")
    return out


def _load(model_dir):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir)
    return AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval(), proc


def style_logliks(model, proc, rows: list[dict]) -> tuple[list[float], list[float]]:
    """Per row, under its own (thinking) prompt: ``log sum_k p(think_k + answer)`` and
    ``log p(answer only)`` of the correct answer (module docstring)."""
    from recipe.visurf.micro.base import base_response
    from recipe.visurf.micro.lm import encode_prompt, response_loglik
    from recipe.visurf.micro.thinks import row_thinks

    prompts = [encode_prompt(r, proc) for r in rows]
    gts = [r["reward_model"]["ground_truth"] for r in rows]
    thinks = [row_thinks(r) for r in rows]
    think_ll = [-math.inf] * len(rows)
    for k in range(len(thinks[0])):
        ll_k = response_loglik(model, proc, prompts, [base_response(g, t[k]) for g, t in zip(gts, thinks)])
        think_ll = [logsumexp2(a, b) for a, b in zip(think_ll, ll_k)]
    answer_ll = response_loglik(model, proc, prompts, [base_response(g, None) for g in gts])
    return think_ll, answer_ll


def gt_loglik(model_dir: str | Path, file: str | Path) -> dict:
    """``{ll_<part>: mean log-likelihood of the correct answer}`` (module docstring) over ``file``'s rows."""
    from recipe.visurf.eval_backends import iter_rows

    model, proc = _load(model_dir)
    rows = list(iter_rows([str(file)]))
    think_ll, answer_ll = style_logliks(model, proc, rows)
    by_part: dict[str, list[float]] = defaultdict(list)
    for r, a, b in zip(rows, think_ll, answer_ll):
        by_part[part_of(r["id"])].append(logsumexp2(a, b))
    return {f"ll_{p}": round(sum(v) / len(v), 3) for p, v in sorted(by_part.items())}


def style_gap(model_dir: str | Path, file: str | Path) -> dict:
    """``{ll_think, ll_answer_only, gap}``: means over ``file``'s rows (module docstring)."""
    from recipe.visurf.eval_backends import iter_rows

    model, proc = _load(model_dir)
    think_ll, answer_ll = style_logliks(model, proc, list(iter_rows([str(file)])))
    mt, ma = sum(think_ll) / len(think_ll), sum(answer_ll) / len(answer_ll)
    return {"ll_think": round(mt, 3), "ll_answer_only": round(ma, 3), "gap": round(mt - ma, 3), "n": len(think_ll)}


def sampled_accuracy(model_dir: str | Path, file: str | Path, k: int = 8, seed: int = 0,
                     max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 32) -> dict:
    """``{sampled_<part>: share of correct samples}``: ``k`` samples per row at temperature 1 (no top-k /
    top-p, as verl's rollout), torch seeded with ``seed``; scored with the strict rules."""
    import torch

    from recipe.visurf.eval_backends import build_messages, iter_rows, prompt_inputs
    from recipe.visurf.eval_scoring import score_record
    from verl_ext.model_inputs import encode_prompts

    model, proc = _load(model_dir)
    proc.tokenizer.padding_side = "left"
    tok = proc.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = [r for r in iter_rows([str(file)]) for _ in range(k)]
    protocol = strict_protocol()
    torch.manual_seed(seed)
    by_part: dict[str, list[bool]] = defaultdict(list)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        texts, images = [], []
        for row in chunk:
            text, imgs = prompt_inputs(build_messages(row, proc), proc)
            texts.append(text)
            images.extend(imgs)
        inputs = encode_prompts(proc, texts, images or None)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, pad_token_id=pad)
        texts = proc.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True,
                                  clean_up_tokenization_spaces=False)
        for row, text in zip(chunk, texts):
            rec = {"id": row["id"], "data_source": row["data_source"],
                   "ground_truth": row["reward_model"]["ground_truth"], "response": text}
            by_part[part_of(row["id"])].append(bool(score_record(rec, protocol).correct))
    return {f"sampled_{p}": round(sum(v) / len(v), 4) for p, v in sorted(by_part.items())}


def evaluate_model(model_dir: str | Path, file: str | Path, out_dir: str | Path, *, loglik: bool = True,
                   batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """The report dict of ``model_dir`` on ``file`` (module docstring); predictions under ``out_dir``."""
    from recipe.visurf.evaluate import evaluate

    report = evaluate(data=[str(file)], model=str(model_dir), out=out_dir, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, device="cpu",
                      protocol=strict_protocol(), group_by=_part, write=False)
    out = report_summary(report)
    if loglik:
        out.update(gt_loglik(model_dir, file))
    return out
