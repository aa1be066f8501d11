"""Reward-scoring throughput: grounding and math, single process and with the math pool.

Synthetic batch (default 10k responses): grounding answers with 1-5 objects near 1-5 label
objects, math answers of mixed forms; 30% malformed (no answer tags, broken JSON, wrong types,
NaN, missing think block). Prints responses/s (wall clock and CPU time of this process).

Example:
    python bench/bench_rewards.py --n 10000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter

from verl_ext.rewards import grounding
from verl_ext.rewards import math as math_reward


def _obj(rng: random.Random, jitter: int = 0) -> dict:
    x1, y1 = rng.randint(0, 600), rng.randint(0, 600)
    w, h = rng.randint(20, 230), rng.randint(20, 230)
    j = lambda: rng.randint(-jitter, jitter) if jitter else 0  # noqa: E731
    return {"bbox_2d": [x1 + j(), y1 + j(), x1 + w + j(), y1 + h + j()], "point_2d": [x1 + w // 2 + j(), y1 + h // 2 + j()]}


MALFORMED_GROUNDING = [
    lambda a: a.replace("<answer>", ""),  # no answer
    lambda a: a[: len(a) // 2] + "</answer>",  # broken JSON
    lambda a: a.replace('"point_2d": [', '"point_2d": ["x", '),  # wrong type
    lambda a: a.replace('"bbox_2d": [', '"bbox_2d": [NaN, '),  # NaN, wrong length
    lambda a: a.replace("<think>", ""),  # no think block
]


def grounding_batch(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    sols, labels = [], []
    for _ in range(n):
        m = rng.randint(1, 5)
        gt = [_obj(rng) for _ in range(m)]
        pred = [dict(_obj(rng, 0), **{}) if rng.random() < 0.3 else
                {"bbox_2d": [c + rng.randint(-8, 8) for c in o["bbox_2d"]],
                 "point_2d": [c + rng.randint(-20, 20) for c in o["point_2d"]]} for o in gt]
        pred = pred[: rng.randint(1, 5)]
        text = f"<think>The query asks for {m} objects. I compare them.</think><answer>{json.dumps(pred)}</answer>"
        if rng.random() < 0.3:
            text = rng.choice(MALFORMED_GROUNDING)(text)
        sols.append(text)
        labels.append(json.dumps(gt))
    return sols, labels


def math_batch(n: int, rng: random.Random) -> tuple[list[str], list[str], list]:
    forms = [
        lambda v: (str(v), str(v)),
        lambda v: (f"{v}.0", str(v)),
        lambda v: (f"\\frac{{{2 * v}}}{{2}}", str(v)),
        lambda v: (f"\\frac{{{v}}}{{{v + 1}}}", f"{v}/{v + 1}"),
        lambda v: (f"{v + 1}", str(v)),
        lambda v: (f"\\sqrt{{{v * v}}}", str(v)),
        lambda v: (f"{v}^\\circ", str(v)),
    ]
    sols, golds, choices = [], [], []
    for _ in range(n):
        v = rng.randint(1, 99)
        if rng.random() < 0.2:  # multiple choice
            opts = [str(v + k) for k in range(4)]
            pred = rng.choice(["A", "(B)", str(v), str(v + 2)])
            gold, ch = "A", opts
        else:
            pred, gold = rng.choice(forms)(v)
            ch = None
        text = f"<think>Compute step by step.</think><answer>{pred}</answer>"
        if rng.random() < 0.3:
            text = rng.choice([lambda t: t.replace("<answer>", ""), lambda t: t.replace("<think>", ""),
                               lambda t: t.replace(pred, "\\frac{1}{")])(text)
        sols.append(text)
        golds.append(gold)
        choices.append(ch)
    return sols, golds, choices


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python bench/bench_rewards.py --n 10000 --workers 2")
    parser.add_argument("--n", type=int, default=10_000, help="responses per task")
    parser.add_argument("--workers", type=int, default=2, help="math pool workers")
    parser.add_argument("--math-n", type=int, default=None, help="math responses (default: --n)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    rows = []
    sols, labels = grounding_batch(args.n, rng)
    for s, lab in zip(sols[:200], labels[:200]):  # warm-up (imports, label cache is per label)
        grounding.compute_score(s, lab)
    single, w, c = timed(lambda: [grounding.compute_score(s, lab) for s, lab in zip(sols, labels)])
    rows.append(("grounding", "per response", args.n, w, c))
    batch, w, c = timed(lambda: grounding.compute_score_batch(sols, labels))
    rows.append(("grounding", "batched (one numpy pass)", args.n, w, c))
    assert batch == single
    invalid = Counter(r["invalid_reason"] or "valid" for r in single)

    n_math = args.math_n or args.n
    msols, golds, choices = math_batch(n_math, rng)
    math_reward.compute_score_batch(msols[:50], golds[:50], choices=choices[:50])  # warm-up
    m_single, w, c = timed(lambda: math_reward.compute_score_batch(msols, golds, choices=choices))
    rows.append(("math", "in-process", n_math, w, c))
    pool = math_reward.MathVerifyPool(num_workers=args.workers)
    try:
        pool.equal_many([("1", "1")] * args.workers, chunksize=1)  # start the workers (not timed)
        m_pool, w, c = timed(lambda: math_reward.compute_score_batch(msols, golds, choices=choices, pool=pool))
        rows.append(("math", f"pool x{args.workers}", n_math, w, c))
    finally:
        pool.close()
    assert m_pool == m_single
    fast = sum(1 for s, g, ch in zip(msols, golds, choices) if _decided_in_process(s, g, ch))

    print(f"\n{'task':<10} {'mode':<26} {'n':>6} {'wall s':>8} {'resp/s (wall)':>14} {'resp/s (CPU)':>13}")
    for task, mode, n, w, c in rows:
        cpu = f"{n / c:,.0f}" if c > 0 else "-"
        print(f"{task:<10} {mode:<26} {n:>6} {w:>8.2f} {n / w:>14,.0f} {cpu:>13}")
    print("(CPU = this process only; pool workers' CPU time is not included)")
    print(f"\ngrounding invalid reasons: {dict(invalid.most_common())}")
    print(f"math: {fast}/{n_math} decided without math-verify (exact match / option letter / no answer); "
          f"accuracy {sum(r['accuracy'] for r in m_single) / n_math:.3f}")


def _decided_in_process(sol: str, gold: str, choices) -> bool:
    from verl_ext.rewards.parsing import parse_response

    pred = math_reward.extract_math_answer(parse_response(sol))
    return not pred or math_reward._decide_without_math_verify(pred, gold, choices)[0] is not None


if __name__ == "__main__":
    main()
