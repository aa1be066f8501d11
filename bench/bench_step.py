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
yardstick for both runs. Runs are interleaved ABBA (GRPO, ViSurf, ViSurf, GRPO, ...) so that the
load of a shared machine hits both alike; ``--repeats`` sets the number of pairs.

The bench judges itself. ViSurf's only extra work is the teacher-forced GT row, 1/G more rows
in the old-log-prob pass and the update, so its limit, computed from the GRPO runs, is
``1 + (old_log_prob + update_actor) / (G * step)``; generation samples the same G*prompts
responses in both, so the gen ratio should be 1. Verdict: PASS when the step ratio with
generation held equal is <= limit + 0.02 and the gen ratio <= 1.03, else EXCEEDED; each ratio is
also given per pair, with its standard error. ``--phases`` adds the wall time of each recipe
hook in every process (``bench/phase_timers.py``).

``--gt-styles S ...`` adds a ViSurf run with ``visurf.gt_style=S`` to every repeat (order forward on even
repeats, reversed on odd ones) and reports its step, gen and gen-held ratios against the template GT of
the same invocation, with the style's GT metrics (borrowed share, fallbacks, trained GT tokens). It needs a
model whose rollouts write a think block (``--model``: the micro base), else every GT falls back to the
template and the ratio measures nothing.

Example:
    python bench/bench_step.py                                  # G=8, 4 prompts/step, 5 steps, 12 pairs
    python bench/bench_step.py --steps 4 --repeats 2            # GRPO, ViSurf, ViSurf, GRPO
    python bench/bench_step.py --repeats 1 --phases             # where each run's time goes, per hook
    python bench/bench_step.py --out /tmp/bs --keep -- trainer.seed=1   # extra args = verl overrides
    python bench/bench_step.py --repeats 4 --gt-styles rollout_think --resp-len 112 \
        --model ~/.cache/visurf/micro/base-<key> --train-file outputs/micro/data/train_seed1_48x4.parquet
                              # + the rollout_think GT style vs the template GT, on a base that thinks
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

from recipe.visurf.hostload import cpu_steal, steal_share  # noqa: E402  (after the repo is on sys.path)
from verl_ext.visurf.gt_styles import gt_style_names  # noqa: E402

MAIN_TIMINGS = ("timing_s/step", "timing_s/gen", "timing_s/old_log_prob", "timing_s/update_actor")
RUNS = {"grpo": ("visurf.enable=False",), "visurf": ()}  # the judged pair; --gt-styles adds "visurf_<style>"
STYLE_METRICS = ("visurf/gt_borrowed_share", "visurf/gt_think_fallback", "visurf/gt_trained_tokens_mean")
DEFAULT_PAIRS = 12  # bench/README.md: resolves a 3% effect at ~2 SE given the pair-to-pair spread (~0.05)
GEN_RATIO_MAX = 1.03  # ViSurf samples exactly the responses GRPO samples
HELD_MARGIN = 0.02  # allowed excess of the gen-held step ratio over its limit
QUIET_STEAL = 0.02  # at most this share of CPU steal in every run for the verdict to be a quiet-machine one


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
    """The model (``--model``, else the tiny random Qwen2.5-VL) and the train/val parquets (``--train-file``
    for both, else synthetic grounding rows: a fresh set of prompts every step)."""
    from data_prep.synthetic import generate
    from verl_ext.tiny import build_tiny

    model = Path(args.model).resolve() if args.model else build_tiny(out / "model")
    if args.train_file:
        train = Path(args.train_file).resolve()
        return model, {"train": train, "val": train}  # validation is off (test_freq=-1); verl needs a file
    data = {"train": out / "data" / "train.parquet", "val": out / "data" / "val.parquet"}
    data["train"].parent.mkdir(parents=True, exist_ok=True)
    n_train = args.n_train or args.prompts * args.steps  # a fresh set of prompts every step
    generate("grounding", n_train, 0, str(data["train"]), image_size=args.image_size)
    generate("grounding", args.prompts, 1, str(data["val"]), image_size=args.image_size, split="val")
    return model, data


def run_overrides(kind: str) -> tuple[str, ...]:
    """verl overrides of a run kind: ``grpo``, ``visurf`` (template GT, the recipe default) or
    ``visurf_<style>`` (``visurf.gt_style=<style>``, a style of ``verl_ext/visurf/gt_styles``)."""
    if kind in RUNS:
        return RUNS[kind]
    return (f"visurf.gt_style={kind.removeprefix('visurf_')}",)


def run_order(rep: int, kinds: list[str]) -> list[str]:
    """ABBA over any number of run kinds: forward on even repeats, reversed on odd ones, so a drift in
    machine load hits every kind alike."""
    return list(kinds) if rep % 2 == 0 else list(reversed(kinds))


def launch(name: str, workdir: Path, model: Path, data: dict[str, Path], args) -> dict:
    """One training run as a subprocess; returns its per-step metrics, peak RSS, wall time and the host's CPU
    steal share while it ran (``recipe.visurf.hostload``)."""
    from recipe.visurf.summary import read_metrics

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    metrics_path = workdir / "metrics.jsonl"
    env = {**os.environ, "VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_MODULES": "verl_ext.cpu",
           "VERL_ENGINE_DEVICE": "cuda", "HF_HUB_OFFLINE": "1", "VERL_FILE_LOGGER_PATH": str(metrics_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    if args.phases:  # every process imports the timers through verl's plug-in hook
        env.update(VISURF_PHASE_LOG=str(workdir / "phases.jsonl"),
                   VERL_USE_EXTERNAL_MODULES="verl_ext.cpu,bench.phase_timers")
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
        *run_overrides(name.split("#")[0]), *args.overrides,
    ]
    t0, steal0 = time.perf_counter(), cpu_steal()
    with open(workdir / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeRSS(proc.pid, args.interval) as rss:
            try:
                rc = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                print(f"{name}: timed out after {args.timeout}s", file=sys.stderr)
    wall, steal = time.perf_counter() - t0, steal_share(steal0, cpu_steal())
    if rc != 0:
        tail = "\n".join((workdir / "train.log").read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{name}: run failed (exit {rc}); last lines of {workdir / 'train.log'}:\n{tail}")
    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    if len(rows) < args.steps:
        raise SystemExit(f"{name}: {len(rows)} of {args.steps} steps logged ({metrics_path})")
    phases = read_phases(workdir / "phases.jsonl", rows) if args.phases else {}
    return {"rows": rows, "peak_rss": rss.peak, "peak_procs": rss.peak_procs, "samples": rss.samples, "wall": wall,
            "steal": steal, "phases": phases}


def read_phases(path: Path, rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per phase (``phase_timers`` record name): seconds per measured step (steps 2..N) and calls
    per step. A record belongs to the steps after the end of step 1, told apart by wall clock: the
    timers and verl's ``timing_s/step`` share no clock, so step 1 is cut off by its share of the
    records (the first ``1/steps`` of each phase's calls)."""
    import json

    if not path.exists():
        return {}
    by_name: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        by_name.setdefault(rec["name"], []).append(rec)
    n = len(rows)
    out = {}
    for name, recs in by_name.items():
        recs.sort(key=lambda r: r["t0"])
        recs = [r for r in recs if r.get("server") != "_GTServer"] if name.startswith("agent_loop/single") else recs
        kept = recs[len(recs) // n:]  # drop step 1's calls (equal calls per training step)
        out[name] = {"s_per_step": sum(r["s"] for r in kept) / (n - 1), "calls_per_step": len(kept) / (n - 1)}
        if "requests" in recs[0]:
            out[name]["requests_per_call"] = statistics.fmean(r["requests"] for r in kept) if kept else 0.0
    return out


def _stats(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.median(values)) if values else (float("nan"), float("nan"))


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in body]
    return "\n".join(lines)


def report(results: dict[str, list[dict]], args) -> bool:
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
                         "-" if batch is None else f"{batch:.0f}", _pct(run.get("steal"))])
    print(_table(["run", "wall s", "step1 s", "step2+ mean s", "peak RSS MiB", "procs@peak", "samples",
                  "GT rows/step", "CPU steal"], body))

    rss = {k: max(r["peak_rss"] for r in runs) for k, runs in results.items()}
    print(f"\nrows per step: GRPO {args.g * args.prompts}, ViSurf {(args.g + 1) * args.prompts} "
          f"(G={args.g}, {args.prompts} prompts; expected extra log-prob/update work ~1/G = {1 / args.g:.3f})")
    print(f"peak RSS: GRPO {rss['grpo'] / 2**20:.0f} MiB, ViSurf {rss['visurf'] / 2**20:.0f} MiB, "
          f"ratio {rss['visurf'] / rss['grpo']:.3f}")
    if args.phases:
        print_phases(results)
    styles = [k for k in results if k not in RUNS]
    if styles:
        print_styles(results, styles)
    return verdict(results, args.g)


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


def quiet_host(results: dict[str, list[dict]]) -> tuple[float | None, bool]:
    """The largest CPU steal share of any run, and whether every run had at most ``QUIET_STEAL`` of it.

    The verdict's thresholds (3 %, 0.02) are for a quiet machine: under steal the two runs of a pair get
    different shares of the CPU, and the ratio measures the hypervisor, not ViSurf. Unknown steal
    (no ``/proc/stat``) counts as quiet."""
    shares = [run.get("steal") for runs in results.values() for run in runs]
    known = [s for s in shares if s is not None]
    worst = max(known) if known else None
    return worst, worst is None or worst <= QUIET_STEAL


def run_means(run: dict) -> dict[str, float]:
    """Mean of each main timing over a run's measured steps (2..N)."""
    rows = [r for r in run["rows"] if r["step"] > 1]
    return {k: statistics.fmean(r[k] for r in rows) for k in MAIN_TIMINGS}


def ratios(grpo: dict[str, float], visurf: dict[str, float], g: int) -> dict[str, float]:
    """The judged quantities from mean timings (s) of one GRPO and one ViSurf run (or of all runs):

    * ``limit = 1 + (old_log_prob + update_actor) / (G * step)`` of GRPO: the step ratio if the
      GT row cost exactly its 1/G share of the row-proportional passes and nothing else;
    * ``gen = gen_ViSurf / gen_GRPO`` (both sample the same G*prompts responses: ideally 1);
    * ``held = (step_ViSurf - gen_ViSurf + gen_GRPO) / step_GRPO``: the step ratio with generation
      held equal, i.e. ViSurf's extra cost outside sampling;
    * ``step = step_ViSurf / step_GRPO``.
    """
    step, gen = "timing_s/step", "timing_s/gen"
    return {
        "limit": 1 + (grpo["timing_s/old_log_prob"] + grpo["timing_s/update_actor"]) / (g * grpo[step]),
        "gen": visurf[gen] / grpo[gen],
        "held": (visurf[step] - visurf[gen] + grpo[gen]) / grpo[step],
        "step": visurf[step] / grpo[step],
    }


def judge(r: dict[str, float]) -> bool:
    """PASS: gen-held ratio <= limit + HELD_MARGIN and gen ratio <= GEN_RATIO_MAX."""
    return r["held"] <= r["limit"] + HELD_MARGIN and r["gen"] <= GEN_RATIO_MAX


def verdict(results: dict[str, list[dict]], g: int) -> bool:
    pooled = {name: {k: statistics.fmean(m[k] for m in map(run_means, runs)) for k in MAIN_TIMINGS}
              for name, runs in results.items()}
    overall = ratios(pooled["grpo"], pooled["visurf"], g)
    pairs = [ratios(run_means(a), run_means(b), g) for a, b in zip(results["grpo"], results["visurf"])]
    print(f"\nper pair (GRPO#i, ViSurf#i): mean of steps 2.. of each run")
    body = [[f"pair {i + 1}", *(f"{r[k]:.3f}" for k in ("step", "gen", "held", "limit"))] for i, r in enumerate(pairs)]
    if len(pairs) > 1:
        se = {k: statistics.stdev(r[k] for r in pairs) / len(pairs) ** 0.5 for k in ("step", "gen", "held", "limit")}
        body.append(["pairs: mean ± SE", *(f"{statistics.fmean(r[k] for r in pairs):.3f}±{se[k]:.3f}"
                                            for k in ("step", "gen", "held", "limit"))])
    print(_table(["", "step ratio", "gen ratio", "gen-held ratio", "limit"], body))
    ok = judge(overall)
    print(f"\nlimit from the GRPO runs: 1 + (old_log_prob + update_actor) / (G * step) = {overall['limit']:.3f}")
    print(f"step ratio ViSurf/GRPO: {overall['step']:.3f}")
    print(f"gen ratio ViSurf/GRPO: {overall['gen']:.3f} (<= {GEN_RATIO_MAX})")
    print(f"gen-held step ratio (ViSurf step - ViSurf gen + GRPO gen) / GRPO step: {overall['held']:.3f} "
          f"(<= limit + {HELD_MARGIN} = {overall['limit'] + HELD_MARGIN:.3f})")
    worst, quiet = quiet_host(results)
    print(f"host CPU steal: at most {_pct(worst)} in any run ("
          + ("quiet" if quiet else f"NOT quiet: above {QUIET_STEAL:.0%}, the verdict's thresholds assume a quiet "
             "machine; rerun when steal is low") + ")")
    print(f"verdict: {'PASS' if ok else 'EXCEEDED'}" + ("" if quiet else " (on a busy host)"))
    return ok


def print_styles(results: dict[str, list[dict]], styles: list[str]) -> None:
    """Each GT style against the template GT (``visurf``) of the same invocation: pooled step, gen and
    gen-held ratios (``ratios`` with the template run in GRPO's place) and the style's own GT metrics
    (borrowed share, fallbacks, trained GT tokens), mean over steps 2.."""
    print("\nGT styles against the template GT (same invocation; ratio = style / template)")
    template = {k: statistics.fmean(run_means(r)[k] for r in results["visurf"]) for k in MAIN_TIMINGS}
    body = []
    for kind in styles:
        pooled = {k: statistics.fmean(run_means(r)[k] for r in results[kind]) for k in MAIN_TIMINGS}
        r = ratios(template, pooled, 1)
        rows = [row for run in results[kind] for row in run["rows"] if row["step"] > 1]
        gt = [statistics.fmean(row[m] for row in rows) if all(m in row for row in rows) else float("nan")
              for m in STYLE_METRICS]
        body.append([kind, f"{pooled['timing_s/step']:.3f}", f"{r['step']:.3f}", f"{r['gen']:.3f}",
                     f"{r['held']:.3f}", *(f"{v:.2f}" for v in gt)])
    print(_table(["run", "step s", "step ratio", "gen ratio", "gen-held ratio", "borrowed share",
                  "fallback rows", "trained GT tokens"], body))


def print_phases(results: dict[str, list[dict]]) -> None:
    """Seconds per measured step of each hook (``--phases``), mean over runs, GRPO vs ViSurf."""
    names = sorted({n for runs in results.values() for run in runs for n in run["phases"]})
    body = []
    for n in names:
        cells = []
        for key in ("grpo", "visurf"):
            vals = [run["phases"][n] for run in results[key] if n in run["phases"]]
            s = statistics.fmean(v["s_per_step"] for v in vals) if vals else 0.0
            calls = statistics.fmean(v["calls_per_step"] for v in vals) if vals else 0.0
            req = [v["requests_per_call"] for v in vals if "requests_per_call" in v]
            cells += [f"{s:.3f}", f"{calls:.1f}" + (f" ({statistics.fmean(req):.1f} req)" if req else "")]
        body.append([n, *cells])
    print("\nper-phase wall time per step (s; steps 2..; nested phases are included in their callers)")
    print(_table(["phase", "GRPO s", "GRPO calls", "ViSurf s", "ViSurf calls"], body))


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
    parser.add_argument("--repeats", type=int, default=DEFAULT_PAIRS,
                        help=f"interleaved GRPO/ViSurf pairs (ABBA; default {DEFAULT_PAIRS}: bench/README.md)")
    parser.add_argument("--micro-batch", type=int, default=0, help="log-prob/update micro batch rows (0: --prompts)")
    parser.add_argument("--n-train", type=int, default=0, help="training rows (0: prompts*steps)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--interval", type=float, default=0.5, help="RSS sampling period, s")
    parser.add_argument("--timeout", type=int, default=1800, help="per-run limit, s")
    parser.add_argument("--model", help="HF model dir to train (default: the tiny random Qwen2.5-VL); e.g. the "
                        "micro base ~/.cache/visurf/micro/base-*, whose rollouts write think blocks")
    parser.add_argument("--train-file", help="train parquet (default: synthetic grounding rows), e.g. the micro "
                        "task's outputs/micro/data/train_seed1_48x4.parquet")
    parser.add_argument("--gt-styles", nargs="*", default=[], choices=tuple(gt_style_names()),
                        help="also run ViSurf with these visurf.gt_style values in every repeat and report each "
                        "against the template GT (needs a model whose rollouts think: --model)")
    parser.add_argument("--out", help="working dir (model, data, runs); default: a temporary dir")
    parser.add_argument("--keep", action="store_true", help="keep what the bench wrote (default: delete it)")
    parser.add_argument("--phases", action="store_true", help="time every recipe hook in every process "
                        "(bench/phase_timers.py) and print a per-phase table")
    parser.add_argument("overrides", nargs="*", help="extra verl/Hydra overrides for both runs (after --)")
    args = parser.parse_args()
    if "template" in args.gt_styles:
        parser.error("--gt-styles: template is the ViSurf run itself")
    if args.steps < 2:
        parser.error("--steps must be >= 2 (step 1 is warm-up)")

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_step_")).resolve()
    created = not out.exists() or args.out is None
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench_step: G={args.g}, {args.prompts} prompts/step, {args.steps} steps, resp len {args.resp_len}, "
          f"{args.repeats} pair(s), cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}; dir {out}")
    try:
        model, data = prepare(out, args)
        kinds = [*RUNS, *(f"visurf_{s}" for s in args.gt_styles)]
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        for rep in range(args.repeats):
            for name in run_order(rep, kinds):
                tag = f"{name}#{rep + 1}"
                print(f"running {tag} ...", flush=True)
                run = launch(tag, out / "runs" / tag.replace("#", "_"), model, data, args)
                steps = [r.get("timing_s/step", float("nan")) for r in run["rows"]]
                print(f"  {tag}: {run['wall']:.1f}s wall, steps " + " ".join(f"{s:.2f}" for s in steps)
                      + f", peak RSS {run['peak_rss'] / 2**20:.0f} MiB (load avg {os.getloadavg()[0]:.2f})",
                      flush=True)
                results[name].append(run)
        passed = report(results, args)
    finally:
        if not args.keep:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for sub in ("model", "data", "runs"):
                    shutil.rmtree(out / sub, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
