"""Build a tiny random Qwen2.5-VL or Qwen3-VL (model + tokenizer + processor) offline, deterministically.

    python -m verl_ext.tiny --out DIR [--family qwen2_5_vl|qwen3_vl|qwen3_5] [--hidden 64] [--layers 2]
                            [--vocab 1000] [--seed 0]

The result loads with ``AutoModelForImageTextToText.from_pretrained(DIR)`` and
``AutoProcessor.from_pretrained(DIR)``. The tokenizer is a ByteLevel BPE trained on local
text (the project's own prompt templates plus answer strings and Python's standard-library
sources) with Qwen2.5-VL's special tokens and chat template, so ``apply_chat_template``
produces the real Qwen2.5-VL prompt format. The image processor uses small min/max pixels
so an 840x840 image becomes at most 64 visual tokens. Used by tests, the CPU demo and the
evaluation tests; nothing is downloaded (works with ``HF_HUB_OFFLINE=1``).

``--family qwen3_vl`` builds the same-sized Qwen3-VL instead (``Qwen3VLForConditionalGeneration``:
16 px patches merged 2x2, interleaved 3-D rope, one DeepStack layer; Qwen3-VL's chat template, which
has no default system message, and its ``Qwen3VLProcessor``), with the same tokenizer vocabulary;
``--family qwen3_5`` a Qwen3.5 (``Qwen3_5ForConditionalGeneration``: the same vision tower without
DeepStack, decoder layers alternating Gated DeltaNet linear attention and full attention; Qwen3.5 uses
Qwen3-VL's processor). Both ground in coordinates relative to the image, 0-1000.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from verl_ext.atomic_io import write_text_atomically
from verl_ext.constants import FRAME, TASK_PROMPT

# Qwen2.5-VL's added special tokens, in the official order (ids follow the BPE vocabulary here).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2.5-VL-Instruct's chat template (chat_template.json of the released model).
# the loop over a message's content items (text, image, video), the same in both families' templates
_CONTENT_ITEMS = (
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
)

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}" + _CONTENT_ITEMS + "<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL-Instruct's chat template (chat_template.json of the released model), without the tool-call
# and video-timestamp branches the tiny model never sees: no default system message.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}" + _CONTENT_ITEMS +
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PATCH = 28  # Qwen2.5-VL: 14 px patches merged 2x2 -> one visual token per 28x28 px
MIN_PIXELS = PATCH * PATCH * 4
MAX_PIXELS = PATCH * PATCH * 64  # an 840x840 image -> 224x224 -> 64 visual tokens
QWEN3_PATCH = 32  # Qwen3-VL: 16 px patches merged 2x2 -> one visual token per 32x32 px
QWEN3_MIN_PIXELS = QWEN3_PATCH * QWEN3_PATCH * 4
QWEN3_MAX_PIXELS = QWEN3_PATCH * QWEN3_PATCH * 64  # an 840x840 image -> 256x256 -> 64 visual tokens
FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")
QWEN3_FAMILIES = ("qwen3_vl", "qwen3_5")  # Qwen3-VL's processor, chat template and 32 px visual tokens
DEFAULT_FAMILY = "qwen2_5_vl"


@dataclass(frozen=True)
class TinySpec:
    """Size of the tiny model. ``hidden`` must be divisible by ``heads`` (head_dim = hidden/heads)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 32
    vision_depth: int = 2
    vocab: int = 1000  # BPE merges target; the embedding is padded to a multiple of 64
    seed: int = 0
    family: str = DEFAULT_FAMILY  # one of FAMILIES

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown tiny model family {self.family!r}; known: {', '.join(FAMILIES)}")


def _corpus(seed: int) -> list[str]:
    """Local training text: the task prompts, answer strings in the rollout style, stdlib code."""
    rng = random.Random(seed)
    words = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "left", "right", "top",
             "bottom", "large", "small", "the", "object", "image", "answer", "think", "because"]
    lines = [t.format(question=" ".join(rng.choices(words, k=3))) for t in TASK_PROMPT.values()]
    for _ in range(2000):
        objs = []
        for _ in range(rng.randint(0, 3)):
            x1, y1 = rng.randrange(FRAME // 2), rng.randrange(FRAME // 2)
            x2, y2 = x1 + rng.randrange(1, FRAME // 2), y1 + rng.randrange(1, FRAME // 2)
            objs.append({"bbox_2d": [x1, y1, x2, y2], "point_2d": [(x1 + x2) // 2, (y1 + y2) // 2]})
        think = " ".join(rng.choices(words, k=rng.randint(3, 12)))
        lines.append(f"<think>{think}</think><answer>{json.dumps(objs)}</answer>")
        lines.append(f"<think>{think}</think><answer>{rng.randint(0, 999)}</answer>")
    stdlib = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:40]
    for path in stdlib:
        with open(path, encoding="utf-8", errors="ignore") as f:
            lines.append(f.read())
    return lines


def _chat_template(spec: TinySpec) -> str:
    return QWEN3_VL_CHAT_TEMPLATE if spec.family in QWEN3_FAMILIES else CHAT_TEMPLATE


def build_tokenizer(spec: TinySpec):
    """ByteLevel BPE with Qwen2.5-VL's special tokens and chat template (a Qwen2TokenizerFast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec.seed), trainer)
    hf_tok = Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = _chat_template(spec)
    return hf_tok


def build_processor(tokenizer, spec: TinySpec = TinySpec()):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    if spec.family in QWEN3_FAMILIES:
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        size = {"shortest_edge": QWEN3_MIN_PIXELS, "longest_edge": QWEN3_MAX_PIXELS}
        mean_std = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # Qwen3-VL's preprocessor
        return Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=size,
                                                  **mean_std),
            video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=size,
                                                  **mean_std),
            tokenizer=tokenizer, chat_template=QWEN3_VL_CHAT_TEMPLATE,
        )
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, size=size)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, size=size)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def _build_qwen3(spec: TinySpec, tokenizer, ids: dict[str, int], vocab: int):
    """The tiny Qwen3-VL (``qwen3_vl``) or Qwen3.5 (``qwen3_5``): head_dim = hidden/heads, interleaved mrope
    sections (t, h, w) = (half - 2*(half//4), half//4, half//4) with half = head_dim/2 (16 -> 4, 2, 2: each
    section * 3 <= half, as ``apply_interleaved_mrope`` needs), a 16x16 learned vision position grid.
    Qwen3-VL: DeepStack after vision block 0. Qwen3.5: rotary on the whole head (``partial_rotary_factor``
    1, the released models rotate a quarter of it), decoder layers alternating Gated DeltaNet (linear
    attention: 2 key heads, 4 value heads of 16) and full attention (``full_attention_interval`` 2)."""
    import torch
    import transformers

    head_dim = spec.hidden // spec.heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    text = dict(
        vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=2 * spec.hidden, head_dim=head_dim,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        max_position_embeddings=4096, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope,
                         "mrope_interleaved": True},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
        num_heads=2, out_hidden_size=spec.hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
        in_channels=3, num_position_embeddings=256,
    )
    if spec.family == "qwen3_5":
        text["rope_parameters"]["partial_rotary_factor"] = 1.0
        text.update(layer_types=["linear_attention" if (i + 1) % 2 else "full_attention" for i in range(spec.layers)],
                    linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
                    linear_num_key_heads=2, linear_num_value_heads=4)
        config_cls, model_cls = transformers.Qwen3_5Config, transformers.Qwen3_5ForConditionalGeneration
    else:
        vision["deepstack_visual_indexes"] = [0]
        config_cls, model_cls = transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration
    config = config_cls(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        text["bos_token_id"], text["eos_token_id"], text["pad_token_id"])
    torch.manual_seed(spec.seed)
    return model_cls(config)


def build_model(spec: TinySpec, tokenizer):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if spec.hidden % spec.heads or spec.heads % spec.kv_heads:
        raise ValueError(f"hidden ({spec.hidden}) must divide by heads ({spec.heads}), heads by kv_heads")
    head_dim = spec.hidden // spec.heads
    if head_dim % 8:
        raise ValueError(f"head_dim = hidden/heads = {head_dim} must be a multiple of 8 (3-D rope sections)")
    half = head_dim // 2
    mrope = [half // 4, half // 4, half - 2 * (half // 4)]  # temporal, height, width (16 -> 2,2,4)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = -(-len(tokenizer) // 64) * 64
    if spec.family in QWEN3_FAMILIES:
        return _build_qwen3(spec, tokenizer, ids, vocab)
    text = dict(
        vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=2 * spec.hidden,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=False,
        rope_scaling={"type": "mrope", "mrope_section": mrope}, torch_dtype="float32",
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
        num_heads=2, out_hidden_size=spec.hidden, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        window_size=56, fullatt_block_indexes=[spec.vision_depth - 1], in_chans=3, tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
    )
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        text["bos_token_id"], text["eos_token_id"], text["pad_token_id"])
    torch.manual_seed(spec.seed)
    return Qwen2_5_VLForConditionalGeneration(config)


def _marker(spec: TinySpec) -> dict:
    """What ``tiny_spec.json`` records: the spec's fields, ``family`` only when it is not the default
    (a Qwen2.5-VL build keeps the marker it had before there were families, so caches stay valid)."""
    fields = asdict(spec)
    if fields["family"] == DEFAULT_FAMILY:
        del fields["family"]
    return fields


def build_tiny(out: str | os.PathLike, spec: TinySpec = TinySpec(), force: bool = False) -> Path:
    """Write model, tokenizer, processor and generation config to ``out``; returns the path.

    Skips the work when ``out`` already holds a build of the same spec (unless ``force``).
    """
    from transformers import GenerationConfig

    out = Path(out)
    marker = out / "tiny_spec.json"
    if not force and _marked_spec(marker) == _marker(spec):
        return out
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # until the new build is complete, the folder is not a finished build
    tokenizer = build_tokenizer(spec)
    processor = build_processor(tokenizer, spec)
    model = build_model(spec, tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        bos_token_id=model.config.bos_token_id, eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id, do_sample=True, temperature=1.0,
    ).save_pretrained(out)
    write_text_atomically(marker, json.dumps(_marker(spec)))
    return out


def _marked_spec(marker: Path) -> dict | None:
    """The spec a finished build recorded in ``marker``; None when there is none (or it is unreadable)."""
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m verl_ext.tiny --out /tmp/tiny-qwen25vl --hidden 64 --layers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory (created)")
    parser.add_argument("--family", choices=FAMILIES, default=DEFAULT_FAMILY,
                        help=f"model family (default {DEFAULT_FAMILY}, the paper's)")
    parser.add_argument("--hidden", type=int, default=TinySpec.hidden, help="text hidden size")
    parser.add_argument("--layers", type=int, default=TinySpec.layers, help="text decoder layers")
    parser.add_argument("--vocab", type=int, default=TinySpec.vocab, help="BPE vocabulary size")
    parser.add_argument("--seed", type=int, default=TinySpec.seed)
    parser.add_argument("--force", action="store_true", help="rebuild even if DIR holds the same spec")
    args = parser.parse_args(argv)
    spec = TinySpec(hidden=args.hidden, layers=args.layers, vocab=args.vocab, seed=args.seed, family=args.family)
    out = build_tiny(args.out, spec, force=args.force)
    from transformers import AutoModelForImageTextToText

    n = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(out).parameters())
    name = {"qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL", "qwen3_5": "Qwen3.5"}[spec.family]
    print(f"tiny {name} ({n:,} parameters, {spec}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
