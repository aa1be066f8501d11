"""Train every method of the micro reproduction through the real recipe, evaluate, write the results.

    python -m recipe.visurf.micro.driver [--out outputs/micro] [--smoke] [--only visurf grpo] [--seeds 1 2]

From one cached base (``micro.base``) and one target task (``micro.task``), every run of one seed
trains on the same ordered rows (``task.ordered_train``: step k = rows [k*B, (k+1)*B)) for the same
number of optimizer steps with the same optimizer (verl's FSDP AdamW, constant lr, weight decay
0.01, grad clip 1):

* RL methods: ``python -m recipe.visurf.main_visurf`` + the method's Hydra overrides (``METHODS``),
  ``data.shuffle=False``;
* ``sft``: verl's own SFT trainer (``torchrun -m verl.trainer.sft_trainer``) on the rows converted by
  ``data_prep.to_sft`` (prompt + the aligned GT response ViSurf injects), on CPU through the same
  ``verl_ext.cpu`` platform as the RL trainer. Its sampler always shuffles (``DistributedSampler(
  shuffle=True, seed=0)``, not configurable in verl 0.9.1), so the file is written in the inverse of
  that permutation (``sft_file_order``) and the trainer sees the rows in the shared order;
* ``sft_grpo``: ``sft`` on the first half of the rows and steps, then GRPO on the second half from
  the SFT model (one lr for both stages).

Protocol (each method at its best, fairly): every main method (``MAIN``) is trained at each lr of
``lrs`` with the validation seed (``val_seed``); its lr is the one with the best validation accuracy
(``select_lr``); then it runs on every seed of ``seeds`` at that lr (the validation seed's run is
reused). The ablations run at ViSurf's chosen lr. Checkpoints (HF weights) every ``eval_every`` steps
are evaluated on the validation rows (the curve); the last one and the best-validation one
(``best_checkpoint``) on the test rows, the last one also on the retention set. Each finished run
writes ``<out>/runs/<method>_lr<lr>_s<seed>/result.json`` (a rerun skips finished runs) and the
collected results are rewritten after every run (``micro.results``), so a partial run is still reported.
A later invocation on the same work directory (``--only``, ``--ablation-seeds``) adds its runs to that
report (``runs_on_disk``, ``prior_invocations``): e.g. issue 18's GT styles on three seeds after the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from recipe.visurf.hostload import cpu_steal, steal_share
from recipe.visurf.micro import results as R
from recipe.visurf.micro.base import BaseSpec, build_base
from recipe.visurf.micro.calibrate import D_BAND, in_band
from recipe.visurf.micro.task import TaskSpec, make_task, ordered_train, slice_rows
from verl_ext.atomic_io import write_atomically, write_text_atomically

ROOT = Path(__file__).resolve().parents[3]

# method -> (kind, Hydra overrides of recipe.visurf.main_visurf). Main methods first, then the
# ablations (one switch each, relative to ViSurf's defaults).
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sft": ("sft", ()),
    "grpo": ("rl", ("visurf.enable=False",)),
    "sft_grpo": ("sft_rl", ("visurf.enable=False",)),
    "visurf": ("rl", ()),
    # issue 18's GT variants: the group's best rollout's think block (untrained context) before the GT
    # answer; the answer-only GT with the loss on the label's tokens only (not the style-switching <answer>)
    "visurf_rollout_think": ("rl", ("visurf.gt_style=rollout_think",)),
    "visurf_answer_tokens": ("rl", ("visurf.gt_loss_tokens=answer",)),
    "visurf_gt_think": ("rl", ("visurf.gt_template='<think></think><answer>{answer}</answer>'",)),
    "visurf_gt_thinking_full": ("rl", ("visurf.gt_thinking_reward=full",)),
    "visurf_no_smoothing": ("rl", ("visurf.smoothing=False",)),
    "visurf_all_fail": ("rl", ("visurf.inject_when=all_fail",)),
    "visurf_luffy": ("rl", ("visurf.gt_loss=luffy_shaping",)),
    "visurf_no_align": ("rl", ("visurf.align=False",)),
}
MAIN = ("sft", "grpo", "sft_grpo", "visurf")
ABLATIONS = tuple(m for m in METHODS if m not in MAIN)
# run by default (budget: docs/RESULTS.md "Budget"); the other ablations run with --only. The
# reward-control switches (gt_thinking_full, no_smoothing, all_fail) changed nothing in the previous
# instrument, where the GT wins almost every group.
DEFAULT_ABLATIONS = ("visurf_rollout_think", "visurf_answer_tokens", "visurf_luffy")
# visurf.align=False changes nothing when every label is already in rollout style (data_prep writes
# labels with json.dumps, the aligned style): run by default only when ``align_differences`` > 0.
NOOP_WHEN_ALIGNED = "visurf_no_align"
# Start order of runs that go side by side (--jobs): the longest first, so short runs fill the gaps
# (measured per 48 steps: ViSurf and its ablations ~2x GRPO; SFT->GRPO half GRPO; SFT a tenth).
COST_RANK = {"visurf": 0, "grpo": 1, "sft_grpo": 2, "sft": 3}


def by_cost(methods) -> list:
    """``methods`` (or ``(method, ...)`` tuples) longest run first (``COST_RANK``; ablations rank as
    ViSurf), the given order among equals."""
    def rank(item) -> int:
        m = item if isinstance(item, str) else item[0]
        return COST_RANK.get(m, COST_RANK["visurf"] if m.startswith("visurf") else len(COST_RANK))
    return sorted(methods, key=rank)


@dataclass(frozen=True)
class MicroConfig:
    """The shared budget of every run (docs/RESULTS.md "Settings")."""

    steps: int = 48  # optimizer steps per run (sft_grpo: half SFT, half GRPO)
    batch: int = 4  # prompts (rows) per step
    n: int = 4  # G sampled rollouts per prompt (ViSurf adds the GT: G+1)
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)  # each main method's lr grid (validation, ``val_seed``)
    max_response_length: int = 112  # the base's longest response (think + answer) is ~100 tokens
    eval_every: int = 16  # validation checkpoints at 16, 32, 48 (each validation pass costs ~5 s per run)
    val_seed: int = 1  # the seed of the lr grid; its runs at the chosen lr are reused as that seed's
    seeds: tuple[int, ...] = (1, 2, 3)  # main methods at their chosen lr
    ablation_seeds: tuple[int, ...] = (1, 2, 3)  # the full run fits the budget with them (docs/RESULTS.md "Budget")
    methods: tuple[str, ...] = MAIN + DEFAULT_ABLATIONS
    task: TaskSpec = field(default_factory=TaskSpec)
    base: BaseSpec = field(default_factory=BaseSpec)

    def __post_init__(self):
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"MicroConfig.lrs must be positive learning rates, got {self.lrs}")
        if self.steps % self.eval_every:
            raise ValueError(f"MicroConfig.steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"MicroConfig.methods: unknown {unknown} (known: {', '.join(METHODS)})")


def smoke_config() -> MicroConfig:
    """SMOKE=1: the same pipeline at toy size (CI): small base, 2 steps, SFT and ViSurf, a 2-lr grid on
    one seed, no ablations."""
    return MicroConfig(steps=2, eval_every=2, lrs=(1e-4, 1e-3), seeds=(1,), ablation_seeds=(),
                       methods=("sft", "visurf"),
                       task=TaskSpec(n_train=16, n_val=8, n_test=8, n_retention=4),
                       base=replace(BaseSpec(), steps=30, n_source=128, n_relation=32))


def align_differences(files: list[Path]) -> int:
    """Rows whose GT response differs between ``visurf.align=True`` and ``False`` (0: the switch is a no-op)."""
    import pyarrow.parquet as pq

    from verl_ext.constants import task_of
    from verl_ext.visurf.reward_control import gt_response

    n = 0
    for f in files:
        for row in pq.read_table(f, columns=["data_source", "reward_model"]).to_pylist():
            gt, task = row["reward_model"]["ground_truth"], task_of(row["data_source"])
            n += gt_response(gt, task, align=True) != gt_response(gt, task, align=False)
    return n


def lr_name(lr: float) -> str:
    """``1e-4`` -> ``"1e-04"``: the lr as it appears in run names."""
    return f"{lr:.0e}"


def run_name(method: str, lr: float, seed: int) -> str:
    return f"{method}_lr{lr_name(lr)}_s{seed}"


def select_lr(grid: dict[float, dict]) -> float:
    """The lr with the best validation accuracy: max over a run's validation curve (its best
    checkpoint), ties -> the better final validation accuracy, then the smaller lr."""
    if not grid:
        raise ValueError("select_lr: empty grid")
    return max(sorted(grid), key=lambda lr: (grid[lr]["best_val_acc"], grid[lr]["final_val_acc"], -lr))


def best_checkpoint(curve: list[dict]) -> dict:
    """The validation point with the best accuracy; ties -> the higher mean GT log-likelihood over the
    parts (``ll_*``), then the earlier step."""
    def ll(p):
        vals = [v for k, v in p.items() if k.startswith("ll_") and v is not None]
        return sum(vals) / len(vals) if vals else 0.0
    return max(curve, key=lambda p: (p["acc"], ll(p), -p["step"]))


def _env() -> dict:
    from verl_ext.cpu.launcher import CPU_ENV

    env = dict(os.environ)
    env.update(CPU_ENV)
    env.update(# ray pre-starts one idle python worker per logical CPU; on 2 shared cores that is pure
               # start-up cost (verl's actors get their own workers anyway)
               RAY_enable_worker_prestart="0", RAY_prestart_worker_first_driver="0",
               PYTHONPATH=f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT))
    return env


def _run(cmd: list[str], cwd: Path, log: Path, env: dict) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"{cmd[2] if len(cmd) > 2 else cmd}: exit {proc.returncode}; {log}:\n" + "\n".join(tail))


def rl_command(cfg: MicroConfig, model: Path, train: Path, val: Path, steps: int, work: Path,
               overrides: tuple[str, ...], name: str, seed: int, lr: float) -> list[str]:
    """``python -m recipe.visurf.main_visurf`` with the shared budget and the method's overrides."""
    b = cfg.batch
    return [sys.executable, "-m", "recipe.visurf.main_visurf",
            f"data.train_files={train}", f"data.val_files={val}", f"data.train_batch_size={b}",
            "data.max_prompt_length=256", f"data.max_response_length={cfg.max_response_length}",
            "data.dataloader_num_workers=0", "data.shuffle=False", f"data.seed={seed}",
            # the run's seed seeds every rollout sample (verl_ext.cpu.hf_rollout): seeds differ, reruns repeat
            f"actor_rollout_ref.rollout.seed={seed}",
            f"actor_rollout_ref.model.path={model}", f"actor_rollout_ref.rollout.n={cfg.n}",
            f"actor_rollout_ref.actor.optim.lr={lr}", f"actor_rollout_ref.actor.ppo_mini_batch_size={b}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={b}",
            f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={b}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]",
            "trainer.logger=[console,file]", "trainer.project_name=visurf_micro", f"trainer.experiment_name={name}",
            "trainer.val_before_train=False", "trainer.test_freq=-1", f"trainer.save_freq={cfg.eval_every}",
            "trainer.total_epochs=1000", f"trainer.total_training_steps={steps}", "trainer.resume_mode=disable",
            f"trainer.default_local_dir={work / 'ckpt'}", *overrides]


def sft_command(cfg: MicroConfig, model: Path, train_sft: Path, steps: int, work: Path, name: str,
                lr: float) -> list[str]:
    """verl's SFT trainer (torchrun, one CPU process) with the same optimizer and precision as the RL actor."""
    b = cfg.batch
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=1",
            "-m", "verl.trainer.sft_trainer",
            f"data.train_files={train_sft}", "data.val_files=null", "data.messages_key=messages",
            f"data.train_batch_size={b}", f"data.micro_batch_size_per_gpu={b}", "data.use_dynamic_bsz=False",
            "data.max_length=512", "data.truncation=error", "data.pad_mode=no_padding", "data.num_workers=0",
            f"model.path={model}", "model.use_remove_padding=False",
            "+model.override_config.attn_implementation=sdpa", "engine.strategy=fsdp2",
            # fp32 as the CPU RL actor (verl_ext.cpu.launcher.CPU_CONFIG); verl's FSDP default computes in bf16
            "+engine.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
            f"optim.lr={lr}", "optim.lr_warmup_steps_ratio=0.0", "optim.weight_decay=0.01", "optim.clip_grad=1.0",
            "optim.lr_scheduler_type=constant", "trainer.logger=[console,file]", "trainer.project_name=visurf_micro",
            f"trainer.experiment_name={name}", f"trainer.default_local_dir={work / 'ckpt'}",
            "trainer.n_gpus_per_node=1", "trainer.nnodes=1", f"trainer.total_training_steps={steps}",
            "trainer.total_epochs=1", f"trainer.save_freq={cfg.eval_every}", "trainer.test_freq=-1",
            "trainer.device=cpu", "trainer.resume_mode=disable", "checkpoint.save_contents=[model,hf_model]"]


def sft_file_order(n: int, seed: int = 0) -> list[int]:
    """File position of each row so that ``DistributedSampler(shuffle=True, seed=seed)`` (epoch 0,
    one replica) yields the rows in their intended order: the sampler visits file rows
    ``perm = randperm(n, generator(seed))``, so row ``j`` goes to file position ``perm[j]``."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randperm(n, generator=g).tolist()


def write_sft_rows(rl_rows: Path, out: Path) -> Path:
    """``data_prep.to_sft`` of ``rl_rows``, reordered by ``sft_file_order``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_prep.to_sft import main as to_sft

    tmp = out.with_name(f".{out.name}.unordered.parquet")
    try:
        if to_sft(["--in", str(rl_rows), "--out", str(tmp)]) != 0:
            raise RuntimeError(f"data_prep.to_sft failed on {rl_rows}")
        table = pq.read_table(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    perm = sft_file_order(table.num_rows)
    inverse = [0] * len(perm)
    for j, p in enumerate(perm):
        inverse[p] = j
    return write_atomically(out, lambda dest: pq.write_table(table.take(pa.array(inverse)), dest))


def hf_checkpoints(ckpt: Path, offset: int = 0) -> list[tuple[int, Path]]:
    """``(step + offset, HF dir)`` of the saved steps of a verl checkpoint root (RL: ``actor/huggingface``,
    SFT: ``huggingface``), by step."""
    out = []
    for d in ckpt.glob("global_step_*"):
        hf = d / "actor" / "huggingface" if (d / "actor").is_dir() else d / "huggingface"
        if (hf / "config.json").is_file():
            out.append((int(d.name.rsplit("_", 1)[1]) + offset, hf))
    return sorted(out)


def train(cfg: MicroConfig, method: str, seed: int, lr: float, base: Path, train_rows: Path, heldout: Path,
          work: Path, log=print, extra: tuple[str, ...] = ()) -> tuple[list[tuple[int, Path]], Path | None, Path | None]:
    """Run the method's trainer(s); returns the HF checkpoints by step, the RL metrics file and the SFT
    metrics file (None where the method has no such stage). ``extra``: more Hydra overrides for the RL
    trainer (the main job's command-line arguments)."""
    kind, overrides = METHODS[method]
    overrides = overrides + tuple(extra)
    env = _env()
    name = run_name(method, lr, seed)
    if kind == "sft":
        sft_rows = write_sft_rows(train_rows, work / "train_sft.parquet")
        env["VERL_FILE_LOGGER_PATH"] = str(work / "sft_metrics.jsonl")
        _run(sft_command(cfg, base, sft_rows, cfg.steps, work, name, lr), work, work / "train.log", env)
        return hf_checkpoints(work / "ckpt"), None, work / "sft_metrics.jsonl"
    if kind == "rl":
        env["VERL_FILE_LOGGER_PATH"] = str(work / "metrics.jsonl")
        _run(rl_command(cfg, base, train_rows, heldout, cfg.steps, work, overrides, name, seed, lr),
             work, work / "train.log", env)
        return hf_checkpoints(work / "ckpt"), work / "metrics.jsonl", None
    # sft_rl: SFT on the first half of the order, then GRPO from the SFT model on the second half
    half = cfg.steps // 2
    first = slice_rows(train_rows, work / "train_first.parquet", 0, half * cfg.batch)
    second = slice_rows(train_rows, work / "train_second.parquet", half * cfg.batch, cfg.steps * cfg.batch)
    sft_work = work / "sft"
    sft_rows = write_sft_rows(first, work / "train_first_sft.parquet")
    env["VERL_FILE_LOGGER_PATH"] = str(work / "sft_metrics.jsonl")
    _run(sft_command(cfg, base, sft_rows, half, sft_work, name + "_sft", lr), sft_work, work / "train_sft.log", env)
    sft_ckpts = hf_checkpoints(sft_work / "ckpt")
    if not sft_ckpts or sft_ckpts[-1][0] != half:
        raise RuntimeError(f"{name}: SFT stage saved no step-{half} checkpoint under {sft_work / 'ckpt'}")
    env["VERL_FILE_LOGGER_PATH"] = str(work / "metrics.jsonl")
    _run(rl_command(cfg, sft_ckpts[-1][1], second, heldout, cfg.steps - half, work, overrides, name, seed, lr),
         work, work / "train.log", env)
    return sft_ckpts + hf_checkpoints(work / "ckpt", offset=half), work / "metrics.jsonl", work / "sft_metrics.jsonl"


def evaluate_run(ckpts: list[tuple[int, Path]], files, work: Path) -> dict:
    """Validation report per checkpoint (the curve); test reports of the last checkpoint and of the best
    validation checkpoint (``best_checkpoint``); retention report of the last checkpoint."""
    from recipe.visurf.micro.evaluation import evaluate_model

    curve = []
    for step, hf in ckpts:
        curve.append({"step": step, **evaluate_model(hf, files.val, work / f"eval_val_step{step}")})
    by_step = dict(ckpts)
    final_step = ckpts[-1][0]
    best = best_checkpoint(curve)
    test = {"step": final_step, **evaluate_model(by_step[final_step], files.test, work / "eval_test_final")}
    test_best = test if best["step"] == final_step else \
        {"step": best["step"], **evaluate_model(by_step[best["step"]], files.test, work / "eval_test_best")}
    retention = evaluate_model(by_step[final_step], files.retention, work / "eval_retention", loglik=False)
    return {"curve": curve, "val_final": dict(curve[-1]), "best_step": best["step"], "test": test,
            "test_best": test_best, "retention": retention}


RUN_INDEPENDENT = ("methods", "seeds", "ablation_seeds", "lrs", "val_seed")  # config keys that do not change a run


def parts_line(report: dict) -> str:
    """``"a 1.00 b 0.00 ..."``: a report's accuracy per target part, for the log."""
    return " ".join(f"{p} {report.get('acc_' + p, 0):.2f}" for p in R.PARTS)


def run_key(settings: dict | None) -> dict | None:
    """The part of a run's settings that decides its result (the method, seed and lr lists do not)."""
    if settings is None:
        return None
    return {**settings, "config": {k: v for k, v in settings["config"].items() if k not in RUN_INDEPENDENT}}


def run_settings(cfg: MicroConfig, method: str, lr: float) -> dict:
    return {"config": R.config_dict(cfg), "overrides": list(METHODS[method][1]), "lr": lr}


def finished(cfg: MicroConfig, method: str, lr: float, seed: int, out: Path) -> dict | None:
    """The result of a finished run with the same settings, else None."""
    path = out / "runs" / run_name(method, lr, seed) / "result.json"
    if path.is_file():
        done = json.loads(path.read_text())
        if run_key(done.get("settings")) == run_key(run_settings(cfg, method, lr)):
            return done
    return None


def run_id(r: dict) -> tuple:
    """``(method, lr, seed)``: what names a run (``run_name``) and orders reports."""
    return r["method"], r.get("lr"), r["seed"]


def runs_on_disk(cfg: MicroConfig, out: Path) -> list[dict]:
    """Every finished run under ``<out>/runs`` whose settings match ``cfg`` (any method, lr, seed): a later
    invocation on the same work directory (``--only``, more seeds) reports them with its own runs instead
    of replacing the report."""
    found = []
    for path in (out / "runs").glob("*/result.json"):
        try:
            done = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        m, lr = done.get("method"), done.get("lr")
        if m in METHODS and lr is not None and run_key(done.get("settings")) == run_key(run_settings(cfg, m, lr)):
            found.append(done)
    return found


def merge_runs(results: list[dict], on_disk: list[dict]) -> list[dict]:
    """This invocation's results (failed ones included) plus the runs on disk it did not produce, in
    ``METHODS`` order, then lr and seed."""
    mine = {run_id(r) for r in results}
    order = list(METHODS)
    return sorted(results + [r for r in on_disk if run_id(r) not in mine],
                  key=lambda r: (order.index(r["method"]), *run_id(r)[1:]))


def prior_invocations(results_path: Path, base_name: str, runs: list[dict]) -> list[dict]:
    """The invocations recorded in an existing results file of the same base whose every reported run is
    still in ``runs`` (so this invocation extends that report); [] otherwise."""
    try:
        old = json.loads(Path(results_path).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if old.get("base", {}).get("dir") != base_name:
        return []
    have = {run_id(r) for r in runs if "failed" not in r}
    if any(run_id(r) not in have for r in old.get("runs", []) if "failed" not in r):
        return []
    return old.get("invocations") or [{"argv": [], "commit": old.get("commit", "unknown"),
                                       "wall_s": old.get("wall_s", 0.0), "runs": len(old.get("runs", [])),
                                       "complete": old.get("complete", False)}]


def run_one(cfg: MicroConfig, method: str, lr: float, seed: int, base: Path, files, out: Path, log=print) -> dict:
    """Train + evaluate one (method, lr, seed); reuses ``result.json`` of a finished run with the same settings."""
    name = run_name(method, lr, seed)
    done = finished(cfg, method, lr, seed, out)
    if done is not None:
        log(f"[{name}] done before, reused")
        return done
    work = out / "runs" / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    train_rows = ordered_train(files.train_pool, out / "data" / f"train_seed{seed}_{cfg.steps}x{cfg.batch}.parquet",
                               cfg.steps, cfg.batch, seed)
    log(f"[{name}] training {cfg.steps} steps ({' '.join(METHODS[method][1]) or 'defaults'}) ...")
    t0 = time.time()
    ckpts, metrics, sft_metrics = train(cfg, method, seed, lr, base, train_rows, files.val, work, log)
    train_s = time.time() - t0
    if not ckpts or ckpts[-1][0] != cfg.steps:
        raise RuntimeError(f"{name}: no step-{cfg.steps} checkpoint in {work}")
    t1 = time.time()
    ev = evaluate_run(ckpts, files, work)
    eval_s = time.time() - t1
    result = {"method": method, "seed": seed, "lr": lr, "kind": METHODS[method][0], "steps": cfg.steps,
              "rows_seen": cfg.steps * cfg.batch, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
              **ev, "train_metrics": R.train_metrics(metrics) if metrics else [],
              "sft_loss": R.sft_loss(sft_metrics) if sft_metrics else [], "settings": run_settings(cfg, method, lr)}
    write_text_atomically(work / "result.json", json.dumps(result, indent=1))  # read by the other --jobs threads' reports
    for _, hf in ckpts:  # weights are not needed any more; the evaluations are kept
        shutil.rmtree(hf.parent if hf.parent.name == "actor" else hf, ignore_errors=True)
    t, v = result["test"], result["val_final"]
    log(f"[{name}] test acc {t['acc']:.3f} ({parts_line(t)}), "
        f"format {t['format']:.2f}, val {v['acc']:.3f} (best {result['test_best']['acc']:.3f} on test at step "
        f"{result['best_step']}), retention {result['retention']['acc']:.3f}; train {train_s:.0f}s, eval {eval_s:.0f}s")
    return result


def prepare(cfg: MicroConfig, out: Path, log=print, sampled_k: int = 4, full: bool = True):
    """The cached base, the task files and the base's own evaluation: test report and the style gap
    under the thinking prompt (on the retention rows: known answers); with ``full`` also the validation
    report (step 0 of every curve), retention, and the share of correct temperature-1 samples per part
    (validation rows, ``sampled_k`` samples per row; how often RL's rollouts can find each part's answer)."""
    from recipe.visurf.micro.evaluation import evaluate_model, sampled_accuracy, style_gap

    base = build_base(cfg.base, log=log)
    files = make_task(out / "data", cfg.task)
    base_eval_path = out / "base_eval.json"
    key = {"base": base.name, "task": asdict(cfg.task), "sampled_k": sampled_k, "full": full}
    if base_eval_path.is_file() and json.loads(base_eval_path.read_text()).get("key") == key:
        base_eval = json.loads(base_eval_path.read_text())
    else:
        work = out / "base_eval" / base.name  # evaluate() resumes from predictions found there: one dir per base
        base_eval = {"key": key, "test": evaluate_model(base, files.test, work / "test"),
                     "style_gap": style_gap(base, files.retention)}
        if full:
            base_eval.update(val=evaluate_model(base, files.val, work / "val"),
                             retention=evaluate_model(base, files.retention, work / "retention", loglik=False),
                             sampled_val=sampled_accuracy(base, files.val, k=sampled_k, seed=0))
        write_text_atomically(base_eval_path, json.dumps(base_eval, indent=1))
    return base, files, base_eval


def plan(cfg: MicroConfig) -> tuple[list[tuple[str, float, int]], list[str]]:
    """The lr-grid runs (method, lr, ``val_seed``) of the main methods in ``cfg.methods``, and the
    methods whose seeds follow once their lr is chosen (main methods first, then ablations)."""
    main = [m for m in MAIN if m in cfg.methods]
    grid = [(m, lr, cfg.val_seed) for m in main for lr in cfg.lrs]
    return grid, main + [m for m in ABLATIONS if m in cfg.methods]


def chosen_lrs(cfg: MicroConfig, out: Path, results: list[dict]) -> tuple[dict, dict]:
    """(lr grid validation scores per main method, chosen lr per main method) from the grid runs
    finished in ``results`` or on disk (a method whose grid is incomplete has no chosen lr)."""
    grid: dict[str, dict] = {}
    chosen: dict[str, float] = {}
    for m in MAIN:
        scores = {}
        for lr in cfg.lrs:
            r = next((r for r in results if (r.get("method"), r.get("lr"), r.get("seed")) == (m, lr, cfg.val_seed)
                      and "failed" not in r), None) or finished(cfg, m, lr, cfg.val_seed, out)
            if r is not None:
                scores[lr] = {"best_val_acc": max(p["acc"] for p in r["curve"]), "final_val_acc": r["val_final"]["acc"],
                              "best_step": r["best_step"]}
        if scores:
            grid[m] = {lr_name(lr): v for lr, v in scores.items()}
        if len(scores) == len(cfg.lrs):
            chosen[m] = select_lr(scores)
    return grid, chosen


def commit_of(root: Path = ROOT) -> str:
    """``git rev-parse HEAD`` of the project (``+dirty`` when tracked files differ), or "unknown"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "micro"), help="work directory (runs, data, logs)")
    p.add_argument("--smoke", action="store_true", help="toy-size version of the whole pipeline (CI)")
    p.add_argument("--only", nargs="*", choices=tuple(METHODS), help="run only these methods")
    p.add_argument("--seeds", nargs="*", type=int, help="main-method seeds (default 1 2 3)")
    p.add_argument("--ablation-seeds", nargs="*", type=int, help="ablation seeds (default: MicroConfig's)")
    p.add_argument("--lrs", nargs="*", type=float, help="the main methods' lr grid (default: MicroConfig's)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained side by side (default 2: one run keeps about "
                   "one of 2 cores busy; results do not depend on it, wall times per run do)")
    p.add_argument("--results", default=None, help="results JSON (default docs/results/micro.json; smoke: <out>)")
    p.add_argument("--docs", default=None, help="directory for the PNG curves (default docs/; smoke: <out>)")
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    cfg = smoke_config() if args.smoke else MicroConfig()
    if args.only:
        cfg = replace(cfg, methods=tuple(args.only))
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    if args.ablation_seeds is not None:
        cfg = replace(cfg, ablation_seeds=tuple(args.ablation_seeds))
    if args.lrs:
        cfg = replace(cfg, lrs=tuple(args.lrs))
    out = Path(args.out).resolve()  # the trainers run in the run's directory: relative paths would break
    results_path = Path(args.results or (out / "micro.json" if args.smoke else ROOT / "docs" / "results" / "micro.json"))
    docs = Path(args.docs or (out if args.smoke else ROOT / "docs"))
    out.mkdir(parents=True, exist_ok=True)
    t0, steal0 = time.time(), cpu_steal()
    commit = commit_of()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    base, files, base_eval = prepare(cfg, out, log)
    base_eval["align_differences"] = align_differences([files.train_pool])
    if base_eval["align_differences"] and not args.only and NOOP_WHEN_ALIGNED not in cfg.methods:
        cfg = replace(cfg, methods=cfg.methods + (NOOP_WHEN_ALIGNED,))
    log(f"visurf.align=False changes the GT of {base_eval['align_differences']} training rows"
        + ("" if base_eval["align_differences"] else f" (a no-op here: {NOOP_WHEN_ALIGNED} not run)"))
    v, g = base_eval["val"], base_eval["style_gap"]
    log(f"base {base.name}: val acc {v['acc']:.3f} ({parts_line(v)}), "
        f"format {v['format']:.2f}; retention {base_eval['retention']['acc']:.3f}; sampled {base_eval['sampled_val']}; "
        f"style gap {g['gap']:.1f} nats (think {g['ll_think']:.1f}, answer-only {g['ll_answer_only']:.1f})")
    d_share = base_eval["sampled_val"].get("sampled_d")
    if d_share is not None and not in_band(d_share):
        log(f"WARNING: the base solves part (d) in {d_share:.0%} of its temperature-1 samples on validation, "
            f"outside the {D_BAND[0]:.0%}-{D_BAND[1]:.0%} band the instrument assumes (RL needs a partly solved "
            "part to sharpen): check the BaseSpec with python -m recipe.visurf.micro.calibrate")
    results: list[dict] = []
    prior: list[dict] | None = None  # earlier invocations this one extends (read once, before the first write)

    def write(complete: bool = False) -> None:
        nonlocal prior
        report = merge_runs(results, runs_on_disk(cfg, out))
        if prior is None:
            prior = prior_invocations(results_path, base.name, report)
        grid, chosen = chosen_lrs(cfg, out, results)
        R.write_all(results_path, docs, cfg, base, base_eval, report, grid, chosen, wall_s=time.time() - t0,
                    commit=commit, complete=complete, invocations=prior, argv=argv,
                    steal_share=steal_share(steal0, cpu_steal()))

    lock = threading.Lock()  # results and the report, shared by the --jobs threads

    def record(run: tuple[str, float, int]) -> None:
        method, lr, seed = run
        try:
            result = run_one(cfg, method, lr, seed, base, files, out, log)
        except Exception as e:  # one failed run must not lose the others: report it and go on
            log(f"[{run_name(method, lr, seed)}] FAILED: {e}")
            result = {"method": method, "seed": seed, "lr": lr, "failed": str(e)[-2000:]}
        with lock:
            results.append(result)
            write()

    def record_all(runs: list[tuple[str, float, int]]) -> None:
        """Each run not yet in ``results`` (once), ``--jobs`` at a time, longest first."""
        todo = list(dict.fromkeys(r for r in runs if not any(run_id(x) == r for x in results)))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(record, by_cost(todo)))

    grid_runs, followers = plan(cfg)
    record_all(grid_runs)
    _, chosen = chosen_lrs(cfg, out, results)
    log(f"chosen lrs (validation, seed {cfg.val_seed}): {chosen or 'none'}")
    runs = []
    for method in followers:
        lr = chosen.get(method if method in MAIN else "visurf")
        if lr is None:
            log(f"[{method}] skipped: no chosen lr ({'its' if method in MAIN else 'visurf'} lr grid is incomplete)")
            continue
        runs += [(method, lr, seed) for seed in (cfg.seeds if method in MAIN else cfg.ablation_seeds)]
    record_all(runs)
    write(complete=True)
    log(f"done: {results_path}, curves in {docs}")
    return 1 if any("failed" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
