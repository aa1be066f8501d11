"""GT style ``rollout_think``: the GT answer after the group's own reasoning.

GT response = the think block of one sampled rollout of the same group, in that rollout's own token
ids, followed by the rendered GT text (+ EOS). The borrowed tokens are context (attention 1,
``response_mask`` 0), so the GT's SFT-like term is Â_gt ∇ log π(answer | x, the policy's own
reasoning) — the GT no longer teaches the policy to answer without thinking.

Which rollout: the highest-reward one whose response has a well-formed think block
(``think_block_end``), ties -> the first in batch order; the next one when the GT would not fit the
response length. No such rollout: the seam falls back to ``template`` for the group (counted).

Token boundary: the borrowed ids are the rollout's longest token prefix that lies wholly inside the
think block (``text_prefix_tokens``). When a token straddles the block's end (``</think><answer>``
tokenises ``>``+``<`` as one token in Qwen's BPE), the rest of the block (``>``) is put in front of
the GT text and tokenised with it: the row's text is exactly think block + GT text either way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from verl_ext.visurf.gt_styles import GTRequest, GTResponse, decode, text_prefix_tokens

# a think block at the start of the response: <think>, content, </think>, the whitespace after it
THINK_BLOCK = re.compile(r"\s*<think>(?P<content>.*?)</think>\s*", re.DOTALL)
FORBIDDEN_IN_THINK = ("<think>", "<answer>", "</answer>")


def think_block_end(text: str) -> int:
    """End (character index) of the response's well-formed think block, or -1.

    Well formed: the response starts (after whitespace) with ``<think>``, its first ``</think>``
    closes a block whose content is not blank and holds no ``<think>``, ``<answer>`` or
    ``</answer>``; the block includes the whitespace after ``</think>`` (as ``THINK_ANSWER_PATTERN``
    allows ``</think>\\s*<answer>``).
    """
    m = THINK_BLOCK.match(text)
    if m is None:
        return -1
    content = m.group("content")
    if not content.strip() or any(tag in content for tag in FORBIDDEN_IN_THINK):
        return -1
    return m.end()


def build(request: GTRequest) -> Iterator[GTResponse]:
    """Proposals from the group's rollouts with a well-formed think block, highest reward first (ties:
    batch order); nothing when no rollout has one."""
    tok = request.tokenizer
    order = sorted(range(len(request.rollout_ids)), key=lambda i: (-request.rollout_rewards[i], i))
    for i in order:
        ids = list(request.rollout_ids[i])
        text = decode(tok, ids)
        end = think_block_end(text)
        if end < 0:
            continue
        k = text_prefix_tokens(tok, ids, end, text)
        rest = text[len(decode(tok, ids[:k])): end]
        yield GTResponse(tuple(ids[:k]), rest + request.gt_text, len(rest) + request.label_start)
