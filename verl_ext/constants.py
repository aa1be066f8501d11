"""One place for every fact the project shares: the 840 frame, the matching thresholds, the
answer/prompt templates and the data_source -> task table.

Everything else (data_prep, rewards, GT alignment, metrics, evaluation) imports from here.
No imports beyond the standard library, so this module is cheap to load anywhere (ray
workers, reward processes, data-prep pools).

Label formats (``reward_model.ground_truth`` in the parquet, written by data_prep):

* grounding / anomaly / lesion: a JSON list of objects
  ``[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]``, integers in the FRAME x FRAME
  frame, ``x1 <= x2``, ``y1 <= y2``, the point inside its box. ``"[]"`` is a non-object sample
  (nothing matches / normal product).
* gui: a JSON list with exactly one object ``{"bbox_2d": element box, "point_2d": element
  centre}``; the model answers ``[{"point_2d": [x, y]}]`` and is right when the point lies in
  the box.
* math: the canonical answer string (``"3"``, ``"\\frac{1}{2}"``). Multiple choice: the option
  letter (``"B"``), with the option texts in ``extra_info["choices"]`` (so letter or option text
  are both accepted by the scorer).
"""

from __future__ import annotations

from dataclasses import dataclass

from verl_ext.coords import DEFAULT_COORDS, prompt_hint  # stdlib only; imports nothing from here at load

# --------------------------------------------------------------------------------------------
# Geometry (docs/METHOD.md §4, §5)
# --------------------------------------------------------------------------------------------
FRAME = 840  # images are resized to FRAME x FRAME; every coordinate lives in this frame
# Boxes are inclusive pixel boxes: [x1, y1, x2, y2] covers pixels x1..x2 and y1..y2 of the frame
# (area (x2 - x1 + 1) * (y2 - y1 + 1); data_prep writes 0..FRAME-1). The reward's box IoU and the
# evaluation's box rasterisation use this convention; the evaluation's BboxAcc uses the public
# VisionReasoner formula (x2 - x1) * (y2 - y1) instead (verl_ext/eval_protocols/grounding.py).
IOU_MATCH = 0.5  # a predicted box matches a GT box when IoU > IOU_MATCH
BOX_L1_MATCH = 10  # ... or when the mean L1 distance of its corners is < BOX_L1_MATCH pixels
POINT_MATCH = 30  # a predicted point matches when it is < POINT_MATCH px from the GT point
MAX_OBJECTS = 120  # at most this many objects are parsed / matched on either side
MAX_RESPONSE_CHARS = 20_000  # responses longer than this are cut before parsing (bounded work)

# --------------------------------------------------------------------------------------------
# Answer format
# --------------------------------------------------------------------------------------------
# The answer template the policy is trained to emit, and that align_gt wraps the GT in
# (docs/METHOD.md §3.1). `{answer}` is the serialised JSON list (grounding) or the answer string.
ANSWER_TEMPLATE = "<answer>{answer}</answer>"
THINK_ANSWER_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"  # whole-response match, DOTALL
BBOX_KEY = "bbox_2d"
POINT_KEY = "point_2d"

# --------------------------------------------------------------------------------------------
# Tasks and data sources
# --------------------------------------------------------------------------------------------
TASKS = ("grounding", "gui", "anomaly", "lesion", "math")

# data_source (written by data_prep, read by the reward dispatcher and the evaluator) -> task
DATA_SOURCE_TASK: dict[str, str] = {
    "grefcoco": "grounding",
    "refcoco": "grounding",
    "refcoco+": "grounding",
    "refcocog": "grounding",
    "reasonseg": "grounding",
    "visurf_mix": "grounding",
    "synthetic_grounding": "grounding",
    "realiad": "anomaly",
    "isic2018": "lesion",
    "omniact": "gui",
    "mathvista": "math",
    "geo3k": "math",
    "synthetic_math": "math",
}

# `ability` column of the parquet, per task (verl's schema field)
TASK_ABILITY = {
    "grounding": "grounding",
    "gui": "gui_grounding",
    "anomaly": "anomaly_detection",
    "lesion": "lesion_detection",
    "math": "math",
}

# The valid values of the `visurf:` options (the one list of each; VisurfConfig validates against
# them, the task scorers read GT_THINKING_REWARDS). Here, not in verl_ext.visurf.config, because the
# modules verl imports through VERL_USE_EXTERNAL_MODULES need them before verl has finished importing.
INJECT_WHEN = ("always", "all_fail")  # visurf.inject_when
GT_THINKING_REWARDS = ("zero", "full")  # visurf.gt_thinking_reward (docs/METHOD.md §3.2)
GT_LOSSES = ("ppo_clip", "luffy_shaping", "sft")  # visurf.gt_loss
SURROGATE_LOSS_MODES = ("vanilla", "visurf")  # verl loss modes whose clipped surrogate the GT variants reproduce

# A response solved the task when its `accuracy` reward component reaches this value (the task's
# full accuracy): grounding / anomaly / lesion 3 = every label object matched on box IoU, box corners
# and point (Hungarian total / max(M, N)); gui 1 = the point in the element box; math 1 = correct.
# Used by visurf.inject_when=all_fail ("every rollout failed") — verl_ext.visurf.group_step.task_solved.
TASK_SUCCESS_ACCURACY = {
    "grounding": 3.0,
    "anomaly": 3.0,
    "lesion": 3.0,
    "gui": 1.0,
    "math": 1.0,
}


def task_of(data_source: str) -> str:
    """Task name for a data_source; ValueError naming the unknown source and the known ones."""
    try:
        return DATA_SOURCE_TASK[data_source]
    except KeyError:
        known = ", ".join(sorted(DATA_SOURCE_TASK))
        raise ValueError(f"unknown data_source {data_source!r}; known: {known}") from None


# --------------------------------------------------------------------------------------------
# Prompt templates (the single source; data_prep fills them, nothing copies them)
# --------------------------------------------------------------------------------------------
# Grounding-style prompt (VisionReasoner style): boxes + points in the 840 frame, `[]` when
# nothing matches. `{question}` is the referring expression / reasoning query.
GROUNDING_PROMPT = (
    '<image>Please find "{question}" with bboxs and points. '
    "Compare the difference between objects and find the most closely matched one(s). "
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format, "
    'i.e., <think> thinking process here </think><answer>[{{"bbox_2d": [10, 100, 200, 210], '
    '"point_2d": [30, 110]}}, {{"bbox_2d": [225, 296, 706, 786], "point_2d": [302, 410]}}]</answer>. '
    "If no object matches, answer <answer>[]</answer>."
)

# GUI grounding (OmniACT): one point on the element to act on.
GUI_PROMPT = (
    "<image>In this screenshot, where should I click to {question}? "
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    'Output the point to click in JSON format, i.e., <think> thinking process here </think>'
    '<answer>[{{"point_2d": [300, 410]}}]</answer>.'
)

# Anomaly detection (Real-IAD): defect boxes, `[]` for a normal sample.
ANOMALY_PROMPT = (
    '<image>Please find the defects on this "{question}" with bboxs and points. '
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    'Output them in JSON format, i.e., <think> thinking process here </think><answer>[{{"bbox_2d": '
    '[10, 100, 200, 210], "point_2d": [30, 110]}}]</answer>. If the object is normal, answer <answer>[]</answer>.'
)

# Lesion detection (ISIC 2018): the lesion box.
LESION_PROMPT = (
    "<image>Please find the skin lesion in this dermoscopic image with a bbox and a point. "
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    'Output it in JSON format, i.e., <think> thinking process here </think><answer>[{{"bbox_2d": '
    '[10, 100, 200, 210], "point_2d": [30, 110]}}]</answer>.'
)

# Math (MathVista, Geometry3K): `{question}` already contains the choices when there are any.
MATH_PROMPT = (
    "<image>{question}\n"
    "Output the thinking process in <think> </think> and the final answer (only the number, "
    "expression or option letter) in <answer> </answer> tags."
)

TASK_PROMPT = {
    "grounding": GROUNDING_PROMPT,
    "gui": GUI_PROMPT,
    "anomaly": ANOMALY_PROMPT,
    "lesion": LESION_PROMPT,
    "math": MATH_PROMPT,
}

# The public VisionReasoner / ViSurf prompts, verbatim from JIA-Lab-research/VisionReasoner
# `vision_reasoner/models/visurf_model.py` (ViSurfModel.DETECTION_TEMPLATE and MATH_TEMPLATE, commit
# 5c1587f), with `{Question}` -> `{question}` and the `{Answer}` example that `_generate_model_output`
# fills in inlined. Its DETECTION_TEMPLATE sentences are identical to Seg-Zero's
# (dvlab-research/Seg-Zero `evaluation_scripts/evaluation_visionreasoner.py` QUESTION_TEMPLATE and,
# after "<image>\n", `verl/utils/rl_dataset.py`); only the example differs ("[10,100,...]" there,
# with spaces here). The public code passes the image as a content item before the text, which is
# what a leading "<image>" becomes in verl's RLHFDataset. The public evaluation scripts use
# DETECTION_TEMPLATE for every localisation task (evaluation_segmentation/_gui/_anomaly.py).
VR_ANSWER_EXAMPLE = (
    '[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}, '
    '{"bbox_2d": [225, 296, 706, 786], "point_2d": [302, 410]}]'
)
VR_DETECTION_PROMPT = (
    "<image>"
    'Please find "{question}" with bboxs and points.'
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    "i.e., <think> thinking process here </think>"
    "<answer>" + VR_ANSWER_EXAMPLE.replace("{", "{{").replace("}", "}}") + "</answer>"
)
VR_MATH_PROMPT = (
    "<image>"
    "{question} "
    "First think about the question and then provide the answer. "
    "The answer is in latex format and wrapped using the \\boxed{{}} command. "
    "The thinking process and answer are enclosed within <think> </think> and \\boxed{{}} tags, respectively. "
    "i.e., <think> thinking process here. </think>\\boxed{{2}}"
)


@dataclass(frozen=True)
class PromptStyle:
    """A prompt style: one template per task (``{question}`` placeholder, exactly one ``<image>``)
    and how the question is normalised before it is filled in (``lower_strip``: lowercase it and
    strip these characters from both ends, as the public code does; ``None``: use it as given)."""

    name: str
    templates: dict
    lower_strip: str | None
    source: str


PROMPT_STYLES: dict[str, PromptStyle] = {
    # this project's prompts (above): answers always in <answer> </answer>, `[]` for nothing found
    "visurf": PromptStyle("visurf", TASK_PROMPT, None, "verl_ext/constants.py (this project)"),
    # the released VisionReasoner/ViSurf checkpoints' prompts; math answers in \boxed{}. No anomaly
    # entry: the public anomaly evaluation reads its question from a dataset that is not published,
    # and DETECTION_TEMPLATE around a bare category name would ask for the object, not the defect.
    "visionreasoner": PromptStyle(
        "visionreasoner",
        {"grounding": VR_DETECTION_PROMPT, "gui": VR_DETECTION_PROMPT, "lesion": VR_DETECTION_PROMPT,
         "math": VR_MATH_PROMPT},
        '"!',  # ViSurfModel._generate_model_output: Question=instruction.lower().strip("\"!")
        "JIA-Lab-research/VisionReasoner vision_reasoner/models/visurf_model.py",
    ),
}
DEFAULT_PROMPT_STYLE = "visurf"


def prompt_style(name: str) -> PromptStyle:
    """The registered style ``name``; ValueError naming the known styles."""
    try:
        return PROMPT_STYLES[name]
    except KeyError:
        raise ValueError(f"unknown prompt style {name!r}; known: {', '.join(PROMPT_STYLES)}") from None


def build_prompt(task: str, question: str, style: str = DEFAULT_PROMPT_STYLE, coords: str = DEFAULT_COORDS) -> str:
    """The user message text for ``task`` in prompt style ``style`` (exactly one ``<image>``):
    ``templates[task].format(question=q)`` with ``q = question.lower().strip(lower_strip)`` when
    the style normalises questions, else ``q = question``; for an object task (not math) followed by
    the coordinate convention's sentence ``verl_ext.coords.prompt_hint(coords)`` — empty for the
    paper's ``abs840``, so its prompts are unchanged; ``rel1000`` (Qwen3-VL) states the 0-1000 scale."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    ps = prompt_style(style)
    if task not in ps.templates:
        raise ValueError(f"prompt style {style!r} has no template for task {task!r} "
                         f"(it covers {', '.join(ps.templates)})")
    q = question.lower().strip(ps.lower_strip) if ps.lower_strip is not None else question
    hint = prompt_hint(coords) if task != "math" else ""
    return ps.templates[task].format(question=q) + hint
