"""The tiny offline Qwen2.5-VL builder and the CPU pieces of verl_ext.cpu (without ray)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import torch
from PIL import Image


def _digest(path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_builder_loads_generates_with_an_image_and_is_deterministic(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from verl_ext.tiny import build_tiny

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find the red circle"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # the real Qwen2.5-VL prompt format
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>find the red circle<|im_end|>\n"
                    "<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[Image.new("RGB", (840, 840), "white")], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 64  # 840 px -> 64 visual tokens
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 5)
    again = build_tiny(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model_dir)  # same spec -> bit-identical weights
    assert (again / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def test_tiny_size_options(tmp_path):
    from transformers import AutoConfig

    from verl_ext.tiny import TinySpec, build_tiny

    cfg = AutoConfig.from_pretrained(build_tiny(tmp_path, TinySpec(hidden=128, layers=3)))
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers) == (128, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_tiny(tmp_path / "bad", TinySpec(hidden=36, heads=4, kv_heads=2))


def test_tiny_marker_is_written_last_and_a_torn_one_means_rebuild(tmp_path, monkeypatch):
    import verl_ext.tiny as T

    out = T.build_tiny(tmp_path / "m")
    marker = out / "tiny_spec.json"
    digest = _digest(out)
    marker.write_text('{"hidden": 6')  # torn (an old in-place write cut short): not a finished build
    assert T.build_tiny(out) == out and _digest(out) == digest and T._marked_spec(marker) is not None
    # a rebuild that fails half-way leaves no marker: the folder is not taken for a finished build
    monkeypatch.setattr(T, "build_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        T.build_tiny(out, force=True)
    assert not marker.exists() and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_cpu_platform_registers_and_provides_the_device_calls_verl_makes():
    from verl.plugin.platform.platform_manager import PlatformRegistry

    from verl_ext.cpu import platform

    platform.register()
    platform.register()  # idempotent
    cpu = PlatformRegistry.get("cpu")()
    assert cpu.device_name == "cpu" and cpu.communication_backend_name() == "gloo"
    assert cpu.ray_resource_name() == "GPU"  # verl's resource pools ask for GPUs
    assert not cpu.is_platform_available()  # never auto-detected, only via VERL_PLATFORM=cpu
    dev = cpu.device_module
    assert dev.memory_allocated() == 0 and dev.mem_get_info() == (0, 0)
    state = dev.get_rng_state()
    a = torch.rand(3)
    dev.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))
    assert dev.is_available is torch.cpu.is_available  # everything else forwards to torch.cpu


def test_cpu_switch_is_explicit(monkeypatch):
    import verl_ext.cpu as cpu

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert not cpu.is_enabled()
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    assert cpu.is_enabled()


def test_fixed_3d_position_ids_relabel_only_the_dim2_layout():
    from tensordict import TensorDict
    from verl.utils.tensordict_utils import nested_tensor_from_tensor_list

    from verl_ext.cpu.shims import _fixed_maybe_fix_3d_position_ids

    ragged2 = nested_tensor_from_tensor_list([torch.zeros(4, n, dtype=torch.long) for n in (5, 7)], ragged_idx=2)
    ragged2._ragged_idx = 1  # what unpickling leaves behind
    data = TensorDict({"position_ids": ragged2}, batch_size=2)
    _fixed_maybe_fix_3d_position_ids(data)
    assert [t.shape for t in data["position_ids"].unbind()] == [(4, 5), (4, 7)]
    equal = torch.nested.nested_tensor_from_jagged(torch.zeros(8, 6, dtype=torch.long),
                                                   offsets=torch.tensor([0, 4, 8]))  # rows [4, 6], dim-1 layout
    data = TensorDict({"position_ids": equal}, batch_size=2)
    _fixed_maybe_fix_3d_position_ids(data)
    assert [t.shape for t in data["position_ids"].unbind()] == [(4, 6), (4, 6)]


def test_hf_server_generates_with_images_never_samples_vision_tokens_and_syncs_weights(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from verl_ext.cpu.hf_rollout import HFRolloutServer, vision_token_ids
    from verl_ext.model_inputs import build_model_inputs

    server = HFRolloutServer(str(tiny_model_dir), response_length=24)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "where?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", (112, 112), "red")
    prompt_ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    blocked = set(vision_token_ids(server.model.config))
    torch.manual_seed(0)
    out = asyncio.run(server.generate(prompt_ids, {"temperature": 1.0, "max_tokens": 24}, "r0", image_data=[image]))
    assert 0 < len(out.token_ids) <= 24 and len(out.log_probs) == len(out.token_ids)
    assert not blocked & set(out.token_ids)
    assert all(lp <= 0 for lp in out.log_probs)
    # greedy log-probs of the server equal a teacher-forced forward of the same model (3-D rope, image)
    greedy = asyncio.run(server.generate(prompt_ids, {"temperature": 0, "max_tokens": 6}, "r1", image_data=[image]))
    full = build_model_inputs(processor, prompt_ids + greedy.token_ids, [image])  # incl. mm_token_type_ids
    with torch.no_grad():
        logits = server.model(**full).logits[0, len(prompt_ids) - 1:-1]
    logits[:, sorted(blocked)] = -float("inf")
    forced = torch.log_softmax(logits, -1).gather(-1, torch.tensor(greedy.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(greedy.log_probs), forced, atol=1e-4, rtol=1e-4)
    # weight sync: the trainer's state dict (same architecture) replaces the server's weights
    trainer_model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.add_(0.01)
    info = server.update_weights({k: v.clone() for k, v in trainer_model.state_dict().items()}, global_steps=3)
    assert info["matched"] == len(trainer_model.state_dict()) and server.global_steps == 3
    for k, v in trainer_model.state_dict().items():
        torch.testing.assert_close(server.model.state_dict()[k], v)
    with pytest.raises(RuntimeError, match="match no server weight"):
        server.update_weights({"not.a.weight": torch.zeros(3)})
