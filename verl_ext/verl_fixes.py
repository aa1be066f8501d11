"""A fix for verl 0.9.1 that text-only rows need (importing this module applies it; idempotent).

verl 0.9.1, ``verl/models/transformers/qwen2_vl.py::_get_input_embeds`` (the input embedding of
the Qwen2-VL / Qwen2.5-VL actor forward, with and without remove-padding): for a micro-batch
without images or videos it runs the vision tower on a dummy image so every parameter takes part
in the backward (FSDP), then does ``inputs_embeds + 0.0 * image_embeds.mean()``. Its image and
video branches unpack the tower's output with ``verl.utils.transformers_compat.unpack_visual_output``;
this branch does not, and with transformers >= 5 the tower returns a ``BaseModelOutputWithPooling``,
so every text-only micro-batch fails with ``AttributeError: ... has no attribute 'mean'`` — verl's
own GSM8K parquet cannot train a Qwen2.5-VL model, with or without ViSurf.

``fix_qwen2_vl_text_only`` replaces the function with one that does exactly verl's text-only
branch with the output unpacked (the same dummy image, the same ``0.0 *`` term, so the embeddings
are ``embed_tokens(input_ids)`` bit for bit) and hands every batch with images or videos to verl's
own function. It applies only to the function it was written for: verl's source still has the
unpatched line *and* the signature is exactly 0.9.1's (``FIXED_SIGNATURE``) — a verl that fixed the
line, or that changed the parameters (the replacement forwards them by position), is left alone.
``verl_ext.registry`` imports this module in every process.
"""

from __future__ import annotations

import inspect
import logging

logger = logging.getLogger(__name__)

__all__ = ["FIXED_SIGNATURE", "fix_qwen2_vl_text_only", "qwen2_vl_text_only_needs_fix"]

_BUGGY_LINE = "image_embeds = model.visual(pixel_values, grid_thw=image_grid_thw)\n"
# verl 0.9.1's verl/models/transformers/qwen2_vl.py::_get_input_embeds, parameter names and defaults
# (annotations aside), as str(inspect.Signature) writes them
FIXED_SIGNATURE = "(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None, " \
                  "image_grid_thw=None, video_grid_thw=None)"


def _signature(fn) -> str:
    """``fn``'s signature without annotations (names, kinds, defaults)."""
    sig = inspect.signature(fn)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def qwen2_vl_text_only_needs_fix(get_input_embeds) -> bool:
    """verl's text-only branch uses the vision tower's output without unpacking it, in the
    function this fix was written for (signature ``FIXED_SIGNATURE`` exactly)."""
    try:
        if _signature(get_input_embeds) != FIXED_SIGNATURE:
            return False
        return _BUGGY_LINE in inspect.getsource(get_input_embeds)
    except (OSError, TypeError, ValueError):
        return False


def fix_qwen2_vl_text_only() -> bool:
    """Install the fixed ``_get_input_embeds`` in ``verl.models.transformers.qwen2_vl``; True if
    installed now or before, False when verl does not need it."""
    from verl.models.transformers import qwen2_vl

    original = qwen2_vl._get_input_embeds
    if getattr(original, "_visurf_fixed", False):
        return True
    if not qwen2_vl_text_only_needs_fix(original):
        return False

    import torch
    from verl.utils.transformers_compat import unpack_visual_output

    def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None,
                          image_grid_thw=None, video_grid_thw=None):
        if pixel_values is not None or pixel_values_videos is not None:
            return original(model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw,
                            video_grid_thw)
        # verl 0.9.1's text-only branch, the tower's output unpacked as in its image branch
        inputs_embeds = model.get_input_embeddings()(input_ids)
        config = model.config.vision_config
        patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
        dummy = torch.zeros((16, patch_dim), dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        grid = torch.tensor([[1, 4, 4]], dtype=torch.long, device=inputs_embeds.device)
        image_embeds, _ = unpack_visual_output(model.visual(dummy, grid_thw=grid))
        inputs_embeds = inputs_embeds + 0.0 * image_embeds.mean()
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device)
        return inputs_embeds, attention_mask

    _get_input_embeds._visurf_fixed = True
    _get_input_embeds.__wrapped__ = original
    qwen2_vl._get_input_embeds = _get_input_embeds
    logger.info("verl_ext: fixed verl's Qwen2-VL text-only input embedding (unpacked vision output)")
    return True


fix_qwen2_vl_text_only()
