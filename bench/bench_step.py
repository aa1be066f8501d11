"""Wall time per training step and peak RSS: ViSurf vs GRPO through the real recipe on CPU.

Both runs are ``python -m recipe.visurf.main_visurf`` subprocesses (verl 0.9.1 + ray, CPU
platform ``verl_ext.cpu``) on the tiny random Qwen2.5-VL (``verl_ext.tiny``) and the same
synthetic grounding parquet, with identical settings: ViSurf is the recipe default, GRPO is
``visurf.enable=False``. Both ask for ``rollout.n=G``; ViSurf then runs G+1 rows per prompt,
the extra row being the teacher-forced GT (no sampling), so both sample the same G*prompts
responses and only old-log-prob / actor update see the extra 1/G rows.

Per-step times come from verl's own metrics (``timing_s/*`` via the file logger,
``VERL_FILE_LOGGER_PATH``); step 1 (warm-up) is excluded from mean/median. Peak RSS is the
max over the run of the summed RSS of the process tree (driver, ray's gcs/raylet, workers),
sampled with psutil every ``--interval`` s. Summed RSS counts shared pages (ray's object
store, shared libraries) once per process, so it overstates real memory; it is the same
yardstick for both runs. Runs are interleaved (GRPO, ViSurf, GRPO, ViSurf, ...) so that the
load of a shared machine hits both alike; ``--repeats`` sets the number of pairs.

Example:
    python bench/bench_step.py                                  # G=8, 4 prompts/step, 5 steps, 1 pair
    python bench/bench_step.py --steps 4 --repeats 2            # GRPO, ViSurf, GRPO, ViSurf
    python bench/bench_step.py --out /tmp/bs --keep -- trainer.seed=1   # extra args = verl overrides
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MAIN_TIMINGS = ("timing_s/step", "timing_s/gen", "timing_s/old_log_prob", "timing_s/update_actor")
RUNS = {"grpo": ("visurf.enable=False",), "visurf": ()}


class TreeRSS:
    """Samples the summed RSS of a process and all its descendants in a background thread."""

    def __init__(self, pid: int, interval: float):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_procs = total, len(procs)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def prepare(out: Path, args) -> tuple[Path, dict[str, Path]]:
    from data_prep.synthetic import generate
    from verl_ext.tiny import build_tiny

    model = build_tiny(out / "model")
    data = {"train": out / "data" / "train.parquet", "val": out / "data" / "val.parquet"}
    data["train"].parent.mkdir(parents=True, exist_ok=True)
    n_train = args.n_train or args.prompts * args.steps  # a fresh set of prompts every step
    generate("grounding", n_train, 0, str(data["train"]), image_size=args.image_size)
    generate("grounding", args.prompts, 1, str(data["val"]), image_size=args.image_size, split="val")
    return model, data


def launch(name: str, workdir: Path, model: Path, data: dict[str, Path], args) -> dict:
    """One training run as a subprocess; returns its per-step metrics, peak RSS and wall time."""
    from recipe.visurf.summary import read_metrics

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    metrics_path = workdir / "metrics.jsonl"
    env = {**os.environ, "VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_MODULES": "verl_ext.cpu",
           "VERL_ENGINE_DEVICE": "cuda", "HF_HUB_OFFLINE": "1", "VERL_FILE_LOGGER_PATH": str(metrics_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    micro = args.micro_batch or args.prompts
    cmd = [
        sys.executable, "-m", "recipe.visurf.main_visurf",
        f"data.train_files={data['train']}", f"data.val_files={data['val']}",
        f"data.train_batch_size={args.prompts}", "data.max_prompt_length=512",
        f"data.max_response_length={args.resp_len}", "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.rollout.n={args.g}",
        "actor_rollout_ref.actor.optim.lr=1e-4",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",  # one optimizer step per step
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        "trainer.logger=[console,file]", "trainer.project_name=bench_step",
        f"trainer.experiment_name={name.replace('#', '_')}",
        "trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=-1",
        "trainer.total_epochs=100", f"trainer.total_training_steps={args.steps}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        *RUNS[name.split("#")[0]], *args.overrides,
    ]
    t0 = time.perf_counter()
    with open(workdir / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeRSS(proc.pid, args.interval) as rss:
            try:
                rc = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                print(f"{name}: timed out after {args.timeout}s", file=sys.stderr)
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join((workdir / "train.log").read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{name}: run failed (exit {rc}); last lines of {workdir / 'train.log'}:\n{tail}")
    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    if len(rows) < args.steps:
        raise SystemExit(f"{name}: {len(rows)} of {args.steps} steps logged ({metrics_path})")
    return {"rows": rows, "peak_rss": rss.peak, "peak_procs": rss.peak_procs, "samples": rss.samples, "wall": wall}


def _stats(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.median(values)) if values else (float("nan"), float("nan"))


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in body]
    return "\n".join(lines)


def report(results: dict[str, list[dict]], args) -> None:
    measured = {k: [row for run in runs for row in run["rows"] if row["step"] > 1] for k, runs in results.items()}
    keys = sorted({k for rows in measured.values() for row in rows for k in row
                   if k.startswith("timing_s/") and k.count("/") == 1 and not k.endswith("_profile")},
                  key=lambda k: (k not in MAIN_TIMINGS, MAIN_TIMINGS.index(k) if k in MAIN_TIMINGS else 0, k))
    stats = {name: {k: _stats([row[k] for row in rows if k in row]) for k in keys} for name, rows in measured.items()}
    n_steps = {name: len(rows) for name, rows in measured.items()}
    print(f"\nper-step wall time (s), steps 2..{args.steps} of {args.repeats} run(s) each "
          f"= {n_steps['grpo']} GRPO / {n_steps['visurf']} ViSurf steps; step 1 (warm-up) excluded")
    body = []
    for k in keys:
        (gm, gmed), (vm, vmed) = stats["grpo"][k], stats["visurf"][k]
        ratio = vm / gm if gm else float("nan")
        body.append([k, f"{gm:.3f}", f"{gmed:.3f}", f"{vm:.3f}", f"{vmed:.3f}", f"{ratio:.3f}",
                     f"{vm - gm:+.3f}"])
    print(_table(["metric", "GRPO mean", "GRPO median", "ViSurf mean", "ViSurf median", "ratio(mean)", "diff"],
                 body))

    print("\nper run")
    body = []
    for name, runs in results.items():
        for i, run in enumerate(runs):
            first = run["rows"][0].get("timing_s/step", float("nan"))
            rest = [r["timing_s/step"] for r in run["rows"][1:] if "timing_s/step" in r]
            batch = run["rows"][-1].get("visurf/gt_injected")
            body.append([f"{name}#{i + 1}", f"{run['wall']:.1f}", f"{first:.2f}", f"{_stats(rest)[0]:.2f}",
                         f"{run['peak_rss'] / 2**20:.0f}", str(run["peak_procs"]), str(run["samples"]),
                         "-" if batch is None else f"{batch:.0f}"])
    print(_table(["run", "wall s", "step1 s", "step2+ mean s", "peak RSS MiB", "procs@peak", "samples",
                  "GT rows/step"], body))

    step_ratio = stats["visurf"]["timing_s/step"][0] / stats["grpo"]["timing_s/step"][0]
    step_ratio_med = stats["visurf"]["timing_s/step"][1] / stats["grpo"]["timing_s/step"][1]
    # both sample the same G*prompts responses: ViSurf's step with GRPO's generation time isolates the
    # GT rows' extra cost (old log-prob, update, reward, adv) from the noisier sampling time
    (vs, _), (vg, _), (gs, _), (gg, _) = (stats[k][m] for k in ("visurf", "grpo")
                                          for m in ("timing_s/step", "timing_s/gen"))
    rss = {k: max(r["peak_rss"] for r in runs) for k, runs in results.items()}
    print(f"\nrows per step: GRPO {args.g * args.prompts}, ViSurf {(args.g + 1) * args.prompts} "
          f"(G={args.g}, {args.prompts} prompts; expected extra log-prob/update work ~1/G = {1 / args.g:.3f})")
    print(f"step-time ratio ViSurf/GRPO: {step_ratio:.3f} (mean), {step_ratio_med:.3f} (median)  "
          f"target <= 1.05: {'OK' if step_ratio <= 1.05 else 'EXCEEDED'}")
    print(f"step-time ratio with generation time held equal (ViSurf step - ViSurf gen + GRPO gen) / GRPO step: "
          f"{(vs - vg + gg) / gs:.3f}")
    print(f"peak RSS: GRPO {rss['grpo'] / 2**20:.0f} MiB, ViSurf {rss['visurf'] / 2**20:.0f} MiB, "
          f"ratio {rss['visurf'] / rss['grpo']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=5, help="training steps per run (step 1 = warm-up)")
    parser.add_argument("--g", type=int, default=8, help="sampled rollouts per prompt (rollout.n)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (data.train_batch_size)")
    parser.add_argument("--resp-len", type=int, default=160, help="max response tokens; the GT (+EOS) must fit")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved GRPO/ViSurf pairs")
    parser.add_argument("--micro-batch", type=int, default=0, help="log-prob/update micro batch rows (0: --prompts)")
    parser.add_argument("--n-train", type=int, default=0, help="training rows (0: prompts*steps)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--interval", type=float, default=0.5, help="RSS sampling period, s")
    parser.add_argument("--timeout", type=int, default=1800, help="per-run limit, s")
    parser.add_argument("--out", help="working dir (model, data, runs); default: a temporary dir")
    parser.add_argument("--keep", action="store_true", help="keep what the bench wrote (default: delete it)")
    parser.add_argument("overrides", nargs="*", help="extra verl/Hydra overrides for both runs (after --)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (step 1 is warm-up)")

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_step_")).resolve()
    created = not out.exists() or args.out is None
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench_step: G={args.g}, {args.prompts} prompts/step, {args.steps} steps, resp len {args.resp_len}, "
          f"{args.repeats} pair(s), cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}; dir {out}")
    try:
        model, data = prepare(out, args)
        results: dict[str, list[dict]] = {"grpo": [], "visurf": []}
        for rep in range(args.repeats):
            for name in ("grpo", "visurf") if rep % 2 == 0 else ("visurf", "grpo"):
                tag = f"{name}#{rep + 1}"
                print(f"running {tag} ...", flush=True)
                run = launch(tag, out / "runs" / tag.replace("#", "_"), model, data, args)
                steps = [r.get("timing_s/step", float("nan")) for r in run["rows"]]
                print(f"  {tag}: {run['wall']:.1f}s wall, steps " + " ".join(f"{s:.2f}" for s in steps)
                      + f", peak RSS {run['peak_rss'] / 2**20:.0f} MiB (load avg {os.getloadavg()[0]:.2f})",
                      flush=True)
                results[name].append(run)
        report(results, args)
    finally:
        if not args.keep:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for sub in ("model", "data", "runs"):
                    shutil.rmtree(out / sub, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
