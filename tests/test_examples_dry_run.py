"""The GPU launch scripts under ``DRY_RUN=1`` and the RL -> SFT converter of the SFT baselines.

No GPU here: each ``examples/run_qwen2_5_vl_7b_*.sh`` runs with ``DRY_RUN=1`` (prints the command,
composes + validates the config through ``recipe.visurf.dry_run``, starts nothing) against the tiny
local Qwen2.5-VL and a synthetic grounding parquet; each ``examples/run_qwen3_vl_8b_*.sh`` against
the tiny local Qwen3-VL and the same rows prepared for its convention (``--coords rel1000``). The
scripts run concurrently (each is mostly verl's import time). The converter's output is loaded with
verl's own ``MultiTurnSFTDataset``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
N_ROWS = 8


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_model_dir, tiny_qwen3_vl_dir) -> dict[str, Path]:
    from data_prep.synthetic import generate
    from data_prep.to_sft import convert

    root = tmp_path_factory.mktemp("dry_run")
    rl = root / "train.parquet"
    generate("grounding", N_ROWS, 0, str(rl), image_size=112)
    sft = root / "train_for_sft.parquet"
    assert convert(rl, sft) == N_ROWS
    rl_rel = root / "train_rel1000.parquet"
    generate("grounding", N_ROWS, 0, str(rl_rel), image_size=112, coords="rel1000")
    return {"root": root, "model": tiny_model_dir, "rl": rl, "sft": sft, "qwen3_vl": tiny_qwen3_vl_dir,
            "rl_rel": rl_rel}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}  # no CPU-platform switch
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


class Runs:
    """The scripts, started together in the background (each is mostly verl's import time); ``[name]``
    waits for one. Started before the first test of the module so the converter tests overlap them."""

    def __init__(self, paths: dict[str, Path]):
        common = {
            "MODEL_PATH": str(paths["model"]),
            "TRAIN_FILES": str(paths["rl"]),
            "VAL_FILES": str(paths["rl"]),
            "CKPT_DIR": str(paths["root"] / "ckpt"),
            "DRY_RUN": "1",
        }
        qwen3 = {**common, "MODEL_PATH": str(paths["qwen3_vl"]), "TRAIN_FILES": str(paths["rl_rel"]),
                 "VAL_FILES": str(paths["rl_rel"])}
        jobs = {
            "visurf": ("run_qwen2_5_vl_7b_visurf.sh", common, []),
            "qwen3_visurf": ("run_qwen3_vl_8b_visurf.sh", qwen3, []),
            "qwen3_grpo": ("run_qwen3_vl_8b_grpo.sh", qwen3, []),
            # stage 1 = run_qwen2_5_vl_7b_sft.sh (SFT parquet given, the val one to be converted: printed, not
            # written), stage 2 = run_qwen2_5_vl_7b_grpo.sh; the extra arg goes to stage 2
            "sft_then_grpo": (
                "run_qwen2_5_vl_7b_sft_then_grpo.sh",
                {**common, "SFT_TRAIN_FILES": str(paths["sft"])},
                ["trainer.total_training_steps=5"],
            ),
        }
        self.procs = {
            name: subprocess.Popen(
                ["bash", str(EXAMPLES / script), *args],
                cwd=paths["root"],
                env=_env(**env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, (script, env, args) in jobs.items()
        }
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.done:
            proc = self.procs[name]
            stdout, stderr = proc.communicate(timeout=300)
            self.done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        return self.done[name]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def runs(paths):
    started = Runs(paths)
    yield started
    started.stop()


def _ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, (
        f"exit {run.returncode}\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}"
    )
    return run.stdout


def _field(out: str, key: str) -> str:
    """Value of one row of the dry-run summary table (the last one when two stages print it)."""
    values = re.findall(rf"^  {re.escape(key)}\s{{2,}}(.*)$", out, flags=re.MULTILINE)
    assert values, f"no {key!r} row in:\n{out}"
    return values[-1]


# ---------------------------------------------------------------------------------------------
# data_prep.to_sft
# ---------------------------------------------------------------------------------------------
def test_to_sft_rows_load_in_verl_multiturn_sft_dataset(paths):
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from verl_ext.constants import task_of
    from verl_ext.visurf.config import VisurfConfig

    rl = pq.read_table(paths["rl"]).to_pylist()
    sft = pq.read_table(paths["sft"]).to_pylist()
    assert len(sft) == len(rl) == N_ROWS
    for a, b in zip(rl, sft):
        assert b["messages"][:-1] == a["prompt"] and b["images"] == a["images"]
        assert b["messages"][-1] == {
            "role": "assistant",
            "content": VisurfConfig().gt_response(a["reward_model"]["ground_truth"], task_of(a["data_source"])),
        }

    tok = AutoTokenizer.from_pretrained(paths["model"])
    processor = AutoProcessor.from_pretrained(paths["model"])
    config = OmegaConf.create({"max_length": 2048, "pad_mode": "no_padding", "truncation": "error"})
    ds = MultiTurnSFTDataset(str(paths["sft"]), tok, config, processor=processor)
    assert len(ds) == N_ROWS
    for i in (0, N_ROWS - 1):
        item = ds[i]
        trained = tok.decode(item["input_ids"][item["loss_mask"].bool()])
        assert trained.startswith(sft[i]["messages"][-1]["content"])  # only the GT answer (+ end of turn) is trained
        assert item["multi_modal_inputs"]["image_grid_thw"].shape == (1, 3)
        assert item["position_ids"].shape == (4, item["input_ids"].shape[0])  # text + Qwen2.5-VL 3-D rope


def _write_rows(path: Path, rows: list[dict]) -> None:
    from data_prep.common import ROW_SCHEMA

    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), path)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("label", r"row 3 \(id 'synthetic_grounding_0_3'.*bad grounding label"),
        ("image", r"row 3 \(id 'synthetic_grounding_0_3'.*1 <image> placeholder\(s\) in the prompt but 0 image\(s\)"),
    ],
    ids=["bad_label", "missing_image"],
)
def test_to_sft_bad_row_is_named_and_nothing_is_written(paths, tmp_path, capsys, breakage, message):
    from data_prep.to_sft import main

    rows = pq.read_table(paths["rl"]).to_pylist()
    if breakage == "label":
        rows[3]["reward_model"]["ground_truth"] = '[{"bbox_2d": [1, 2]}]'
    else:
        rows[3]["images"] = []
    src, out = tmp_path / "rl.parquet", tmp_path / "sft.parquet"
    _write_rows(src, rows)
    out.write_bytes(b"previous")
    assert main(["--in", str(src), "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert out.read_bytes() == b"previous"  # atomic: the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl.parquet", "sft.parquet"]  # no temp file left


# ---------------------------------------------------------------------------------------------
# The GPU scripts under DRY_RUN=1
# ---------------------------------------------------------------------------------------------
PAPER_OVERRIDES = (  # docs/METHOD.md §7, as printed in the command
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.n=8",
    "actor_rollout_ref.rollout.temperature=1.0",
    "actor_rollout_ref.actor.optim.lr=1e-6",
    "actor_rollout_ref.actor.optim.weight_decay=1e-2",
    "actor_rollout_ref.actor.optim.clip_grad=1.0",
    "data.train_batch_size=16",
    "data.max_prompt_length=1300",
    "data.max_response_length=2048",
    "actor_rollout_ref.actor.use_kl_loss=False",
    "algorithm.use_kl_in_reward=False",
    "trainer.n_gpus_per_node=8",
)


def _stages(runs) -> tuple[str, str]:
    """Output of run_qwen2_5_vl_7b_sft_then_grpo.sh split into its SFT and GRPO stages."""
    sft, grpo = _ok(runs["sft_then_grpo"]).split("=== stage 2/2")
    return sft, grpo


def test_visurf_script_prints_the_paper_command_and_validates(runs, paths):
    out = _ok(runs["visurf"])
    command = out.split("[validate_config]")[0]
    assert "-m recipe.visurf.main_visurf \\\n" in command
    for override in PAPER_OVERRIDES + ("visurf.enable=True", f"actor_rollout_ref.model.path={paths['model']}"):
        assert f"\n    {override} \\\n" in command, override  # one override per line
    assert "dry run (RL): config valid" in out
    assert _field(out, "G (sampled rollouts)") == "8"
    assert _field(out, "rollout.n used").startswith("9 (G + 1")
    assert _field(out, "batch rows / step") == "144 = 16 x 9"
    assert _field(out, "advantage estimator") == "visurf"
    assert _field(out, "policy loss").startswith("visurf")
    assert _field(out, "reward manager").startswith("ViSurfRewardManager")
    assert _field(out, "visurf") == (
        "inject_when=always align=True gt_thinking_reward=zero smoothing=True gt_loss=ppo_clip"
    )
    assert _field(out, "KL") == "off"
    assert _field(out, "rollout").startswith("vllm, temperature 1.0")
    assert _field(out, "model").endswith("(qwen2_5_vl)")  # a local model: its HF config was read
    assert _field(out, "coordinates").startswith("abs840 ")  # visurf.coords=auto: Qwen2.5-VL's


@pytest.mark.parametrize("name", ["qwen3_visurf", "qwen3_grpo"])
def test_qwen3_vl_scripts_print_the_paper_command_in_0_1000_coordinates(runs, paths, name):
    """The Qwen3-VL scripts: the 7B script's settings, the Qwen3-VL model, ``visurf.coords=rel1000``;
    validated against the tiny Qwen3-VL on rows prepared with ``--coords rel1000``."""
    out = _ok(runs[name])
    command = out.split("[validate_config]")[0]
    visurf = name == "qwen3_visurf"
    for override in PAPER_OVERRIDES + (f"visurf.enable={visurf}", "visurf.coords=rel1000",
                                       f"actor_rollout_ref.model.path={paths['qwen3_vl']}",
                                       f"trainer.experiment_name=qwen3_vl_8b_{'visurf' if visurf else 'grpo'}"):
        assert f"\n    {override} \\\n" in command, override
    assert "dry run (RL): config valid" in out
    assert _field(out, "coordinates").startswith("rel1000 ")
    assert _field(out, "model").endswith("(qwen3_vl)")
    assert _field(out, "batch rows / step") == ("144 = 16 x 9" if visurf else "128 = 16 x 8")
    assert _field(out, "advantage estimator") == ("visurf" if visurf else "grpo")


def test_qwen3_vl_script_on_qwen2_5_vl_data_stops_naming_the_fix(paths, capsys):
    """The dry-run CLI the script ``exec``s, with the Qwen3-VL script's ``visurf.coords=rel1000`` on rows
    prepared for the Qwen2.5-VL prompts: stopped at start-up, naming the row and data_prep's --coords."""
    from recipe.visurf.dry_run import main

    assert main(["actor_rollout_ref.rollout.name=vllm", "trainer.n_gpus_per_node=8", "visurf.coords=rel1000",
                 f"actor_rollout_ref.model.path={paths['qwen3_vl']}", f"data.train_files={paths['rl']}",
                 f"data.val_files={paths['rl']}"]) == 1
    err = capsys.readouterr().err
    assert f"{paths['rl']} row 0" in err and "prepared for abs840" in err and "--coords rel1000" in err


@pytest.mark.parametrize(
    "override, reason",
    [
        ("visurf.inject_when=sometimes", "visurf.inject_when must be one of ('always', 'all_fail'), got 'sometimes'"),
        (
            "visurf.typo=1",
            "Hydra could not compose the config: ConfigCompositionException: Could not override 'visurf.typo'",
        ),
        (
            "data.train_batch_size=3",
            # the recipe's start-up check (verl_ext.visurf.config.check_verl_combination) before verl's own
            "visurf.enable=True generates data.train_batch_size x (G+1) = 3 x 9 = 27 rows per step",
        ),
        # Hydra adds a key given with "+": the typed block names it, as Hydra does without "+"
        ("+visurf.smoothng=True", "unknown visurf setting(s): visurf.smoothng (did you mean visurf.smoothing?)"),
        ("actor_rollout_ref.actor.optim.lr=-1", "actor_rollout_ref.actor.optim.lr must be a number > 0"),
    ],
    ids=["visurf_value", "unknown_key", "batch_split_rule", "unknown_key_added", "negative_lr"],
)
def test_bad_override_exits_nonzero_with_the_reason(paths, capsys, override, reason):
    """The dry-run CLI the scripts ``exec`` (in-process: a fourth script process would double the
    module's share of this 2-core machine; the scripts pass "$@" through, checked above and below)."""
    from recipe.visurf.dry_run import main

    args = [
        "actor_rollout_ref.rollout.name=vllm",
        "trainer.n_gpus_per_node=8",
        f"actor_rollout_ref.model.path={paths['model']}",
        f"data.train_files={paths['rl']}",
        override,
    ]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "config valid" not in captured.out
    assert f"dry run (RL): INVALID config: {reason}" in captured.err


def test_sft_stage_validates_verl_sft_config_and_row_0(runs, paths):
    sft, _ = _stages(runs)
    assert "-m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=8 -m verl.trainer.sft_trainer" in sft
    assert f"data.train_files={paths['sft']}" in sft
    assert "dry run (SFT): config valid" in sft
    assert "hf_model" in _field(sft, "checkpoint")  # GRPO after SFT starts from the HF model
    assert re.fullmatch(r"\d+ tokens, \d+ trained \(assistant\), images 1", _field(sft, "row 0"))
    derived = paths["rl"].with_name("train_sft.parquet")  # VAL_FILES' conversion: printed, not done
    assert f"-m data_prep.to_sft --in {paths['rl']} --out {derived}" in sft
    assert f"--out {paths['sft']}" not in sft  # the given SFT parquet is newer than its source: kept
    assert not derived.exists()
    assert not (paths["root"] / "ckpt").exists()


def test_grpo_stage_is_the_visurf_script_without_gt_from_the_sft_model(runs, paths):
    sft, grpo = _stages(runs)
    assert "dry run (RL): config valid" in grpo
    assert "    visurf.enable=False \\\n" in grpo
    for override in PAPER_OVERRIDES:
        assert override in grpo, override
    assert _field(grpo, "mode").startswith("GRPO")
    assert _field(grpo, "rollout.n used") == "8"
    assert _field(grpo, "batch rows / step") == "128 = 16 x 8"
    assert _field(grpo, "advantage estimator") == "grpo"
    assert _field(grpo, "policy loss").startswith("vanilla")
    assert "global_step_LAST/huggingface" in _field(grpo, "model")
    assert "    trainer.total_training_steps=5\n" in grpo  # extra args go to the GRPO stage
    assert "trainer.total_training_steps=5" not in sft
