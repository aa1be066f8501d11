"""Validate a launch without starting it: ``python -m recipe.visurf.dry_run [--sft] [overrides]``.

What the GPU scripts run under ``DRY_RUN=1`` (``examples/run_qwen2_5_vl_7b_*.sh``). Nothing is
started: no ray, no torchrun, no GPU, no model weights.

RL (default): composes ``config/visurf_trainer.yaml`` with Hydra's compose API and the given
overrides, applies :func:`recipe.visurf.main_visurf.prepare_config` (``n := G + 1`` with ViSurf
on; the ``visurf:`` block — an unknown key too, also one added with ``+`` —, lr / weight decay /
grad clip / temperature, ``rollout.n`` >= 2 for GRPO and the verl settings a ViSurf run cannot train
with, all in ``verl_ext.visurf.config``; every data file's labels, ``verl_ext.visurf.source_check``),
then checks what ``run_visurf`` would: every value resolvable (``???`` / broken interpolations),
verl's own ``validate_config`` (batch divisibility, micro batches, ...), the advantage estimator and
policy loss registered, the reward manager and reward function importable, the agent-loop
manager class and config present.
``--sft``: composes verl's ``sft_trainer_engine`` config (``verl.trainer.sft_trainer``) and
builds its engine / optimiser / checkpoint / profiler dataclasses as the SFT trainer does.

Only where a check needs files that a dry run may not have are they guarded: the model's HF
config (and, for ``--sft``, tokenizer/processor + row 0 through verl's ``MultiTurnSFTDataset``)
are read only when the model path is a local directory (a hub id is not fetched), and missing
data files are reported as notes (the run itself fails on them). Exit 0: valid; exit 1: the
reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).parent / "config"
RL_CONFIG = "visurf_trainer"
SFT_CONFIG_MODULE = "verl.trainer.config"
SFT_CONFIG = "sft_trainer_engine"

EPILOG = """examples:
  python -m recipe.visurf.dry_run actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=8 \\
      actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct data.train_files=train.parquet
  python -m recipe.visurf.dry_run --sft model.path=Qwen/Qwen2.5-VL-7B-Instruct data.train_files=sft.parquet
"""


class DryRunError(Exception):
    """The configuration would not start (message says why)."""


# ---------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------
def _compose(
    overrides: list[str], *, config_dir: str | None = None, config_module: str | None = None, config_name: str
) -> DictConfig:
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    init = (
        initialize_config_dir(config_dir=config_dir, version_base=None)
        if config_dir
        else initialize_config_module(config_module=config_module, version_base=None)
    )
    try:
        with init:
            return compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:  # unknown key, bad override syntax, missing group, ...
        raise DryRunError(f"Hydra could not compose the config: {type(e).__name__}: {e}") from None


def compose_rl(overrides: list[str]) -> DictConfig:
    """The recipe config with ``overrides`` (Hydra command-line syntax), not yet prepared."""
    return _compose(overrides, config_dir=str(CONFIG_DIR), config_name=RL_CONFIG)


def compose_sft(overrides: list[str]) -> DictConfig:
    """verl's SFT trainer config (``verl.trainer.sft_trainer``) with ``overrides``."""
    return _compose(overrides, config_module=SFT_CONFIG_MODULE, config_name=SFT_CONFIG)


def _user_keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}


def _missing_keys(node, prefix: str = "") -> list[str]:
    from omegaconf import ListConfig

    out = []
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            if OmegaConf.is_missing(node, key):
                out.append(path)
            else:
                child = node._get_node(key)
                if isinstance(child, (DictConfig, ListConfig)):
                    out += _missing_keys(child, path)
    return out


def _resolve_all(config: DictConfig, unused: tuple[str, ...] = ()) -> None:
    """Every interpolation must resolve, and no ``???`` value may be left outside the
    ``unused`` sections (e.g. a disabled reward model's rollout)."""
    from omegaconf.errors import OmegaConfBaseException

    missing = [k for k in _missing_keys(config) if not any(k == u or k.startswith(u + ".") for u in unused)]
    if missing:
        raise DryRunError(
            f"required value(s) not set: {', '.join(missing)} (give them as overrides, e.g. {missing[0]}=...)"
        )
    try:
        OmegaConf.to_container(config, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise DryRunError(f"config does not resolve at {getattr(e, 'full_key', '?')}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Local-file guards
# ---------------------------------------------------------------------------------------------
def _files(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _check_data(files, what: str, notes: list[str]) -> None:
    for f in _files(files):
        path = os.path.expanduser(f)
        if "://" in f:
            notes.append(f"{what} {f}: remote path, not checked")
        elif not os.path.isfile(path):
            notes.append(f"{what} {f}: not found here (the run reads it at start-up)")
        elif not f.endswith(".parquet"):
            notes.append(f"{what} {f}: not a .parquet file, its labels are not checked before the run")


def _local_model(path: str) -> str | None:
    """The local directory of ``path`` or None (a hub id / remote path: not fetched in a dry run)."""
    local = os.path.expanduser(str(path))
    return local if os.path.isdir(local) else None


def _check_model_config(path: str, notes: list[str]) -> str:
    """Read the HF config of a local model; returns a one-line description."""
    local = _local_model(path)
    if local is None:
        notes.append(f"model {path}: not a local directory, its files are not read in a dry run")
        return f"{path} (not read)"
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(local)
    except (OSError, ValueError) as e:
        raise DryRunError(f"model {path}: cannot read its HF config: {e}") from None
    if getattr(hf, "model_type", None) not in ("qwen2_5_vl", "qwen2_vl"):
        notes.append(f"model {path}: model_type {hf.model_type!r}, the recipe targets Qwen2.5-VL")
    return f"{path} ({hf.model_type})"


# ---------------------------------------------------------------------------------------------
# RL (ViSurf / GRPO)
# ---------------------------------------------------------------------------------------------
def validate_rl(config: DictConfig, user_keys: set[str] | None = None) -> tuple[DictConfig, list[str]]:
    """Prepare ``config`` as ``run_visurf`` does and run every check that needs no GPU.

    Returns the prepared config and notes (things not checked here). Raises DryRunError.
    """
    from recipe.visurf.main_visurf import prepare_config

    notes: list[str] = []
    try:
        prepare_config(config, user_keys or set())
    except ValueError as e:
        raise DryRunError(str(e)) from None
    unused = () if config.reward.reward_model.enable else ("reward.reward_model",)
    _resolve_all(config, unused)

    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.import_utils import load_class_from_fqn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # need_critic warns that GRPO-style estimators need no critic
        use_critic = need_critic(config)
    try:
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=use_critic)
    except AssertionError as e:  # verl's checks: assert ..., "message"
        raise DryRunError(f"verl validate_config: {e}") from None
    except Exception as e:  # noqa: BLE001 - dataclass conversion of a bad value raises assorted types
        raise DryRunError(f"verl validate_config: {type(e).__name__}: {e}") from None

    algo, actor = config.algorithm, config.actor_rollout_ref.actor
    try:
        get_adv_estimator_fn(algo.adv_estimator)
    except ValueError as e:
        raise DryRunError(f"algorithm.adv_estimator={algo.adv_estimator!r}: {e}") from None
    try:
        get_policy_loss_fn(actor.policy_loss.loss_mode)
    except ValueError as e:
        raise DryRunError(f"actor.policy_loss.loss_mode={actor.policy_loss.loss_mode!r}: {e}") from None
    try:
        resolve_reward_manager_cls(config)
        get_custom_reward_fn(config)
    except Exception as e:  # noqa: BLE001 - any import failure of user-given modules is a config error
        raise DryRunError(f"reward manager / reward function cannot be loaded: {type(e).__name__}: {e}") from None
    agent = config.actor_rollout_ref.rollout.agent
    if agent.get("agent_loop_manager_class"):
        try:
            load_class_from_fqn(agent.agent_loop_manager_class, "AgentLoopManager")
        except Exception as e:  # noqa: BLE001
            raise DryRunError(f"rollout.agent.agent_loop_manager_class: {type(e).__name__}: {e}") from None
    if agent.get("agent_loop_config_path") and not os.path.isfile(agent.agent_loop_config_path):
        raise DryRunError(f"rollout.agent.agent_loop_config_path not found: {agent.agent_loop_config_path}")

    _check_data(config.data.train_files, "data.train_files", notes)
    _check_data(config.data.val_files, "data.val_files", notes)
    return config, notes


def rl_summary(config: DictConfig, model_desc: str) -> list[tuple[str, str]]:
    v, algo = config.visurf, config.algorithm
    arr = config.actor_rollout_ref
    actor, rollout, optim = arr.actor, arr.rollout, arr.actor.optim
    n, prompts = int(rollout.n), int(config.data.train_batch_size)
    G = int(v.num_rollouts)
    n_gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    kl = (
        "off"
        if not (algo.use_kl_in_reward or actor.use_kl_loss)
        else f"on (in reward: {algo.use_kl_in_reward}, loss: {actor.use_kl_loss} coef {actor.kl_loss_coef})"
    )
    if v.enable:
        mode = "ViSurf (GT injected into every group)"
        n_desc = f"{n} (G + 1 GT copy)"
        switches = (
            f"inject_when={v.inject_when} align={v.align} gt_thinking_reward={v.gt_thinking_reward} "
            f"smoothing={v.smoothing} gt_loss={v.gt_loss}"
            + (f" luffy_gamma={v.luffy_gamma}" if v.gt_loss == "luffy_shaping" else "")
        )
    else:
        mode = "GRPO (visurf.enable=False, no GT)"
        n_desc = f"{n}"
        switches = "off"
    rm = config.reward.reward_manager
    return [
        ("mode", mode),
        ("G (sampled rollouts)", str(G)),
        ("rollout.n used", n_desc),
        ("prompts / step", str(prompts)),
        ("batch rows / step", f"{prompts * n} = {prompts} x {n}"),
        ("ppo mini batch", f"{actor.ppo_mini_batch_size} prompts = {int(actor.ppo_mini_batch_size) * n} rows"),
        ("GPUs", f"{n_gpus} ({config.trainer.nnodes} node(s) x {config.trainer.n_gpus_per_node})"),
        ("advantage estimator", str(algo.adv_estimator)),
        ("policy loss", f"{actor.policy_loss.loss_mode} (agg {actor.loss_agg_mode})"),
        ("reward manager", f"{rm.name} ({rm.source}: {rm.module.path if rm.source == 'importlib' else 'registry'})"),
        ("visurf", switches),
        ("coordinates", f"{v.coords} (visurf.coords; verl_ext/coords.py)"),
        ("rollout", f"{rollout.name}, temperature {rollout.temperature}, tp {rollout.tensor_model_parallel_size}"),
        ("lengths", f"prompt {config.data.max_prompt_length} / response {config.data.max_response_length}"),
        ("optim", f"lr {optim.lr}, weight_decay {optim.weight_decay}, clip_grad {optim.clip_grad}"),
        ("KL", kl),
        ("model", model_desc),
        ("train_files", ", ".join(_files(config.data.train_files))),
        ("checkpoints", str(config.trainer.default_local_dir)),
    ]


def dry_run_rl(overrides: list[str]) -> tuple[list[tuple[str, str]], DictConfig]:
    """Summary rows (notes last) and the prepared config."""
    config = compose_rl(overrides)
    config, notes = validate_rl(config, _user_keys(overrides))
    model_desc = _check_model_config(config.actor_rollout_ref.model.path, notes)
    return rl_summary(config, model_desc) + [("note", n) for n in notes], config


# ---------------------------------------------------------------------------------------------
# SFT (verl.trainer.sft_trainer)
# ---------------------------------------------------------------------------------------------
def validate_sft(config: DictConfig) -> tuple[list[tuple[str, str]], list[str]]:
    """Build what ``SFTTrainer._build_config`` builds (model only when local) and check batch sizes."""
    from verl.utils.config import omega_conf_to_dataclass

    notes: list[str] = []
    _resolve_all(config)
    built = {}
    for key in ("engine", "optim", "checkpoint", "profiler"):
        try:
            built[key] = omega_conf_to_dataclass(config[key])
        except Exception as e:  # noqa: BLE001 - dataclass __post_init__ checks raise assorted types
            raise DryRunError(f"SFT {key} config: {type(e).__name__}: {e}") from None
    interval = list(config.trainer.profile_interval)
    if len(interval) != 2 or interval[1] < interval[0] or (interval[0] < 0 <= interval[1]):
        raise DryRunError(f"trainer.profile_interval must be [start, end] with end >= start, got {interval}")
    data = config.data
    n_gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    sp = int(config.engine.get("ulysses_sequence_parallel_size", 1) or 1)
    if n_gpus % sp:
        raise DryRunError(f"{n_gpus} GPUs not divisible by engine.ulysses_sequence_parallel_size={sp}")
    dp = n_gpus // sp
    if int(data.train_batch_size) % dp:
        raise DryRunError(
            f"data.train_batch_size ({data.train_batch_size}) must be divisible by the "
            f"data-parallel size ({dp} = {n_gpus} GPUs / sp {sp})"
        )
    if data.use_dynamic_bsz and int(data.max_token_len_per_gpu) < int(data.max_length):
        raise DryRunError(
            f"data.max_token_len_per_gpu ({data.max_token_len_per_gpu}) must be >= data.max_length "
            f"({data.max_length}) with data.use_dynamic_bsz: one sequence must fit a micro batch"
        )
    if data.pad_mode not in ("right", "no_padding"):
        raise DryRunError(f"data.pad_mode must be right or no_padding, got {data.pad_mode!r}")
    if data.truncation not in ("error", "left", "right"):
        raise DryRunError(f"data.truncation must be error, left or right, got {data.truncation!r}")
    _check_data(data.train_files, "data.train_files", notes)
    _check_data(data.val_files, "data.val_files", notes)

    model_desc = f"{config.model.path} (not read)"
    sample = "not checked (needs a local model directory and train file)"
    if _local_model(config.model.path) is None:
        notes.append(f"model {config.model.path}: not a local directory, its files are not read in a dry run")
    else:
        try:
            model = omega_conf_to_dataclass(config.model)
        except Exception as e:  # noqa: BLE001
            raise DryRunError(f"SFT model config ({config.model.path}): {type(e).__name__}: {e}") from None
        model_desc = f"{config.model.path} ({model.hf_config.model_type}, processor: {type(model.processor).__name__})"
        train = _files(data.train_files)
        if train and all(os.path.isfile(os.path.expanduser(f)) for f in train):
            sample = _sample_sft_row(config, model)
    opt = built["optim"]
    return [
        ("mode", "SFT (verl.trainer.sft_trainer, MultiTurnSFTDataset)"),
        ("GPUs", f"{n_gpus} ({config.trainer.nnodes} node(s) x {config.trainer.n_gpus_per_node}), sp {sp}"),
        (
            "batch",
            (
                f"{data.train_batch_size} sequences / step, micro {data.micro_batch_size_per_gpu} per GPU, "
                f"dynamic bsz {data.use_dynamic_bsz} ({data.max_token_len_per_gpu} tokens/GPU)"
            ),
        ),
        ("max length", f"{data.max_length} (truncation {data.truncation}, pad_mode {data.pad_mode})"),
        ("optim", f"lr {opt.lr}, weight_decay {opt.weight_decay}, clip_grad {opt.clip_grad}"),
        ("engine", f"{config.engine.strategy}"),
        ("epochs", f"{config.trainer.total_epochs} (total_training_steps {config.trainer.total_training_steps})"),
        ("checkpoint", f"{config.trainer.default_local_dir} saves {list(config.checkpoint.save_contents)}"),
        ("model", model_desc),
        ("train_files", ", ".join(_files(data.train_files))),
        ("row 0", sample),
    ], notes


def _sample_sft_row(config: DictConfig, model) -> str:
    """Row 0 of the train file through verl's own SFT dataset class (tokens, loss tokens)."""
    from verl.trainer.sft_trainer import create_sft_dataset

    try:
        ds = create_sft_dataset(config.data.train_files, config.data, model.tokenizer, model.processor, max_samples=1)
        item = ds[0]
    except Exception as e:  # noqa: BLE001 - dataset errors (bad rows, lengths) are what we are here to catch
        raise DryRunError(f"SFT dataset row 0 of {config.data.train_files}: {type(e).__name__}: {e}") from None
    n_tok = int(item["input_ids"].shape[-1])
    n_loss = int(item["loss_mask"].sum())
    images = item.get("multi_modal_inputs", {}).get("image_grid_thw")
    return f"{n_tok} tokens, {n_loss} trained (assistant), images {0 if images is None else len(images)}"


def dry_run_sft(overrides: list[str]) -> tuple[list[tuple[str, str]], DictConfig]:
    """Summary rows (notes last) and the composed config."""
    config = compose_sft(overrides)
    rows, notes = validate_sft(config)
    return rows + [("note", n) for n in notes], config


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.visurf.dry_run",
        description="Compose and validate a ViSurf/GRPO (or verl SFT) launch config without starting it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sft", action="store_true", help="verl's SFT trainer config instead of the recipe's")
    parser.add_argument("--print-config", action="store_true", help="also print the full resolved config (YAML)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the real entry point")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    what = "SFT" if args.sft else "RL"
    try:
        rows, config = dry_run_sft(args.overrides) if args.sft else dry_run_rl(args.overrides)
    except DryRunError as e:
        print(f"dry run ({what}): INVALID config: {e}", file=sys.stderr)
        return 1
    if args.print_config:
        print(OmegaConf.to_yaml(config, resolve=True))
    started = "no torchrun" if args.sft else "no ray"
    _print_table(f"dry run ({what}): config valid - nothing started ({started}, no training)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
