"""HF-transformers rollout for verl 0.9.1 on CPU, registered as ``rollout.name=hf``.

verl 0.9.1 generates through agent loops that call a rollout *server* token-in/token-out
(``generate(prompt_ids, sampling_params, request_id, image_data=...) -> TokenOutput``) and
syncs trainer weights into the server after each step. vllm/sglang need a GPU; this module
provides the same two halves with plain ``transformers``:

* ``HFRolloutServer`` — a ray actor holding a Qwen2.5-VL (any ``AutoModelForImageTextToText``)
  and its processor. ``generate`` runs HF ``generate`` on the complete model inputs of
  ``verl_ext.model_inputs.build_model_inputs`` (``pixel_values``, ``image_grid_thw`` and
  ``mm_token_type_ids``, from which the model builds the same 3-D rope positions as verl's
  actor and a plain ``model.generate(**processor(...))``), returns the sampled
  ids and their log-probs under the *sampling* distribution (temperature applied, like
  vllm), and never samples vision special tokens (a random tiny model otherwise emits
  ``<|image_pad|>`` and the next actor forward fails on an image-token count mismatch; the
  sampler's distribution thus differs from the actor's by the blocked tokens' mass, ~1e-5 for
  a trained model). Requests that arrive while a batch is generating are generated together
  (one left-padded batch per set of equal sampling params and prompt-width bucket): ~2x less
  generation time per CPU step for the demo's G=2 x 4 prompts.

  Deterministic: every request samples with its own generator, seeded from the rollout seed
  (``actor_rollout_ref.rollout.seed``), the trainer step of the weights it samples from and its
  request id (``det-<row>`` under ``rollout.full_determinism``, which the CPU config turns on:
  verl's ``single_turn_agent_loop.py`` line 69) — vllm's per-request ``seed`` in the same
  protocol (``vllm_async_server.py`` line 627). A row's numbers do not depend on which other
  requests share its batch: each row is left-padded to a width fixed by its own length
  (``prompt_width``) and small batches are filled to ``MIN_ROWS`` rows (CPU matmuls take other
  code paths for 1-3 rows; checked in ``tests/test_determinism.py``). So the batching, which
  depends on arrival timing, never changes a sample: the same command gives the same rollouts.
* ``HFCPUReplica`` (``RolloutReplicaRegistry["hf"]``) — launches/looks up the server actor.
* ``HFServerAdapter`` (``_ROLLOUT_REGISTRY[("hf", "async")]``) — lives in the actor worker and
  forwards updated weights to the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import ray
import torch
from transformers import LogitsProcessor
from verl.workers.rollout.base import _ROLLOUT_REGISTRY, BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from verl_ext.model_inputs import build_model_inputs

logger = logging.getLogger(__name__)
ROLLOUT_NAME = "hf"
WIDTH_MULTIPLE = 16  # prompt-width bucket: a row is left-padded to its length rounded up to this (any
# padding costs a masked attention, ~+25% decode time here; more padding ~linearly more; wider buckets split less)
MIN_ROWS = 4  # a batch of fewer requests is filled with copies to this many rows (row-invariant numbers)
GATHER_S = 0.1  # a batch starts once no request of its kind arrived for this long. The agent loop sends a
# step's requests over 0.1-0.4 s with gaps up to ~90 ms (bench_step --phases, 2 busy cores); starting on the
# first one generated it alone (~0.6 s, 11% of a step), the other 31 after it; 20 ms still split 4 of 5 steps


def server_actor_name(replica_rank: int) -> str:
    """Name of the ray actor serving replica ``replica_rank`` (namespaced per ray job)."""
    return f"visurf_hf_rollout_{replica_rank}_{ray.get_runtime_context().get_job_id()}"


def vision_token_ids(config) -> list[int]:
    """Ids a rollout must never sample: image/video placeholders and the vision start/end markers."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "vision_token_id")
    return sorted({t for t in (getattr(config, n, None) for n in names) if t is not None})


def request_seed(run_seed: int, step: Optional[int], request_id: str, prompt_len: int) -> int:
    """Seed of one request's sampler: the first 8 bytes of ``blake2b("run_seed/step/request_id/prompt_len")``.

    ``step``: the trainer step of the weights being sampled; ``request_id``: verl's ``det-<row>``
    under ``rollout.full_determinism`` (a fresh uuid otherwise, i.e. unseeded); ``prompt_len``
    tells the turns of one multi-turn request apart (verl reuses its id for every turn).
    """
    key = f"{int(run_seed)}/{step}/{request_id}/{int(prompt_len)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1  # < 2**63


def prompt_width(n_tokens: int, multiple: int = WIDTH_MULTIPLE) -> int:
    """Left-padded width of a prompt of ``n_tokens``: ``ceil(n_tokens / multiple) * multiple``."""
    return -(-int(n_tokens) // multiple) * multiple


def inverse_cdf_sample(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling, one uniform per row: ``token_b = min{v : C_bv > u_b * C_bV}``, where
    ``C_bv = sum_{w <= v} p_bw`` and ``p = exp(log_probs)`` (``[B, V]``, rows need not be
    normalised), ``u`` in ``[0, 1)`` (``[B]``). Never returns a token of probability 0
    (``C`` does not rise there); ``u * C_bV`` is kept below ``C_bV`` so the search always lands."""
    cdf = log_probs.double().exp().cumsum(-1)
    total = cdf[:, -1]
    target = torch.minimum(u.double() * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1)


class _SeededSampler(LogitsProcessor):
    """The last logits processor of a generate call: picks each row's next token itself (inverse-CDF
    on the processed logits with that row's own uniforms, or argmax when ``uniforms`` is None, i.e.
    greedy), records its log-prob under the processed distribution, and hands HF a score row whose
    argmax is that token (``generate`` runs with ``do_sample=False``).

    ``uniforms``: ``[B, T]``, row ``b`` drawn from request ``b``'s own generator, column ``t`` for
    the ``t``-th new token. ``log_probs``: ``T`` tensors ``[B]`` (float32), one per step.
    """

    def __init__(self, uniforms: Optional[torch.Tensor], prompt_width: int):
        self.uniforms = uniforms
        self.prompt_width = prompt_width
        self.log_probs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(scores.float(), -1)
        if self.uniforms is None:
            tokens = log_probs.argmax(-1)
        else:
            tokens = inverse_cdf_sample(log_probs, self.uniforms[:, input_ids.shape[1] - self.prompt_width])
        self.log_probs.append(log_probs.gather(-1, tokens[:, None]).squeeze(-1))
        return torch.full_like(scores, -float("inf")).scatter_(-1, tokens[:, None], 0.0)


@dataclass
class _Request:
    """One pending ``generate`` call: what it asks for and where its result goes."""

    prompt_ids: list[int]
    images: list[Any]
    key: tuple  # (generation kwargs, prompt width), hashable: only requests with equal keys share a batch
    seed: int  # of this request's own sampler (``request_seed``)
    future: asyncio.Future


def _kwargs_key(kwargs: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


class HFRolloutServer:
    """Token-in/token-out generation server (ray actor) for one rollout replica."""

    def __init__(self, model_path: str, response_length: int, seed: int = 42, max_batch: int = 64):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = self.processor.tokenizer
        self.response_length = response_length
        self.blocked_ids = vision_token_ids(self.model.config)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.global_steps = None
        self.n_updates = 0
        self._lock = asyncio.Lock()  # one generate at a time: the CPU is the bottleneck anyway
        self._pending: list[_Request] = []  # requests waiting for the lock (batched when it frees)
        self.max_batch = max_batch
        self.seed = int(seed)
        self._key_map: dict[str, str] = {}

    # ----------------------------------------------------------------------------- weights
    def _resolve(self, name: str, own: dict[str, torch.Tensor], shape) -> Optional[str]:
        """Map a trainer parameter name onto this model's state-dict key (cached)."""
        if name in self._key_map:
            return self._key_map[name]
        candidates = (
            name,
            name.replace("model.language_model.", "model.", 1),
            name.replace("model.", "model.language_model.", 1),
            "model." + name,
            name.replace("model.visual.", "visual.", 1),
            name.replace("visual.", "model.visual.", 1),
        )
        for key in candidates:
            if key in own and tuple(own[key].shape) == tuple(shape):
                self._key_map[name] = key
                return key
        return None

    def update_weights(self, state: dict[str, torch.Tensor], global_steps=None) -> dict:
        own = self.model.state_dict()
        matched, unmatched = {}, []
        for name, tensor in state.items():
            key = self._resolve(name, own, tensor.shape)
            if key is None:
                unmatched.append(name)
            else:
                matched[key] = tensor
        if unmatched:
            raise RuntimeError(f"hf rollout: {len(unmatched)} trainer tensors match no server weight, "
                               f"e.g. {unmatched[:3]}")
        self.model.load_state_dict(matched, strict=False)
        self.global_steps = global_steps
        self.n_updates += 1
        return {"matched": len(matched), "server_tensors": len(own)}

    # ----------------------------------------------------------------------------- generate
    def _generation_kwargs(self, sampling_params: dict[str, Any]) -> dict[str, Any]:
        """verl's sampling params as a hashable description of the generate call: max new tokens,
        temperature (0: greedy), top-k (0: off), top-p, repetition penalty."""
        max_tokens = sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens")
        temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
        top_k = int(sampling_params.get("top_k", -1) or -1) if temperature > 0 else 0
        return dict(
            max_new_tokens=int(max_tokens or self.response_length),
            temperature=temperature,
            top_k=top_k if top_k > 0 else 0,
            top_p=float(sampling_params.get("top_p", 1.0) or 1.0) if temperature > 0 else 1.0,
            repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0) or 1.0),
        )

    def _logits_processors(self, kwargs: dict[str, Any], sampler: _SeededSampler):
        """HF's sampling processors in HF's own order (``GenerationMixin._get_logits_processor``:
        temperature, top-k, top-p after the defaults such as ``suppress_tokens``), then the sampler."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        warpers = []
        if kwargs["temperature"] > 0:
            if kwargs["temperature"] != 1.0:
                warpers.append(TemperatureLogitsWarper(kwargs["temperature"]))
            if kwargs["top_k"] > 0:
                warpers.append(TopKLogitsWarper(top_k=kwargs["top_k"]))
            if kwargs["top_p"] < 1.0:
                warpers.append(TopPLogitsWarper(top_p=kwargs["top_p"]))
        return LogitsProcessorList([*warpers, sampler])

    @torch.no_grad()
    def _generate_batch(self, requests: list[_Request], kwargs: dict[str, Any]) -> list[tuple[list[int], list[float]]]:
        """One HF ``generate`` over the requests (complete model inputs, every row left-padded to the
        batch's ``prompt_width``, filled to ``MIN_ROWS`` rows with copies of the first request):
        per request the new ids up to and including the first EOS and their log-probs."""
        rows = requests + [requests[0]] * max(0, MIN_ROWS - len(requests))
        width = requests[0].key[1]
        inputs = build_model_inputs(self.processor, [r.prompt_ids for r in rows],
                                    [image for r in rows for image in r.images], width=width)
        max_new = kwargs["max_new_tokens"]
        uniforms = None
        if kwargs["temperature"] > 0:  # each row from its own generator: no dependence on the batch
            uniforms = torch.stack([torch.rand(max_new, dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(r.seed)) for r in rows])
        sampler = _SeededSampler(uniforms, width)
        out = self.model.generate(
            **inputs, max_new_tokens=max_new, do_sample=False, repetition_penalty=kwargs["repetition_penalty"],
            logits_processor=self._logits_processors(kwargs, sampler), suppress_tokens=self.blocked_ids,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_token_id,
        )
        new_ids = out[:len(requests), width:]
        log_probs = torch.stack(sampler.log_probs, dim=-1)[:len(requests)]
        is_eos = new_ids == self.eos_token_id
        # keep the EOS, drop HF's padding after it: length = first EOS index + 1, else all
        lengths = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, new_ids.shape[1]).tolist()
        return [(ids[:n].tolist(), lp[:n].tolist()) for ids, lp, n in zip(new_ids, log_probs, lengths)]

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data: Optional[list[Any]] = None, video_data=None, **kwargs) -> TokenOutput:
        """verl's token-in/token-out call. Requests that arrive while a batch is generating wait
        and are then generated together (one batch per set of equal sampling params and prompt
        width), in arrival order; each row is exactly what a lone call samples (its own prompt,
        images, 3-D positions and generator; padding is masked)."""
        if video_data:
            raise NotImplementedError("the CPU hf rollout handles images only, not video")
        gen_kwargs = self._generation_kwargs(sampling_params)
        request = _Request(list(prompt_ids), list(image_data or []),
                           (_kwargs_key(gen_kwargs), prompt_width(len(prompt_ids))),
                           request_seed(self.seed, self.global_steps, request_id, len(prompt_ids)),
                           asyncio.get_running_loop().create_future())
        self._pending.append(request)
        async with self._lock:  # FIFO: the oldest waiter generates for everyone pending like it
            if not request.future.done():
                await self._gather(request.key)
                batch = [r for r in self._pending if r.key == request.key][:self.max_batch]
                self._pending = [r for r in self._pending if all(r is not b for b in batch)]
                try:
                    results = await asyncio.to_thread(self._generate_batch, batch, gen_kwargs)
                except BaseException as e:  # every waiter of this batch sees the error (none waits forever)
                    error = e if isinstance(e, Exception) else RuntimeError(f"hf rollout batch interrupted: {e!r}")
                    for r in batch:
                        if r is not request and not r.future.done():
                            r.future.set_exception(error)
                    raise
                else:
                    for r, result in zip(batch, results):
                        r.future.set_result(result)
        token_ids, log_probs = await request.future
        stop = "completed" if token_ids and token_ids[-1] == self.eos_token_id else "length"
        return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason=stop,
                           extra_fields={"global_steps": self.global_steps})

    async def _gather(self, key: tuple) -> None:
        """Wait while requests with ``key`` keep arriving: return once ``GATHER_S`` passed without a
        new one, or a full batch waits. Only the speed depends on it: rows are batch-invariant."""
        seen = -1
        while (n := sum(r.key == key for r in self._pending)) != seen and n < self.max_batch:
            seen = n
            await asyncio.sleep(GATHER_S)

    # ----------------------------------------------------------------------------- control plane
    # vllm frees/restores GPU memory around training; on CPU there is nothing to free.
    async def wake_up(self): ...
    async def sleep(self): ...
    async def clear_kv_cache(self): ...
    async def release_kv_cache(self): ...
    async def resume_kv_cache(self): ...
    async def abort_all_requests(self, reject_request: bool = False): ...
    async def resume_generation(self): ...
    async def start_profile(self, **kwargs): ...
    async def stop_profile(self): ...

    def ping(self) -> int:
        return self.n_updates


class HFCPUReplica(RolloutReplica):
    """One rollout replica = one ``HFRolloutServer`` actor (CPU only, no GPU bundle)."""

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self):
        name = server_actor_name(self.replica_rank)
        try:
            handle = ray.get_actor(name)
        except ValueError:
            model_path = getattr(self.model_config, "local_path", None) or self.model_config.path
            handle = ray.remote(HFRolloutServer).options(
                name=name, num_cpus=0, max_concurrency=self.max_concurrency
            ).remote(model_path, self.config.response_length, seed=self.config.seed)
        await handle.ping.remote()
        self.servers = [handle]
        self._server_handle = handle
        self._server_address = f"hf-cpu-{self.replica_rank}"


class HFServerAdapter(BaseRollout):
    """Actor-worker side: receives the trainer's weights and pushes them to the server actor."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh, *args, **kwargs)
        world = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                 * self.config.pipeline_model_parallel_size)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.replica_rank = rank // world
        self.is_leader = rank % world == 0

    async def resume(self, tags: list[str]):
        pass

    async def release(self):
        pass

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout supports wire_format='named_tensors' only, got {wire_format!r}")
        state = {}
        for name, tensor in weights:  # every rank must drain the generator (collective full_tensor)
            if hasattr(tensor, "full_tensor"):
                tensor = tensor.full_tensor()
            state[name] = tensor.detach().to("cpu", dtype=torch.float32).clone()
        if self.is_leader:
            server = ray.get_actor(server_actor_name(self.replica_rank))
            info = await server.update_weights.remote(state, kwargs.get("global_steps"))
            logger.info("hf rollout weight sync: %s", info)


def register() -> None:
    """Make ``rollout.name=hf`` resolvable by verl (idempotent)."""
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFCPUReplica)
