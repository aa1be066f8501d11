"""Teacher-forced (prompt, response) batches for a Qwen2.5-VL: SFT loss and response log-likelihood.

A pair is encoded exactly as verl's agent loop builds a training sequence: the prompt rendered by
``RLHFDataset``'s own message builder and chat template (``recipe.visurf.eval_backends.prompt_inputs``)
and tokenised by the processor (image placeholders expanded), followed by the response tokens
``tokenizer(response) + [eos]``; complete model inputs (3-D rope ``mm_token_type_ids``) come from
``verl_ext.model_inputs.build_model_inputs`` (left-padded batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recipe.visurf.eval_backends import build_messages, prompt_inputs
from verl_ext.model_inputs import build_model_inputs


@dataclass
class Encoded:
    prompt_ids: list[int]
    images: list


def encode_prompt(row: dict, processor) -> Encoded:
    """Prompt token ids (image placeholders expanded) and images of one data_prep row."""
    text, images = prompt_inputs(build_messages(row, processor), processor)
    ids = processor(text=[text], images=images or None, return_tensors="pt")["input_ids"][0].tolist()
    return Encoded(ids, images)


def response_ids(response: str, tokenizer) -> list[int]:
    """``tokenizer(response) + [eos]``: the response as a rollout ends it."""
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def pair_batch(processor, prompts: list[Encoded], responses: list[list[int]]):
    """(model inputs, response mask [B, L]) of left-padded prompt+response sequences."""
    seqs = [p.prompt_ids + r for p, r in zip(prompts, responses)]
    images = [im for p in prompts for im in p.images]
    inputs = build_model_inputs(processor, seqs, images)
    width = inputs["input_ids"].shape[1]
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, r in enumerate(responses):
        mask[i, width - len(r):] = True
    return inputs, mask


def response_token_logprobs(model, inputs, mask: torch.Tensor) -> torch.Tensor:
    """``log p(token_t | tokens_<t)`` at every response position (0 elsewhere), ``[B, L]``.

    Position ``t`` of the logits predicts token ``t+1``: ``lp[:, t] = log_softmax(logits[:, t-1])[ids[:, t]]``.
    """
    logits = model(**inputs).logits.float()
    ids = inputs["input_ids"]
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    lp = torch.cat([torch.zeros_like(lp[:, :1]), lp], dim=1)
    return lp * mask


def sft_loss(model, inputs, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all response tokens of the batch (token-mean, as verl's SFT)."""
    lp = response_token_logprobs(model, inputs, mask)
    return -lp.sum() / mask.sum()


@torch.no_grad()
def response_loglik(model, processor, prompts: list[Encoded], responses: list[str], batch_size: int = 16) -> list[float]:
    """Sum of response-token log-probabilities (``response_ids``, EOS included) per pair."""
    tok = processor.tokenizer
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        p = prompts[start:start + batch_size]
        r = [response_ids(text, tok) for text in responses[start:start + batch_size]]
        inputs, mask = pair_batch(processor, p, r)
        out += response_token_logprobs(model, inputs, mask).sum(-1).tolist()
    return out
