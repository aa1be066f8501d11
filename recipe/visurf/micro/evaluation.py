"""Held-out evaluation of one model directory: greedy accuracy per part, format rate, GT log-likelihood.

Greedy decoding and scoring are the evaluation CLI's (``recipe.visurf.evaluate.evaluate``, ``hf``
backend, the same as ``python -m recipe.visurf.evaluate --model DIR --data FILE
--non-object-rule strict --bbox-acc-strict --group-id-regex '(?:grid_target|grid_source)-(\\w+)-'``),
with the strict rules: a row is correct when its answer is exactly one box with IoU > 0.5 with the
label's box (parts a/b, source rows), or a well-formed ``[]`` (part c; under the public rule any
unreadable answer would count as "no target").

``acc``: the CLI's ``BboxAcc`` (share of rows correct) overall; ``acc_<part>``: the same per part
(a / b / c; retention rows: ``source``); ``format``: share of responses in the full
``<think>…</think><answer>[json]</answer>`` format. ``ll_<part>``: mean over the part's rows of
``log(p(<think>{think}</think><answer>{gt}</answer>) + p(<answer>{gt}</answer>))`` (each with EOS):
the model's probability of the correct answer in the base's style or in the injected GT's style,
a smooth measure that moves before greedy accuracy does, and favours neither style.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from recipe.visurf.micro.task import part_of
from verl_ext.constants import ANSWER_TEMPLATE

MAX_NEW_TOKENS = 64


def logsumexp2(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))``, stable."""
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


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


def gt_loglik(model_dir: str | Path, file: str | Path, think: str) -> dict:
    """``{ll_<part>: mean log-likelihood of the correct answer}`` (module docstring) over ``file``'s rows."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from recipe.visurf.eval_backends import iter_rows
    from recipe.visurf.micro.base import base_response
    from recipe.visurf.micro.lm import encode_prompt, response_loglik

    proc = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = list(iter_rows([str(file)]))
    prompts = [encode_prompt(r, proc) for r in rows]
    gts = [r["reward_model"]["ground_truth"] for r in rows]
    ll_base = response_loglik(model, proc, prompts, [base_response(g, think) for g in gts])
    ll_gt = response_loglik(model, proc, prompts, [ANSWER_TEMPLATE.replace("{answer}", g) for g in gts])
    by_part: dict[str, list[float]] = defaultdict(list)
    for r, a, b in zip(rows, ll_base, ll_gt):
        by_part[part_of(r["id"])].append(logsumexp2(a, b))
    return {f"ll_{p}": round(sum(v) / len(v), 3) for p, v in sorted(by_part.items())}


def evaluate_model(model_dir: str | Path, file: str | Path, out_dir: str | Path, *, think: str = "look.",
                   loglik: bool = True, batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """The report dict of ``model_dir`` on ``file`` (module docstring); predictions under ``out_dir``."""
    from recipe.visurf.evaluate import evaluate
    from verl_ext.eval_protocols import EvalProtocol

    report = evaluate(data=[str(file)], model=str(model_dir), out=out_dir, batch_size=batch_size,
                      max_new_tokens=max_new_tokens, device="cpu",
                      protocol=EvalProtocol(non_object="strict", bbox_acc="strict"), group_by=_part, write=False)
    out = report_summary(report)
    if loglik:
        out.update(gt_loglik(model_dir, file, think))
    return out
