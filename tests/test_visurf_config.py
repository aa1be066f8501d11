"""The typed ``visurf:`` block (verl BaseConfig + ``_target_``) and its one list of option values."""

import dataclasses

import pytest
from omegaconf import OmegaConf
from verl.base_config import BaseConfig
from verl.utils.config import omega_conf_to_dataclass

from recipe.visurf.dry_run import compose_rl
from verl_ext.constants import ANSWER_TEMPLATE
from verl_ext.visurf.config import GT_LOSSES, GT_THINKING_REWARDS, INJECT_WHEN, VisurfConfig, visurf_config


def test_yaml_block_is_typed_through_its_target():
    block = compose_rl([]).visurf
    assert block._target_ == "verl_ext.visurf.config.VisurfConfig"
    typed = omega_conf_to_dataclass(block)  # verl's own path: hydra.instantiate of _target_
    assert isinstance(typed, VisurfConfig) and isinstance(typed, BaseConfig)
    assert typed == VisurfConfig()  # the yaml defaults are the dataclass defaults, one set
    assert set(block.keys()) == {f.name for f in dataclasses.fields(VisurfConfig)}
    assert typed["smoothing"] is True and typed.get("missing", 3) == 3  # verl's dict-like access


def test_defaults_and_frozen_fields():
    v = VisurfConfig()
    assert (v.enable, v.inject_when, v.align, v.gt_template, v.gt_thinking_reward, v.smoothing, v.gt_loss,
            v.luffy_gamma, v.num_rollouts) == (True, "always", True, ANSWER_TEMPLATE, "zero", True, "ppo_clip", 0.1,
                                                None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.smoothing = False


def test_visurf_config_from_nodes():
    cfg = OmegaConf.create({"tpl": "<a>{answer}</a>", "visurf": {"gt_template": "${tpl}", "align": False}})
    assert visurf_config(cfg.visurf) == VisurfConfig(align=False, gt_template="<a>{answer}</a>")
    assert visurf_config({"smoothing": False}) == VisurfConfig(smoothing=False)
    assert visurf_config(None) == VisurfConfig()
    v = VisurfConfig(gt_loss="sft")
    assert visurf_config(v) is v


@pytest.mark.parametrize(
    ("block", "what"),
    [
        ({"inject_when": "sometimes"}, f"inject_when must be one of {INJECT_WHEN}"),
        ({"gt_thinking_reward": "half"}, f"gt_thinking_reward must be one of {GT_THINKING_REWARDS}"),
        ({"gt_loss": "dpo"}, f"gt_loss must be one of {GT_LOSSES}"),
        ({"smoothing": "maybe"}, "smoothing must be True or False"),
        ({"align": 1}, "align must be True or False"),
        ({"enable": None}, "enable must be True or False"),
        ({"gt_template": "<answer></answer>"}, "exactly once"),
        ({"gt_template": "{answer}{answer}"}, "exactly once"),
        ({"luffy_gamma": 0.0}, "luffy_gamma must be a number > 0"),
        ({"luffy_gamma": True}, "luffy_gamma must be a number > 0"),
        ({"num_rollouts": 0}, "num_rollouts"),
    ],
)
def test_every_value_is_validated(block, what):
    with pytest.raises(ValueError, match=what.replace("(", r"\(").replace(")", r"\)")):
        VisurfConfig(**block)
