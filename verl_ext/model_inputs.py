"""The complete inputs of a model call (``generate`` / ``forward``), built in one place.

A Qwen2.5-VL forward needs more than ``input_ids`` and the image tensors: with transformers 5.x
the processor also returns ``mm_token_type_ids`` (0 text, 1 image, 2 video per token), from
which the model builds the 3-D rope positions of the vision tokens
(``Qwen2_5_VLModel.get_rope_index``). A call without it silently falls back to 1-D text
positions for every token — a different distribution from the one verl's actor trains (verl's
agent loop builds the 3-D positions with the same ``get_rope_index``). Every call site that
runs the policy model outside verl — the CPU rollout server, the ``hf`` evaluation backend,
the tests — takes its inputs from here, so they cannot drift apart again:

* ``build_model_inputs(processor, token_ids, images)`` — from token ids that already hold the
  expanded image placeholders (what verl's agent loop sends a rollout server);
* ``encode_prompts(processor, texts, images)`` — from chat-template text (evaluation).

Both return exactly what ``processor(text=..., images=..., return_tensors="pt")`` returns for
the same prompt (``tests/test_rollout_fidelity.py`` checks key by key).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

MM_TOKEN_TYPE_IDS = "mm_token_type_ids"


def needs_mm_token_type_ids(processor) -> bool:
    """Whether the model behind ``processor`` takes ``mm_token_type_ids`` (the processor lists it
    in ``model_input_names`` and can build it: transformers >= 5 multimodal processors)."""
    return (MM_TOKEN_TYPE_IDS in (getattr(processor, "model_input_names", None) or ())
            and hasattr(processor, "create_mm_token_type_ids"))


def _image_token_id(processor) -> Optional[int]:
    return getattr(processor, "image_token_id", None)


def _expected_image_tokens(processor, image_grid_thw: torch.Tensor) -> int:
    """Placeholder tokens the images need: ``sum_i t_i * h_i * w_i / merge_size**2``."""
    merge = int(getattr(processor.image_processor, "merge_size", 1))
    return int(image_grid_thw.prod(-1).sum()) // (merge * merge)


def _left_pad(token_ids: Sequence[Sequence[int]], pad_id: int,
              width: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L]`` ids left-padded with ``pad_id`` and the matching 0/1 attention mask (decoder-only
    batching); ``L = width`` when given (at least the longest row), else the longest row."""
    longest = max(len(ids) for ids in token_ids)
    if width is not None and width < longest:
        raise ValueError(f"width {width} is shorter than the longest row ({longest} tokens)")
    width = longest if width is None else width
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        if len(ids):
            input_ids[row, width - len(ids):] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def require_complete(processor, inputs: dict[str, Any], where: str = "model inputs") -> None:
    """Raise if ``inputs`` lack a key the model needs for correct positions, or if the image
    placeholders do not match the images (the model would fail later, or worse, not fail)."""
    if "pixel_values" in inputs and needs_mm_token_type_ids(processor) and MM_TOKEN_TYPE_IDS not in inputs:
        raise ValueError(f"{where}: images without {MM_TOKEN_TYPE_IDS!r}; the model would use 1-D text "
                         "positions for the image tokens (build inputs with verl_ext.model_inputs)")
    grid = inputs.get("image_grid_thw")
    image_id = _image_token_id(processor)
    if grid is not None and image_id is not None:
        have = int((inputs["input_ids"] == image_id).sum())
        want = _expected_image_tokens(processor, grid)
        if have != want:
            raise ValueError(f"{where}: {have} image placeholder tokens in input_ids but the images need {want} "
                             f"(image_grid_thw={grid.tolist()})")


def build_model_inputs(processor, token_ids: Sequence[int] | Sequence[Sequence[int]],
                       images: Optional[Sequence[Any]] = None, pad_token_id: Optional[int] = None,
                       width: Optional[int] = None):
    """Complete model inputs for token ids that already contain the expanded image placeholders.

    ``token_ids``: one sequence or a batch (left-padded with ``pad_token_id``, default the
    tokenizer's pad id) to ``width`` tokens (default: the longest row); ``images``: all images of
    the batch in placeholder order.
    Returns a ``BatchFeature`` of ``[B, L]`` ``input_ids`` / ``attention_mask`` /
    ``mm_token_type_ids`` (``processor.create_mm_token_type_ids``: 0 text, 1 image, 2 video)
    and the image tensors of the processor's own image processor (``processor.image_processor(images)``:
    ``pixel_values`` ``[sum_i t_i h_i w_i, C*T*P*P]``, ``image_grid_thw`` ``[n_images, 3]``) — the same
    tensors ``processor(text=decoded, images=images, return_tensors="pt")`` would return (the processor
    computes them with that same call). The image processor is called directly because a processor
    call without text is version-dependent: transformers 5.9.0's Qwen2.5-VL processor rejects it
    (``TypeError`` iterating ``text=None``), 5.10 accepts it.
    """
    from transformers import BatchFeature

    single = len(token_ids) == 0 or not hasattr(token_ids[0], "__len__")
    batch = [list(token_ids)] if single else [list(t) for t in token_ids]
    if pad_token_id is None:
        tokenizer = getattr(processor, "tokenizer", processor)
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask = _left_pad(batch, int(pad_token_id), width)
    data: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if needs_mm_token_type_ids(processor):
        # the processor's own rule, applied to the padded ids (pads are text, type 0, as in processor(padding=True))
        data[MM_TOKEN_TYPE_IDS] = torch.tensor(processor.create_mm_token_type_ids(input_ids.tolist()),
                                               dtype=torch.long)
    if images:
        data.update(processor.image_processor(images=list(images), return_tensors="pt"))
    inputs = BatchFeature(data)
    require_complete(processor, inputs)
    return inputs


def encode_prompts(processor, texts: Sequence[str], images: Optional[Sequence[Any]] = None):
    """Complete model inputs for chat-template ``texts`` (left-padded batch): the processor's own
    output (``processor(text=texts, images=images, padding=True, return_tensors="pt")``), checked
    by ``require_complete``."""
    tokenizer = getattr(processor, "tokenizer", processor)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batching
    try:
        inputs = processor(text=list(texts), images=list(images) if images else None, padding=True,
                           return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    require_complete(processor, inputs)
    return inputs
