"""verl_ext.verl_fixes: verl 0.9.1's Qwen2-VL input embedding for text-only micro-batches."""

from __future__ import annotations

import pytest
import torch

import verl_ext.registry  # noqa: F401  (the plug-in import every verl process does)
from verl.models.transformers import qwen2_vl
from verl_ext.verl_fixes import fix_qwen2_vl_text_only


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    # verl calls _get_input_embeds with the inner Qwen2_5_VLModel (qwen2_vl_base_forward's self)
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval().model


def test_the_fix_is_installed_by_the_registry_import():
    assert getattr(qwen2_vl._get_input_embeds, "_visurf_fixed", False)
    assert fix_qwen2_vl_text_only()  # idempotent


def test_verls_own_text_only_branch_fails_and_the_fixed_one_returns_the_token_embeddings(tiny_model):
    input_ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        with pytest.raises(AttributeError, match="mean"):  # verl 0.9.1 + transformers 5: the bug
            qwen2_vl._get_input_embeds.__wrapped__(tiny_model, input_ids, mask)
        embeds, out_mask = qwen2_vl._get_input_embeds(tiny_model, input_ids, mask)
    assert torch.equal(embeds, tiny_model.get_input_embeddings()(input_ids))  # + 0.0 * mean: exact
    assert torch.equal(out_mask, mask)


def test_batches_with_images_go_to_verls_function(tiny_model):
    config = tiny_model.config
    patch_dim = 3 * 2 * 14 * 14
    grid = torch.tensor([[1, 4, 4]])  # 16 patches -> 4 merged image tokens
    pixels = torch.randn(16, patch_dim)
    input_ids = torch.tensor([[5, config.vision_start_token_id] + [config.image_token_id] * 4 + [7]])
    with torch.no_grad():
        ours, _ = qwen2_vl._get_input_embeds(tiny_model, input_ids, None, pixels, None, grid)
        verls, _ = qwen2_vl._get_input_embeds.__wrapped__(tiny_model, input_ids, None, pixels, None, grid)
    assert torch.equal(ours, verls)
    assert not torch.equal(ours, tiny_model.get_input_embeddings()(input_ids))  # the image was scattered in


VARIANT = '''
def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None,
                      image_grid_thw=None, video_grid_thw=None{extra}):
    image_embeds = model.visual(pixel_values, grid_thw=image_grid_thw)
    return image_embeds
'''


@pytest.mark.parametrize(("extra", "needs"), [("", True), (", second_per_grid_ts=None", False)])
def test_the_fix_applies_only_to_the_signature_it_was_written_for(tmp_path, monkeypatch, extra, needs):
    """A verl that keeps the buggy line but adds a parameter is left alone (the replacement would drop
    the parameter: TypeError at the first text-only batch); the exact 0.9.1 signature is fixed."""
    import importlib

    from verl_ext.verl_fixes import FIXED_SIGNATURE, _signature, qwen2_vl_text_only_needs_fix

    name = f"verl_variant_{len(extra)}"
    (tmp_path / f"{name}.py").write_text(VARIANT.format(extra=extra))
    monkeypatch.syspath_prepend(str(tmp_path))
    variant = importlib.import_module(name)._get_input_embeds
    assert qwen2_vl_text_only_needs_fix(variant) is needs
    assert qwen2_vl_text_only_needs_fix(qwen2_vl._get_input_embeds.__wrapped__)  # verl 0.9.1's own
    assert _signature(qwen2_vl._get_input_embeds.__wrapped__) == FIXED_SIGNATURE
