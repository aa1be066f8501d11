"""The grounding coordinate convention of the policy model: the one home of the setting.

Labels never change: ``reward_model.ground_truth`` is always in the canonical frame data_prep writes
(absolute pixels of the ``FRAME x FRAME`` = 840x840 image, ``verl_ext.constants``). What differs between
model families is the coordinates the *model* reads in its prompt and writes in its answer:

=============  ===========================================================  =====================
convention     coordinates in the model's text                              families
=============  ===========================================================  =====================
``abs840``     absolute pixels of the 840x840 image (the paper's; default)  Qwen2.5-VL
``rel1000``    relative to the image, 0..1000 on each axis                  Qwen3-VL, Qwen3.5, Qwen2-VL
=============  ===========================================================  =====================

Conversions (one coordinate ``v``, either axis; the data's images are square, ``FRAME`` px):

* model -> frame: ``v_frame = v * frame_scale(c)`` with ``frame_scale("abs840") = 1`` and
  ``frame_scale("rel1000") = FRAME / 1000 = 0.84``;
* frame -> model: ``v_model = v_frame / frame_scale(c)`` (the GT renderer rounds it half up).

Everything that reads or writes a model's coordinates goes through this module: the prompts
(``prompt_hint``, used by ``constants.build_prompt``), the GT renderer (``reward_control.align_gt``),
the grounding / gui / anomaly / lesion rewards (``parsing.parse_objects(..., scale=frame_scale(c))``:
answers are read into the frame before clipping, so IoU, corner-L1 (``BOX_L1_MATCH`` px), point distance
(``POINT_MATCH`` px), point-in-box and the non-object rule keep their pixel meaning for every family),
the start-up check (``verl_ext.visurf.source_check``), the evaluation CLI (``--coords``; its metrics are
computed in the image's pixel space whatever the convention) and ``data_prep.to_sft``.

The run's convention is ``visurf.coords`` (``auto``: from the actor's ``config.json`` ``model_type``,
``MODEL_TYPE_COORDS``; an unknown family falls back to ``abs840`` with a warning). Data declares the
convention its prompts were written for in ``extra_info["coords"]`` (``data_prep --coords``; a row
without the key is ``abs840``, what data_prep wrote before the setting existed); a declaration that
differs from the run's stops the run at start-up (a prompt is text the recipe cannot safely rewrite),
while labels are converted (they are canonical, and the conversion is exact up to the GT's rounding,
< 0.5 model unit = 0.42 px).

Standard library only (imported by the reward workers and data_prep).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

logger = logging.getLogger(__name__)

ABS840 = "abs840"
REL1000 = "rel1000"
COORDS = (ABS840, REL1000)  # the valid conventions
AUTO = "auto"  # visurf.coords: detect from the actor's model config
COORD_SETTINGS = (AUTO, *COORDS)
DEFAULT_COORDS = ABS840  # the paper's (Qwen2.5-VL); unchanged runs reproduce it exactly
REL_SCALE = 1000  # rel1000: 0..REL_SCALE across the image
EXTRA_INFO_KEY = "coords"  # extra_info key: the convention a row's prompt was written for / the run's

# model_type (config.json) -> convention. Qwen2.5-VL answers in absolute pixels of its resized input
# (the 840 frame, 840 = 30 x 28 px tokens, so no resize happens); Qwen2-VL, Qwen3-VL and Qwen3.5 in
# coordinates relative to the image on a 0-1000 scale.
MODEL_TYPE_COORDS = {
    "qwen2_5_vl": ABS840,
    "qwen2_vl": REL1000,
    "qwen3_vl": REL1000,
    "qwen3_vl_moe": REL1000,
    "qwen3_5": REL1000,
    "qwen3_5_moe": REL1000,
}

# what the prompt adds for a convention (abs840: nothing, so the paper's prompts stay byte-identical)
PROMPT_HINTS = {
    ABS840: "",
    REL1000: " Coordinates are relative to the image on a 0-1000 scale: (0, 0) is the top-left corner, "
             "(1000, 1000) the bottom-right.",
}


def check_coords(value: Any, what: str = "coordinate convention", allow_auto: bool = False) -> str:
    """``value`` if it is a valid convention (or ``auto`` when ``allow_auto``), else ValueError naming
    ``what`` and the valid values."""
    valid = COORD_SETTINGS if allow_auto else COORDS
    if value not in valid:
        raise ValueError(f"{what} must be one of {valid}, got {value!r}")
    return value


def frame_scale(coords: str) -> float:
    """Model coordinate -> frame pixel multiplier: 1 for ``abs840``, ``FRAME / REL_SCALE`` (0.84) for ``rel1000``."""
    from verl_ext.constants import FRAME

    return 1.0 if check_coords(coords) == ABS840 else FRAME / REL_SCALE


def to_frame(values: Any, coords: str) -> Any:
    """Model coordinates -> frame pixels: ``values * frame_scale(coords)`` (a number or a numpy array)."""
    return values * frame_scale(coords)


def from_frame(values: Any, coords: str) -> Any:
    """Frame pixels -> model coordinates: ``values / frame_scale(coords)`` (unrounded)."""
    return values / frame_scale(coords)


def prompt_hint(coords: str) -> str:
    """The sentence a prompt adds for ``coords`` ("" for ``abs840``)."""
    return PROMPT_HINTS[check_coords(coords)]


def coords_of_model_type(model_type: Optional[str]) -> Optional[str]:
    """The convention of a ``model_type`` (``MODEL_TYPE_COORDS``), None for a family the table lacks."""
    return MODEL_TYPE_COORDS.get(str(model_type)) if model_type else None


def model_type_of(model_path: Any) -> Optional[str]:
    """``model_type`` of a model directory's ``config.json`` (read as JSON, no model loaded); for a hub
    id, transformers' ``AutoConfig`` from the local cache. None when neither is readable."""
    if not model_path:
        return None
    path = os.path.expanduser(str(model_path))
    config = os.path.join(path, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                return json.load(f).get("model_type")
        except (OSError, ValueError) as e:
            logger.warning("coords: cannot read %s: %s", config, e)
            return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(model_path), local_files_only=True).model_type
    except Exception:  # noqa: BLE001  (not cached, no transformers, hdfs://...): undetectable here
        return None


def model_coords(model_path: Any) -> Optional[str]:
    """The convention of the model at ``model_path`` (``model_type_of`` + ``MODEL_TYPE_COORDS``), or None."""
    return coords_of_model_type(model_type_of(model_path))


def resolve_coords(setting: str, model_path: Any) -> tuple[str, str]:
    """``(convention, how it was chosen)`` for a ``visurf.coords`` setting and the actor's model path.

    ``auto``: the model's (``model_coords``), else ``DEFAULT_COORDS`` with a warning (a family outside
    ``MODEL_TYPE_COORDS``, or a config not readable in the driver). An explicit setting wins; when it
    differs from a detected family's convention a warning names both (a model fine-tuned to another
    convention is a legitimate override)."""
    check_coords(setting, "visurf.coords", allow_auto=True)
    model_type = model_type_of(model_path)
    detected = coords_of_model_type(model_type)
    if setting != AUTO:
        if detected is not None and detected != setting:
            logger.warning("visurf.coords=%s overrides the convention of the actor's family (%s: %s)",
                           setting, model_type, detected)
        return setting, f"visurf.coords={setting}"
    if detected is None:
        logger.warning("visurf.coords=auto: the actor %s (model_type %s) is not a family with a known grounding "
                       "convention (%s); using %s. Set visurf.coords to the model's convention if it grounds "
                       "objects.", model_path, model_type, ", ".join(sorted(MODEL_TYPE_COORDS)), DEFAULT_COORDS)
        return DEFAULT_COORDS, f"visurf.coords=auto, default (model_type {model_type!r} not in the table)"
    return detected, f"visurf.coords=auto, detected from the actor's model_type {model_type!r}"


def declared_coords(extra_info: Any) -> str:
    """The convention a row's prompt declares (``extra_info["coords"]``; missing: ``abs840``).
    ValueError for a value that is not a convention."""
    value = extra_info.get(EXTRA_INFO_KEY) if isinstance(extra_info, dict) else None
    if value is None:
        return ABS840
    return check_coords(value, f"extra_info[{EXTRA_INFO_KEY!r}]")
