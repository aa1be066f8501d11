"""Deterministic CPU runs (issue 17 item 1): the same command gives the same rollouts and metrics.

The CPU rollout server (``verl_ext.cpu.hf_rollout``) samples every request from its own generator,
seeded from ``rollout.seed``, the trainer step and verl's stable request id, and computes each row
independently of the other requests in its batch (fixed prompt width per length, at least
``MIN_ROWS`` rows) — so how requests happen to be batched, which depends on their arrival timing,
cannot change a sample. Checked here on the pure pieces, on the server, and end to end: two 2-step
ViSurf runs with the same seed give identical scores, response ids, metrics and validation rows; a
different seed gives different rollouts.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import torch
from conftest import assert_ok, run_recipe


# ----------------------------------------------------------------------------- pure functions
def test_inverse_cdf_sample_hand_computed():
    from verl_ext.cpu.hf_rollout import inverse_cdf_sample

    # p = [0.2, 0, 0.5, 0.3] -> C = [0.2, 0.2, 0.7, 1.0]: token = first v with C_v > u
    log_probs = torch.log(torch.tensor([[0.2, 0.0, 0.5, 0.3]] * 6))
    u = torch.tensor([0.0, 0.1, 0.3, 0.69, 0.71, 1 - 2**-53], dtype=torch.float64)
    assert inverse_cdf_sample(log_probs, u).tolist() == [0, 0, 2, 2, 3, 3]
    # unnormalised rows (scaled by 4): the same tokens; a zero-probability last token is never returned
    assert inverse_cdf_sample(log_probs + torch.log(torch.tensor(4.0)), u).tolist() == [0, 0, 2, 2, 3, 3]
    last_zero = torch.log(torch.tensor([[0.5, 0.5, 0.0]]))
    assert inverse_cdf_sample(last_zero, torch.tensor([1 - 2**-53], dtype=torch.float64)).tolist() == [1]


def test_inverse_cdf_sample_draws_from_the_distribution():
    from verl_ext.cpu.hf_rollout import inverse_cdf_sample

    p = torch.tensor([0.1, 0.0, 0.25, 0.05, 0.6])
    n = 40000
    u = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(inverse_cdf_sample(torch.log(p).expand(n, -1), u), minlength=5).double() / n
    assert counts[1] == 0
    assert (counts - p.double()).abs().max() < 0.01  # 4 standard errors of the largest share


def test_request_seed_and_prompt_width():
    from verl_ext.cpu.hf_rollout import prompt_width, request_seed

    s = request_seed(42, 3, "det-5", 300)
    assert s == request_seed(42, 3, "det-5", 300) and 0 <= s < 2**63
    others = {request_seed(43, 3, "det-5", 300), request_seed(42, 4, "det-5", 300),
              request_seed(42, 3, "det-6", 300), request_seed(42, 3, "det-5", 301), request_seed(42, None, "det-5", 300)}
    assert s not in others and len(others) == 5
    assert [prompt_width(n, multiple=64) for n in (1, 63, 64, 65, 300)] == [64, 64, 64, 128, 320]
    assert prompt_width(10, multiple=8) == 16


# ----------------------------------------------------------------------------- the server
def _prompts(processor, n: int) -> list[tuple[list[int], object]]:
    from data_prep.synthetic import grounding_sample
    from verl_ext.constants import TASK_PROMPT

    out = []
    for seed, side in zip(range(n), (112, 140, 112, 168, 112, 224)):
        image, question, _ = grounding_sample(random.Random(seed), side)
        text = TASK_PROMPT["grounding"].format(question=question)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out.append(([int(t) for t in processor(text=[chat], images=[image])["input_ids"][0]], image))
    return out


def test_server_rows_do_not_depend_on_the_batching(tiny_model_dir):
    """A request's sample and log-probs are bit-identical whether it is generated alone or batched
    with others (any order, other prompt lengths); another rollout seed or step samples differently."""
    from transformers import AutoProcessor

    from verl_ext.cpu.hf_rollout import MIN_ROWS, HFRolloutServer, prompt_width

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    prompts = _prompts(processor, 6)
    assert len({len(ids) for ids, _ in prompts}) >= 4
    assert len({prompt_width(len(ids)) for ids, _ in prompts}) >= 2  # several width buckets in one wave
    server = HFRolloutServer(str(tiny_model_dir), response_length=24, seed=7)
    requests, rows = [], []
    real_generate, real_batch = server.model.generate, server._generate_batch

    def recording_generate(**kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return real_generate(**kwargs)

    def recording_batch(batch, kwargs):
        requests.append(len(batch))
        return real_batch(batch, kwargs)

    server.model.generate, server._generate_batch = recording_generate, recording_batch
    loop = asyncio.new_event_loop()
    sampled = {"temperature": 1.0, "max_tokens": 24}

    async def concurrently(order, params):
        return await asyncio.gather(*(server.generate(prompts[i][0], params, f"det-{i}", image_data=[prompts[i][1]])
                                      for i in order))

    def run(order, params=sampled):
        return dict(zip(order, loop.run_until_complete(concurrently(order, params))))

    try:
        together = run([0, 1, 2, 3, 4, 5])
        reversed_ = run([5, 4, 3, 2, 1, 0])
        alone = {i: run([i])[i] for i in (0, 3)}
        assert max(requests) > 1 and min(rows) == MIN_ROWS  # requests were batched; small batches filled
        for i in range(6):
            assert together[i].token_ids == reversed_[i].token_ids
            assert together[i].log_probs == reversed_[i].log_probs  # bit-identical, not close
        for i, out in alone.items():
            assert (out.token_ids, out.log_probs) == (together[i].token_ids, together[i].log_probs)
        assert len({tuple(o.token_ids) for o in together.values()}) == 6
        # the same prompt under another request id (another row of the group) samples differently
        other_row = loop.run_until_complete(server.generate(prompts[0][0], sampled, "det-99", image_data=[prompts[0][1]]))
        assert other_row.token_ids != together[0].token_ids
        server.global_steps = 1  # the next step's weights: new draws
        assert run([0])[0].token_ids != together[0].token_ids
        server.global_steps, server.seed = None, 8  # another run seed: new draws
        assert run([0])[0].token_ids != together[0].token_ids
        server.seed = 7
        greedy = {"temperature": 0, "max_tokens": 24}
        greedy_together, greedy_alone = run([0, 1, 2, 3], greedy), run([2], greedy)
        assert greedy_together[2].token_ids == greedy_alone[2].token_ids
        assert greedy_together[2].log_probs == greedy_alone[2].log_probs
    finally:
        del server.model.generate, server._generate_batch
        loop.close()


# ----------------------------------------------------------------------------- end to end
VARYING = ("timing_s/", "timing_per_token_ms/", "perf/")  # wall-clock and memory readings (any key containing them)


@pytest.mark.e2e
def test_same_seed_same_run_other_seed_other_rollouts(tmp_path, tiny_model_dir, grounding_data):
    """Two 2-step ViSurf runs with rollout.seed=1: identical critic/score/mean, response ids, every
    metric but timings/memory, and greedy validation rows; rollout.seed=2: other response ids."""
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        runs[name] = run_recipe(tmp_path / name, tiny_model_dir, grounding_data, f"actor_rollout_ref.rollout.seed={seed}",
                                "trainer.test_freq=2")
        assert_ok(runs[name])
    a, b, c = runs["a"], runs["b"], runs["c"]

    def ids(run, step):
        return [row["response_ids"] for row in run.rollouts[step]]

    def fixed(run, step):
        return {k: v for k, v in run.step(step).items() if not any(part in k for part in VARYING)}

    for step in (1, 2):
        assert a.step(step)["critic/score/mean"] == b.step(step)["critic/score/mean"]
        assert ids(a, step) == ids(b, step)
        differing = {k: (v, fixed(b, step).get(k)) for k, v in fixed(a, step).items() if fixed(b, step).get(k) != v}
        assert not differing and fixed(a, step).keys() == fixed(b, step).keys()
    assert a.validation and a.validation == b.validation
    assert ids(a, 1) != ids(c, 1) and ids(a, 2) != ids(c, 2)
