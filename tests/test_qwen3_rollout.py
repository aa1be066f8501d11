"""The tiny Qwen3-VL and Qwen3.5 (``python -m verl_ext.tiny --family qwen3_vl|qwen3_5``) and the CPU
rollout on them.

The same checks as ``tests/test_rollout_fidelity.py`` makes for Qwen2.5-VL, on models trained for a few
seconds (their outputs then depend on the 3-D positions of the image tokens):

* the one input builder (``verl_ext.model_inputs``) returns what Qwen3-VL's processor returns (Qwen3.5
  uses the same processor);
* the 3-D positions of the model (``get_rope_index``, which verl binds to the processor for its agent
  loop) are hand-computed ones for a 7x7 token image, for both families;
* the ``hf`` server's greedy log-probs equal a full-input forward (all three families, Qwen2.5-VL as the
  reference: the numbers are printed, ``pytest -s``); Qwen2.5-VL's forward without ``mm_token_type_ids``
  (1-D positions) is far from it, Qwen3-VL's and Qwen3.5's refuse to run;
* verl's actor ``old_log_prob`` (verl's agent-loop post-processing and its model monkey patches, FSDP2,
  the recipe's CPU settings) on a server rollout equals that forward, in a child process
  (``tests/test_rollout_fidelity.py actor``), for the three families.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_rollout_fidelity import (IMAGE_SIDE, MAX_NEW, _forward_log_probs, _prompt_text,
                                   built_inputs_equal_the_processor_batch,
                                   rollout_under_forward_and_verl_actor, train_tiny)


FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")


@pytest.fixture(scope="module")
def tiny_dirs(tiny_model_dir, tiny_qwen3_vl_dir, tiny_qwen3_5_dir) -> dict[str, Path]:
    return {"qwen2_5_vl": tiny_model_dir, "qwen3_vl": tiny_qwen3_vl_dir, "qwen3_5": tiny_qwen3_5_dir}


@pytest.fixture(scope="module")
def trained(tiny_dirs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    return {family: train_tiny(tiny_dirs[family], root / family) for family in FAMILIES}


def _case(model_dir: Path):
    from transformers import AutoProcessor

    from data_prep.synthetic import grounding_sample
    from verl_ext.cpu.hf_rollout import HFRolloutServer

    image, question, _ = grounding_sample(random.Random(99), IMAGE_SIDE)
    processor = AutoProcessor.from_pretrained(model_dir)
    prompt_ids = processor(text=[_prompt_text(processor, question)], images=[image])["input_ids"][0]
    return HFRolloutServer(str(model_dir), response_length=MAX_NEW), processor, [int(t) for t in prompt_ids], image


# ----------------------------------------------------------------------------- the tiny model
@pytest.mark.parametrize("family, cls", [("qwen3_vl", "Qwen3VLForConditionalGeneration"),
                                         ("qwen3_5", "Qwen3_5ForConditionalGeneration")])
def test_tiny_qwen3_models_with_qwen3_vl_chat_template(tiny_dirs, family, cls):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    model_dir = tiny_dirs[family]
    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == family
    assert type(AutoModelForImageTextToText.from_pretrained(model_dir)).__name__ == cls
    if family == "qwen3_5":  # alternating Gated DeltaNet and full attention, as the released models (1 in 4)
        assert config.text_config.layer_types == ["linear_attention", "full_attention"]
    processor = AutoProcessor.from_pretrained(model_dir)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    text = _prompt_text(processor, "the red circle")
    # Qwen3-VL has no default system message (Qwen2.5-VL's template adds "You are a helpful assistant.")
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert "system" not in text and "Please find" in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    from verl_ext.coords import model_coords

    assert model_coords(model_dir) == "rel1000"


def test_build_model_inputs_equals_the_qwen3_vl_processor_output(tiny_qwen3_vl_dir):
    *_, built = built_inputs_equal_the_processor_batch(tiny_qwen3_vl_dir, second_image=(128, 160))
    # hand-computed: 224 px / 16 = 14x14 patches merged 2x2 -> 49 tokens; 128 w x 160 h -> 10x8 patches -> 20
    assert built["image_grid_thw"].tolist() == [[1, 14, 14], [1, 10, 8]]
    assert built["mm_token_type_ids"].sum(1).tolist() == [49, 20]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_positions_are_qwen3_vl_3d_rope_as_verl_binds_them(tiny_dirs, family):
    """verl's agent loop calls the model class's ``get_rope_index`` bound to the processor
    (``verl.utils.tokenizer``): hand-computed, text 0..k-1, the 7x7 grid at (k, k+row, k+col), the text
    after it at k + 7 onwards."""
    from verl.utils.tokenizer import hf_processor

    from verl_ext.model_inputs import build_model_inputs

    processor = hf_processor(str(tiny_dirs[family]))  # verl's processor, the model's get_rope_index bound to it
    get_rope_index = processor.get_rope_index
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "red")
    ids = processor(text=[_prompt_text(processor, "x")], images=[image])["input_ids"][0]
    inputs = build_model_inputs(processor, ids, [image])
    pos, _ = get_rope_index(input_ids=inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                            image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
    k = ids.index(processor.image_token_id)
    rows, cols = torch.arange(7).repeat_interleave(7), torch.arange(7).repeat(7)
    assert torch.equal(pos[:, 0, :k], torch.arange(k).expand(3, k))
    assert torch.equal(pos[:, 0, k:k + 49], torch.stack([torch.full((49,), k), k + rows, k + cols]))
    rest = len(ids) - k - 49
    assert torch.equal(pos[:, 0, k + 49:], (k + 7 + torch.arange(rest)).expand(3, rest))


# ----------------------------------------------------------------------------- the server
@pytest.mark.parametrize("family", FAMILIES)
def test_server_greedy_log_probs_equal_a_full_input_forward(trained, family):
    from verl_ext.cpu.hf_rollout import vision_token_ids
    from verl_ext.model_inputs import build_model_inputs

    server, processor, prompt_ids, image = _case(trained[family])
    out = asyncio.run(server.generate(prompt_ids, {"temperature": 0, "max_tokens": MAX_NEW}, "g", image_data=[image]))
    inputs = build_model_inputs(processor, prompt_ids + out.token_ids, [image])
    blocked = vision_token_ids(server.model.config)
    forced = _forward_log_probs(server.model, inputs, len(prompt_ids), blocked)
    diff = (torch.tensor(out.log_probs) - forced).abs().max().item()
    print(f"\n[fidelity] {family}: server greedy vs full-input forward max |diff| = {diff:.3g} over "
          f"{len(out.token_ids)} tokens")
    assert diff < 1e-4
    assert len(out.token_ids) >= 8
    inputs.pop("mm_token_type_ids")
    if family != "qwen2_5_vl":  # transformers' Qwen3-VL / Qwen3.5 refuse images without mm_token_type_ids
        with pytest.raises(ValueError, match="mm_token_type_ids"):
            _forward_log_probs(server.model, inputs, len(prompt_ids), blocked)
    else:  # Qwen2.5-VL falls back to 1-D positions: far off on the trained model
        text_only = torch.tensor(out.log_probs) - _forward_log_probs(server.model, inputs, len(prompt_ids), blocked)
        assert text_only.abs().max().item() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_verl_actor_old_log_probs_equal_a_full_input_forward(trained, tmp_path, family):
    server, processor, prompt_ids, image = _case(trained[family])
    forced, actor, metrics = rollout_under_forward_and_verl_actor(server, processor, prompt_ids, image,
                                                                  trained[family], tmp_path)
    assert actor.shape == forced.shape
    diff = (actor - forced).abs().max().item()
    print(f"\n[fidelity] {family}: verl actor old_log_prob vs full-input forward max |diff| = {diff:.3g}; "
          f"rollout_probs_diff_max = {metrics['training/rollout_probs_diff_max']:.3g}")
    assert diff < 1e-4
    assert metrics["training/rollout_probs_diff_max"] < 1e-4
