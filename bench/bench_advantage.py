"""Rows/s of the "visurf" advantage estimator vs verl's GRPO estimator on the same batch.

Example:
    python bench/bench_advantage.py                      # 64k rows, groups of 9, 256 tokens
    python bench/bench_advantage.py --rows 8192 --repeats 3
"""

from __future__ import annotations

import argparse
import time
import uuid

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, compute_grpo_vectorized_outcome_advantage

from verl_ext.visurf.advantage import compute_visurf_outcome_advantage


def make_batch(rows: int, group_size: int, response_length: int, seed: int = 0):
    """token_level_rewards (reward on the last valid token), response_mask and uid, like verl's batch."""
    rng = np.random.default_rng(seed)
    n_groups = -(-rows // group_size)
    uids = np.array([str(uuid.UUID(int=int(rng.integers(2**63)))) for _ in range(n_groups)], dtype=object)
    index = np.repeat(uids, group_size)[:rows]
    lengths = torch.from_numpy(rng.integers(1, response_length + 1, rows))
    response_mask = (torch.arange(response_length)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(rows, response_length)
    rewards[torch.arange(rows), lengths - 1] = torch.from_numpy(rng.integers(0, 57, rows) / 8).float()
    return rewards, response_mask, index


def rows_per_second(estimators: dict, rewards, response_mask, index, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` rows/s per estimator; runs interleaved so machine load hits all alike."""
    best = dict.fromkeys(estimators, float("inf"))
    for _ in range(repeats):
        for name, fn in estimators.items():
            start = time.perf_counter()
            fn(token_level_rewards=rewards, response_mask=response_mask, index=index)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(index) / seconds for name, seconds in best.items()}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--group-size", type=int, default=9, help="G + 1 (8 rollouts + the GT)")
    parser.add_argument("--response-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="best of N runs")
    args = parser.parse_args()

    rewards, response_mask, index = make_batch(args.rows, args.group_size, args.response_length)
    estimators = {
        "visurf": compute_visurf_outcome_advantage,
        "verl grpo": compute_grpo_outcome_advantage,
        "verl grpo_vectorized": compute_grpo_vectorized_outcome_advantage,
    }
    speed = rows_per_second(estimators, rewards, response_mask, index, args.repeats)

    print(
        f"batch: {args.rows} rows, groups of {args.group_size}, response length {args.response_length}, "
        f"torch threads {torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'estimator':<22}{'rows/s':>14}{'visurf speed-up':>17}")
    for name, rps in speed.items():
        print(f"{name:<22}{rps:>14,.0f}{speed['visurf'] / rps:>16.2f}x")


if __name__ == "__main__":
    main()
