"""The CPU rollout samples from the policy verl trains (issue 10).

Qwen2.5-VL builds 3-D rope positions for image tokens from ``mm_token_type_ids``; a call
without it silently uses 1-D text positions. These tests use a tiny model trained for a few
seconds (``trained_dir``), whose outputs depend on the positions, and check three things
against a full-input transformers forward (``verl_ext.model_inputs.build_model_inputs``):

* the ``hf`` rollout server's greedy log-probs (max abs diff < 1e-4, fp32);
* the server's samples are inverse-CDF draws with the request's own seeded uniforms from that forward;
* verl's actor ``old_log_prob`` (verl's own agent-loop post-processing for positions and
  multi-modal inputs, ``ActorRolloutRefWorker`` on FSDP2 with the recipe's CPU settings,
  ``RayPPOTrainer._compute_old_log_prob``) on a server rollout, in a child process because
  verl monkey-patches the Qwen2.5-VL class.

Run as a script (``python tests/test_rollout_fidelity.py actor IN OUT``) this file is that
child: it reads a rollout saved by the test and writes verl's log-probs.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIDE = 224  # 224 px -> 16x16 patches -> 8x8 = 64 image tokens: text after the image moves by 56 positions
MAX_NEW = 40


def _messages(question: str) -> list[dict]:
    from verl_ext.constants import TASK_PROMPT

    text = TASK_PROMPT["grounding"].format(question=question)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _prompt_text(processor, question: str) -> str:
    return processor.apply_chat_template(_messages(question), add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model after 200 plain SFT steps (~5 s) on synthetic grounding answers (``train_tiny``)."""
    return train_tiny(tiny_model_dir, tmp_path_factory.mktemp("trained") / "model")


def train_tiny(model_dir: Path, out: Path) -> Path:
    """``model_dir`` after 200 plain SFT steps on 32 synthetic grounding answers
    ``<think>look.</think><answer>[...]</answer>``, saved to ``out``: its next-token distribution now
    depends on where the answer text sits, i.e. on the 3-D positions of the image tokens before it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from data_prep.synthetic import grounding_sample

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    rng = random.Random(0)
    samples = [grounding_sample(rng, IMAGE_SIDE) for _ in range(32)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and the cores are shared
    try:
        _sft(model, processor, samples, optimizer, steps=200)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "generation_config.json").write_bytes((model_dir / "generation_config.json").read_bytes())
    return out


def _sft(model, processor, samples, optimizer, steps: int) -> None:
    """Plain SFT: cross-entropy on the answer tokens only, one sample per step."""
    for step in range(steps):
        image, question, objects = samples[step % len(samples)]
        prompt = _prompt_text(processor, question)
        answer = f"<think>look.</think><answer>{json.dumps(objects)}</answer><|im_end|>"
        batch = processor(text=[prompt + answer], images=[image], return_tensors="pt")
        n_prompt = len(processor(text=[prompt], images=[image])["input_ids"][0])
        labels = batch["input_ids"].clone()
        labels[:, :n_prompt] = -100
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.fixture(scope="module")
def case(trained_dir):
    """(server, processor, prompt text, prompt ids, image) for one held-out grounding prompt."""
    from transformers import AutoProcessor

    from data_prep.synthetic import grounding_sample
    from verl_ext.cpu.hf_rollout import HFRolloutServer

    image, question, _ = grounding_sample(random.Random(99), IMAGE_SIDE)
    processor = AutoProcessor.from_pretrained(trained_dir)
    text = _prompt_text(processor, question)
    prompt_ids = processor(text=[text], images=[image])["input_ids"][0]
    server = HFRolloutServer(str(trained_dir), response_length=MAX_NEW)
    return server, processor, text, [int(t) for t in prompt_ids], image


def _forward_log_probs(model, inputs, n_prompt: int, blocked: list[int] = ()) -> torch.Tensor:
    """log p(token_t | tokens_<t) of the response tokens (teacher-forced), optionally with the
    ``blocked`` ids removed from the distribution (what the server samples from)."""
    ids = inputs["input_ids"][0, n_prompt:]
    with torch.no_grad():
        logits = model(**inputs).logits[0, n_prompt - 1:-1].float()
    logits[:, list(blocked)] = -float("inf")
    return torch.log_softmax(logits, -1).gather(-1, ids[:, None]).squeeze(-1)


# ----------------------------------------------------------------------------- the helper
def built_inputs_equal_the_processor_batch(model_dir: Path, second_image: tuple[int, int]) -> tuple:
    """``build_model_inputs`` of two prompts (an ``IMAGE_SIDE`` square and a ``second_image`` w x h image),
    built from their token ids one by one, equals the processor's own left-padded batch of the same texts and
    images, key for key; returns ``(processor, texts, images, ids, built)`` for the family's own checks."""
    from transformers import AutoProcessor

    from verl_ext.model_inputs import build_model_inputs, encode_prompts

    processor = AutoProcessor.from_pretrained(model_dir)
    images = [Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "red"), Image.new("RGB", second_image, "blue")]
    texts = [_prompt_text(processor, "the red circle"), _prompt_text(processor, "all the blue squares")]
    full = encode_prompts(processor, texts, images)  # left-padded batch, straight from the processor
    ids = [processor(text=[t], images=[i])["input_ids"][0] for t, i in zip(texts, images)]
    built = build_model_inputs(processor, ids, images)
    assert set(built) == set(full) == {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values",
                                       "image_grid_thw"}
    for key in full:
        assert torch.equal(built[key], full[key]), key
    return processor, texts, images, ids, built


def test_build_model_inputs_equals_the_processor_output(tiny_model_dir):
    from verl_ext.model_inputs import build_model_inputs

    processor, texts, images, ids, built = built_inputs_equal_the_processor_batch(tiny_model_dir, (112, 140))
    # hand-computed: 224 px -> 16x16 patches merged 2x2 -> 64 image tokens (type 1); 112 w x 140 h px -> 10x8 -> 20
    assert built["mm_token_type_ids"].sum(1).tolist() == [64, 20]
    assert built["image_grid_thw"].tolist() == [[1, 16, 16], [1, 10, 8]]
    image_id = processor.image_token_id
    assert torch.equal(built["mm_token_type_ids"] == 1, built["input_ids"] == image_id)
    pad = abs(len(ids[0]) - len(ids[1]))  # the shorter row is left-padded
    assert built["attention_mask"].sum().item() == len(ids[0]) + len(ids[1])
    assert built["attention_mask"][int(len(ids[0]) > len(ids[1])), :pad].sum().item() == 0
    single = build_model_inputs(processor, ids[0], images[:1])  # one sequence -> batch of one
    expected = processor(text=[texts[0]], images=images[:1], return_tensors="pt")
    assert all(torch.equal(single[k], expected[k]) for k in expected)


def test_inputs_without_mm_token_type_ids_or_with_wrong_placeholders_are_refused(tiny_model_dir):
    from transformers import AutoProcessor

    from verl_ext.model_inputs import build_model_inputs, require_complete

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "red")
    ids = processor(text=[_prompt_text(processor, "x")], images=[image])["input_ids"][0]
    inputs = dict(build_model_inputs(processor, ids, [image]))
    inputs.pop("mm_token_type_ids")
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        require_complete(processor, inputs)
    short = [t for i, t in enumerate(ids) if not (t == processor.image_token_id and i % 7 == 0)]
    with pytest.raises(ValueError, match=r"image placeholder tokens in input_ids but the images need 64"):
        build_model_inputs(processor, short, [image])


def test_positions_from_the_helper_are_qwen25vl_3d_rope(tiny_model_dir):
    """Hand-computed 3-D positions: text 0..k-1, the 8x8 image grid at (k, k+row, k+col), the
    text after it continuing at k + max(8, 8) (Qwen2.5-VL ``get_rope_index``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from verl_ext.model_inputs import build_model_inputs

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "red")
    ids = processor(text=[_prompt_text(processor, "x")], images=[image])["input_ids"][0]
    inputs = build_model_inputs(processor, ids, [image])
    pos, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
                                        attention_mask=inputs["attention_mask"])
    k = ids.index(processor.image_token_id)
    rows, cols = torch.arange(8).repeat_interleave(8), torch.arange(8).repeat(8)
    assert torch.equal(pos[:, 0, :k], torch.arange(k).expand(3, k))
    assert torch.equal(pos[:, 0, k:k + 64], torch.stack([torch.full((64,), k), k + rows, k + cols]))
    rest = len(ids) - k - 64
    assert torch.equal(pos[:, 0, k + 64:], (k + 8 + torch.arange(rest)).expand(3, rest))


# ----------------------------------------------------------------------------- the server
def test_server_greedy_log_probs_equal_a_full_input_forward(case):
    from verl_ext.cpu.hf_rollout import vision_token_ids
    from verl_ext.model_inputs import build_model_inputs

    server, processor, _, prompt_ids, image = case
    out = asyncio.run(server.generate(prompt_ids, {"temperature": 0, "max_tokens": MAX_NEW}, "g", image_data=[image]))
    inputs = build_model_inputs(processor, prompt_ids + out.token_ids, [image])
    blocked = vision_token_ids(server.model.config)
    forced = _forward_log_probs(server.model, inputs, len(prompt_ids), blocked)
    assert (torch.tensor(out.log_probs) - forced).abs().max().item() < 1e-4
    assert len(out.token_ids) >= 8  # past <think>look.</think>: the answer tokens are compared too
    # the trained model depends on the positions: 1-D positions (no mm_token_type_ids) are far off
    inputs.pop("mm_token_type_ids")
    text_only = _forward_log_probs(server.model, inputs, len(prompt_ids), blocked)
    assert (torch.tensor(out.log_probs) - text_only).abs().max().item() > 1e-2


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_server_samples_are_inverse_cdf_draws_from_a_full_input_forward(case, temperature):
    """The server's sample is what inverse-CDF sampling with the request's own uniforms
    (``request_seed``: rollout seed, step, request id) gives on a teacher-forced full-input forward
    of the same model, blocked vision tokens removed, logits divided by the temperature."""
    from verl_ext.cpu.hf_rollout import inverse_cdf_sample, request_seed, vision_token_ids
    from verl_ext.model_inputs import build_model_inputs

    server, processor, _, prompt_ids, image = case
    out = asyncio.run(server.generate(prompt_ids, {"temperature": temperature, "max_tokens": MAX_NEW}, "det-3",
                                      image_data=[image]))
    inputs = build_model_inputs(processor, prompt_ids + out.token_ids, [image])
    with torch.no_grad():
        logits = server.model(**inputs).logits[0, len(prompt_ids) - 1:-1].double() / temperature
    logits[:, vision_token_ids(server.model.config)] = -float("inf")
    log_probs = torch.log_softmax(logits, -1)
    seed = request_seed(server.seed, server.global_steps, "det-3", len(prompt_ids))
    u = torch.rand(MAX_NEW, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))[:len(out.token_ids)]
    assert inverse_cdf_sample(log_probs, u).tolist() == out.token_ids
    forced = log_probs.gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert (torch.tensor(out.log_probs, dtype=torch.float64) - forced).abs().max().item() < 1e-4
    assert len(set(out.token_ids)) > 3  # a real sample, not a constant


def test_concurrent_requests_are_batched_and_each_row_is_what_a_lone_call_gives(case, trained_dir):
    """Requests that wait for the server are generated as one left-padded batch per set of equal
    sampling params and prompt width; every row's log-probs still equal its own full-input forward."""
    from data_prep.synthetic import grounding_sample
    from verl_ext.cpu.hf_rollout import prompt_width, vision_token_ids
    from verl_ext.model_inputs import build_model_inputs

    server, processor, _, _, _ = case
    prompts = []
    # different images -> different prompt lengths (346, 307, 318 tokens): the last two share a width bucket (320)
    for seed, side in ((1, IMAGE_SIDE), (2, 140), (3, 168)):
        image, question, _ = grounding_sample(random.Random(seed), side)
        ids = processor(text=[_prompt_text(processor, question)], images=[image])["input_ids"][0]
        prompts.append(([int(t) for t in ids], image))
    assert len({len(ids) for ids, _ in prompts}) == 3
    greedy, sampled = {"temperature": 0, "max_tokens": MAX_NEW}, {"temperature": 1.0, "max_tokens": MAX_NEW}
    sizes = []
    real_batch = server._generate_batch

    def recording_batch(requests, kwargs):
        sizes.append(len(requests))
        return real_batch(requests, kwargs)

    async def run_all():
        calls = [(prompts[0], greedy), (prompts[0], sampled), (prompts[1], greedy), (prompts[2], greedy)]
        return await asyncio.gather(*(server.generate(ids, params, f"r{i}", image_data=[image])
                                      for i, ((ids, image), params) in enumerate(calls)))

    server._generate_batch = recording_batch
    try:
        outs = asyncio.run(run_all())
    finally:
        del server._generate_batch
    assert prompt_width(len(prompts[1][0])) == prompt_width(len(prompts[2][0]))
    assert sizes == [1, 1, 2]  # first caller alone; then the sampled one; then both waiting greedy ones together
    blocked = vision_token_ids(server.model.config)
    for (ids, image), out in zip([prompts[0], prompts[0], prompts[1], prompts[2]], outs):
        forced = _forward_log_probs(server.model, build_model_inputs(processor, ids + out.token_ids, [image]),
                                    len(ids), blocked)
        assert (torch.tensor(out.log_probs) - forced).abs().max().item() < 1e-4
    for (ids, image), out in zip(prompts[1:], outs[2:]):  # batched greedy rows == a lone greedy call
        alone = asyncio.run(server.generate(ids, greedy, "alone", image_data=[image]))
        assert alone.token_ids == out.token_ids


# ----------------------------------------------------------------------------- fp32 on CPU
def _mixed_precision(config, role: str):
    return config.actor_rollout_ref[role].fsdp_config.get("mixed_precision")


def test_cpu_runs_default_to_fp32_actor_and_ref_gpu_runs_keep_verls_bf16(monkeypatch):
    from recipe.visurf.dry_run import compose_rl
    from recipe.visurf.main_visurf import prepare_config
    from verl_ext.cpu.launcher import CPU_ENV

    for key in [*CPU_ENV, "PYTHONPATH"]:  # prepare_env sets them in this process: restore afterwards
        monkeypatch.setenv(key, os.environ.get(key, ""))
        monkeypatch.delenv(key)
    config = prepare_config(compose_rl([]))
    assert _mixed_precision(config, "actor") is None and _mixed_precision(config, "ref") is None  # verl: bf16
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    fp32 = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
    config = prepare_config(compose_rl([]))
    assert _mixed_precision(config, "actor") == fp32 and _mixed_precision(config, "ref") == fp32
    # a user's own setting wins, whether given as the whole node or as one leaf
    node = "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:bf16}"
    config = prepare_config(compose_rl([node]), user_keys={"actor_rollout_ref.actor.fsdp_config.mixed_precision"})
    assert _mixed_precision(config, "actor") == {"param_dtype": "bf16"} and _mixed_precision(config, "ref") == fp32
    leaf = "actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype"
    config = prepare_config(compose_rl([f"+{leaf}=bf16"]), user_keys={leaf})
    assert _mixed_precision(config, "ref") == {"param_dtype": "bf16", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}


# ----------------------------------------------------------------------------- verl's actor
def test_verl_actor_old_log_probs_equal_a_full_input_forward(case, trained_dir, tmp_path):
    """verl's actor (recipe CPU settings: FSDP2, sdpa, no remove-padding, fp32 mixed precision)
    on a server rollout gives the log-probs of a full-input HF forward (< 1e-4), and verl's own
    ``training/rollout_probs_diff_max`` on that rollout is < 1e-4."""
    from transformers import AutoModelForImageTextToText

    from verl_ext.model_inputs import build_model_inputs

    server, processor, _, prompt_ids, image = case
    torch.manual_seed(7)
    forced, actor, metrics = rollout_under_forward_and_verl_actor(server, processor, prompt_ids, image,
                                                                  trained_dir, tmp_path)
    assert actor.shape == forced.shape
    assert (actor - forced).abs().max().item() < 1e-4
    assert metrics["training/rollout_probs_diff_max"] < 1e-4


def rollout_under_forward_and_verl_actor(server, processor, prompt_ids: list[int], image, model_dir,
                                         tmp_path: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One server rollout (temperature 1, ``MAX_NEW`` tokens) of ``prompt_ids`` with ``image``, scored twice:
    ``(forced, actor, metrics)`` = its log-probs under a full-input HF forward of ``model_dir``, under verl's
    actor in a child process with the recipe's CPU config (``_verl_actor_log_probs``), and that actor's
    metrics (``training/rollout_probs_diff_max`` ...)."""
    from transformers import AutoModelForImageTextToText

    from verl_ext.cpu.launcher import CPU_ENV
    from verl_ext.model_inputs import build_model_inputs

    out = asyncio.run(server.generate(prompt_ids, {"temperature": 1.0, "max_tokens": MAX_NEW}, "a",
                                      image_data=[image]))
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    forced = _forward_log_probs(model, build_model_inputs(processor, prompt_ids + out.token_ids, [image]),
                                len(prompt_ids))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    torch.save({"prompt_ids": prompt_ids, "response_ids": out.token_ids, "rollout_log_probs": out.log_probs,
                "image_png": buf.getvalue()}, tmp_path / "rollout.pt")
    env = {**os.environ, **CPU_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "actor", str(model_dir),
                           str(tmp_path / "rollout.pt"), str(tmp_path / "actor.pt")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = torch.load(tmp_path / "actor.pt")
    return forced, result["old_log_probs"], result["metrics"]


def _verl_actor_log_probs(model_dir: str, rollout_path: str, out_path: str) -> None:
    """Child process: verl's log-probs of the rollout in ``rollout_path`` (recipe CPU config)."""
    from verl_ext.cpu.launcher import prepare_env

    prepare_env()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import types

    import verl_ext.cpu

    verl_ext.cpu.activate()
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput, AgentLoopWorker
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.utils.debug.metrics import calculate_debug_metrics
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from recipe.visurf.dry_run import compose_rl
    from recipe.visurf.main_visurf import prepare_config

    data = torch.load(rollout_path)
    n = len(data["response_ids"])
    config = prepare_config(compose_rl([
        f"actor_rollout_ref.model.path={model_dir}", "data.max_prompt_length=512", f"data.max_response_length={n}",
        "data.train_batch_size=1", "actor_rollout_ref.rollout.n=1", "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    ]))
    # verl's agent-loop post-processing: padding, multi-modal inputs, 3-D position ids
    loop_worker = AgentLoopWorker(config, None)
    output = AgentLoopOutput(prompt_ids=data["prompt_ids"], response_ids=data["response_ids"], response_mask=[1] * n,
                             response_logprobs=data["rollout_log_probs"], num_turns=2, metrics=AgentLoopMetrics(),
                             multi_modal_data={"images": [Image.open(io.BytesIO(data["image_png"])).convert("RGB")]})
    padded = asyncio.run(loop_worker._agent_loop_postprocess(output, validate=False, raw_prompt=[]))
    batch = loop_worker._postprocess([padded])
    # what RayPPOTrainer.fit sets before computing old_log_prob
    batch.meta_info["temperature"] = config.actor_rollout_ref.rollout.temperature
    batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
    batch.meta_info["images_seqlens"] = [int(x) for m in batch.non_tensor_batch["multi_modal_inputs"]
                                         for x in m["images_seqlens"]]
    worker = ActorRolloutRefWorker(config.actor_rollout_ref, role="actor")
    worker.init_model()
    trainer = types.SimpleNamespace(config=config, actor_rollout_wg=worker)
    old_log_prob, _ = RayPPOTrainer._compute_old_log_prob(trainer, batch)
    batch = batch.union(old_log_prob)
    torch.save({"old_log_probs": batch.batch["old_log_probs"][0, :n].clone(),
                "metrics": calculate_debug_metrics(batch)}, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "actor":
        sys.exit("usage: python tests/test_rollout_fidelity.py actor MODEL_DIR ROLLOUT.pt OUT.pt")
    _verl_actor_log_probs(*sys.argv[2:])
