"""Procedural shape images -> verl parquet (data_source ``synthetic_grounding`` / ``synthetic_math``).

Deterministic (same ``--n --seed --image-size`` -> byte-identical file, for any ``--workers``),
no input files, fast (64 rows in well under a second at the default size). Used by the tests,
the CPU demo and the micro-scale reproduction.

grounding: 2-7 non-overlapping circles / squares / triangles in 6 colours; the question names a
colour and a shape ("the red circle", "all the blue squares"). About 25 % of rows are
non-object (the named combination is absent -> label ``[]``), 25 % multi-object (2-3 matches),
the rest single-object. Box = the shape's extent, point = its centre (inside every shape).

math: counting ("How many red shapes are there?", "How many triangles are there?" -> "3") and
multiple choice ("Which color appears most often?" -> option letter, options in
``extra_info.choices``).

grid_source / grid_target (the micro-scale reproduction, ``recipe/visurf/micro``): grounding in a
fixed layout, like a GUI: 4 columns (colours ``LAYOUT_COLORS``) x 3 rows (shapes), each object type
(colour, shape) always in its home cell, so a box is one of 12 strings and a tiny model can learn
the content, not only the format (a 1M-parameter model trained for minutes on CPU does not learn to
localise a freely placed shape). Images are ``s`` high and 4/3 ``s`` wide (``--image-size s``);
labels are in the 840 frame, so they do not depend on ``s``. Each image holds 2-4 distractor types
and, when present, the queried one. ``grid_source`` (the base model's task): known colours
(``SOURCE_COLORS``), the target always present, never one of ``HELD_OUT_TYPES``. ``grid_target``
cycles through three parts (``extra_info.id`` = ``grid_target-<part>-<seed>-<i>``): (a) a known type,
half the time a held-out combination of known words (``HELD_OUT_TYPES``: the base has to compose its
row and column), so the base solves part (a) sometimes;
(b) the new concept ``NEW_COLOR``, a word, a colour and a column never in the source task (the base
never writes those coordinates, so sampling alone cannot find them); (c) a known type that is absent
(label ``[]``, an answer the base never gives; only the image tells (c) from a present target);
(d) reasoning: a relational query over the layout, "the shape right of the green circle" (relations
``GRID_RELATIONS``: right of / left of / above / below; both objects known types, both in the image):
the answer is the neighbouring cell's object, derived in two steps (where the named object is, then
its neighbour), not named by the query. ``grid_relation`` rows are all of kind (d) (the micro base
model's partial training in that reasoning). Train and held-out sets differ by ``--seed``.
Grid rows ask to think (``GRID_PROMPT``); ``GRID_PROMPT_DIRECT`` is the same request answered
directly (the micro base model learns both).

Image size: shapes are drawn on an S x S canvas (``--image-size S``, default 840) and the image
is stored at S x S, but **label coordinates are always in the 840 frame** (``int(v*840/S+0.5)``),
exactly like real sources whose W x H images are scaled to 840. A small S (e.g. 112) keeps the
CPU demo's visual token count tiny; multiply a label coordinate by S/840 to get canvas pixels.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from PIL import Image, ImageDraw

from data_prep.common import (
    Summary,
    build_row,
    convert_all,
    encode_image,
    labels_json,
    make_object,
    make_parser,
    run_cli,
)
from verl_ext.constants import FRAME
from verl_ext.coords import DEFAULT_COORDS

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ((245, 245, 245), (225, 225, 225), (250, 240, 225), (230, 240, 250))
DATA_SOURCE = {
    "grounding": "synthetic_grounding",
    "math": "synthetic_math",
    "grid_source": "synthetic_grounding",
    "grid_target": "synthetic_grounding",
    "grid_relation": "synthetic_grounding",
}
GRID_TASKS = ("grid_source", "grid_target", "grid_relation")
# grid tasks: a fixed layout, 3 rows (one per shape: LAYOUT_SHAPES) x 4 columns (one per colour:
# LAYOUT_COLORS); every object type (colour, shape) has its home cell, like the elements of a GUI.
LAYOUT_SHAPES = SHAPES
LAYOUT_COLORS = ("red", "green", "blue", "purple")
SOURCE_COLORS = LAYOUT_COLORS[:3]  # the base model's colour words
NEW_COLOR = "purple"  # the target task's new concept: never drawn, named or answered in grid_source
HELD_OUT_TYPES = (("blue", "triangle"), ("green", "circle"))  # never a grid_source target: part (a)
GRID_EXTENT = 0.36  # a grid shape's half extent, as a fraction of the cell side
GRID_PARTS = ("a", "b", "c", "d")  # grid_target parts: held-out combination / new concept / non-object / reasoning
# part d's relations: (row offset, column offset) of the answer's cell from the named object's cell
GRID_RELATIONS = {"right of": (0, 1), "left of": (0, -1), "above": (-1, 0), "below": (1, 0)}
GRID_DISTRACTORS = (2, 4)  # (min, max) distractor objects per grid image
# The grid tasks' own short prompt: the shared grounding prompt is ~280 tokens, five times the
# answer, and at micro scale it only costs time (every rollout and update re-reads it).
GRID_PROMPT = ('<image>Find "{question}". Think in <think> </think>, then answer in <answer> </answer> '
               'a JSON list of {{"bbox_2d": [...], "point_2d": [...]}}, or [] if it is absent.')
GRID_PROMPT_DIRECT = ('<image>Find "{question}". Answer directly in <answer> </answer> '
                      'a JSON list of {{"bbox_2d": [...], "point_2d": [...]}}, or [] if it is absent.')


@dataclass(frozen=True)
class Shape:
    color: str
    kind: str
    x: float  # centre, canvas pixels
    y: float
    r: float  # half extent

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x - self.r, self.y - self.r, self.x + self.r, self.y + self.r)


@dataclass(frozen=True)
class SynthOpts:
    task: str
    seed: int
    image_size: int
    image_format: str
    split: str


def _place(rng: random.Random, s: int, combos: list[tuple[str, str]]) -> list[Shape]:
    """Non-overlapping shapes (boxes at least 2 px apart) for the given (color, kind) list;
    gives up on a shape only after many tries (then the canvas is simply fuller)."""
    placed: list[Shape] = []
    for color, kind in combos:
        for _ in range(200):
            r = rng.uniform(0.05, 0.11) * s
            x, y = rng.uniform(r + 1, s - r - 2), rng.uniform(r + 1, s - r - 2)
            if all(abs(x - o.x) > r + o.r + 2 or abs(y - o.y) > r + o.r + 2 for o in placed):
                placed.append(Shape(color, kind, x, y, r))
                break
    return placed


def _draw(rng: random.Random, s: int, shapes: list[Shape]) -> Image.Image:
    img = Image.new("RGB", (s, s), rng.choice(BACKGROUNDS))
    _paint(ImageDraw.Draw(img), shapes)
    return img


def _paint(d: ImageDraw.ImageDraw, shapes: list[Shape]) -> None:
    for sh in shapes:
        x1, y1, x2, y2 = sh.box
        fill = COLORS[sh.color]
        if sh.kind == "circle":
            d.ellipse((x1, y1, x2, y2), fill=fill)
        elif sh.kind == "square":
            d.rectangle((x1, y1, x2, y2), fill=fill)
        else:  # triangle with its base on the box bottom; the box centre lies inside it
            d.polygon([(sh.x, y1), (x2, y2), (x1, y2)], fill=fill)


def _distractors(rng: random.Random, target: tuple[str, str], k: int) -> list[tuple[str, str]]:
    """k combos different from target; about half share its colour or its shape."""
    out = []
    while len(out) < k:
        c = rng.choice(list(COLORS)) if rng.random() < 0.5 else target[0]
        sh = rng.choice(SHAPES) if c == target[0] or rng.random() < 0.5 else target[1]
        if (c, sh) != target:
            out.append((c, sh))
    return out


def grounding_sample(rng: random.Random, s: int):
    """(image, question, objects in the 840 frame) of one grounding sample."""
    target = (rng.choice(list(COLORS)), rng.choice(SHAPES))
    case = rng.random()
    n_target = 0 if case < 0.25 else (rng.randint(2, 3) if case < 0.5 else 1)
    combos = [target] * n_target + _distractors(rng, target, rng.randint(2, 4))
    rng.shuffle(combos)
    shapes = _place(rng, s, combos)
    plural = n_target > 1 or (n_target == 0 and rng.random() < 0.5)
    question = f"all the {target[0]} {target[1]}s" if plural else f"the {target[0]} {target[1]}"
    hits = sorted((sh for sh in shapes if (sh.color, sh.kind) == target), key=lambda sh: (sh.y, sh.x))
    objects = [
        make_object([round(v) for v in sh.box], [round(sh.x), round(sh.y)], s, s) for sh in hits
    ]
    # the box uses inclusive pixels; keep the mapping exact: box edges and the centre are rounded
    # in canvas pixels first, then scaled into the 840 frame with int(v*840/S+0.5)
    return _draw(rng, s, shapes), question, objects


def grid_part(task: str, i: int) -> str:
    """The part of row ``i``: ``"source"`` for grid_source, ``"d"`` for grid_relation, else
    ``GRID_PARTS[i % 4]`` (a, b, c, d, a, ...)."""
    if task == "grid_source":
        return "source"
    return "d" if task == "grid_relation" else GRID_PARTS[i % len(GRID_PARTS)]


def grid_neighbour(ref: tuple[str, str], relation: str) -> tuple[str, str] | None:
    """The type in the cell ``relation`` of ``ref``'s home cell (``GRID_RELATIONS``), or None off the grid."""
    dr, dc = GRID_RELATIONS[relation]
    r, c = LAYOUT_SHAPES.index(ref[1]) + dr, LAYOUT_COLORS.index(ref[0]) + dc
    if 0 <= r < len(LAYOUT_SHAPES) and 0 <= c < len(LAYOUT_COLORS):
        return LAYOUT_COLORS[c], LAYOUT_SHAPES[r]
    return None


def grid_label(color: str, kind: str, s: int) -> str:
    """The label (JSON list, 840 frame) of the type (color, kind) in its home cell of an ``s``-high image."""
    sh = grid_home(color, kind, s)
    w, h = grid_canvas(s)
    return labels_json([make_object([round(v) for v in sh.box], [round(sh.x), round(sh.y)], w, h)])


def grid_canvas(s: int) -> tuple[int, int]:
    """(width, height) of a grid image of size parameter ``s``: ``s`` high, 4/3 ``s`` wide (4 x 3 cells)."""
    return round(s * len(LAYOUT_COLORS) / len(LAYOUT_SHAPES)), s


def grid_home(color: str, kind: str, s: int) -> Shape:
    """The object of type (color, kind) in its home cell (column = colour, row = shape) of an ``s``-high image."""
    w, h = grid_canvas(s)
    cw, ch = w / len(LAYOUT_COLORS), h / len(LAYOUT_SHAPES)
    col, row = LAYOUT_COLORS.index(color), LAYOUT_SHAPES.index(kind)
    return Shape(color, kind, (col + 0.5) * cw, (row + 0.5) * ch, GRID_EXTENT * min(cw, ch))


def grid_sample(rng: random.Random, s: int, part: str):
    """(image, question, objects in the 840 frame, width, height) of one grid sample of ``part``.

    The queried type is ``target``; the image holds 2-4 distractor types (known colours, never the
    target) and, except in part c, the target, each in its home cell (``grid_home``).
    source: target any known type but ``HELD_OUT_TYPES``; a: target in ``HELD_OUT_TYPES`` (odds 1/2)
    or any known type;
    b: target ``NEW_COLOR`` + any shape; c: target any known type, absent (label ``[]``);
    d: a relation of ``GRID_RELATIONS`` (uniform) and a known type whose neighbour in that direction is a
    known type; both in the image with 1-3 other known types; the target is the neighbour.
    """
    known = [(c, k) for c in SOURCE_COLORS for k in LAYOUT_SHAPES]
    if part == "d":
        relation = rng.choice(list(GRID_RELATIONS))
        ref = rng.choice([t for t in known if grid_neighbour(t, relation) in known])
        target = grid_neighbour(ref, relation)
        others = [t for t in known if t not in (ref, target)]
        types = rng.sample(others, rng.randint(GRID_DISTRACTORS[0] - 1, GRID_DISTRACTORS[1] - 1)) + [ref, target]
        img, objects, w, h = _grid_image(rng, s, types, target)
        return img, f"the shape {relation} the {ref[0]} {ref[1]}", objects, w, h
    if part == "source":
        target = rng.choice([t for t in known if t not in HELD_OUT_TYPES])
    elif part == "a":
        target = rng.choice(HELD_OUT_TYPES) if rng.random() < 0.5 else rng.choice(known)
    elif part == "b":
        target = (NEW_COLOR, rng.choice(LAYOUT_SHAPES))
    elif part == "c":
        target = rng.choice(known)
    else:
        raise ValueError(f"unknown grid part {part!r}")
    types = rng.sample([t for t in known if t != target], rng.randint(*GRID_DISTRACTORS))
    if part != "c":
        types.append(target)
    img, objects, w, h = _grid_image(rng, s, types, target)
    return img, f"the {target[0]} {target[1]}", objects, w, h


def _grid_image(rng: random.Random, s: int, types: list[tuple[str, str]], target: tuple[str, str]):
    """(image, objects of ``target`` in the 840 frame, width, height) of ``types`` in their home cells."""
    shapes = [grid_home(c, k, s) for c, k in types]
    w, h = grid_canvas(s)
    img = Image.new("RGB", (w, h), rng.choice(BACKGROUNDS))
    _paint(ImageDraw.Draw(img), shapes)
    hits = [sh for sh in shapes if (sh.color, sh.kind) == target]
    objects = [make_object([round(v) for v in sh.box], [round(sh.x), round(sh.y)], w, h) for sh in hits]
    return img, objects, w, h


def grid_scene(img: Image.Image) -> list[tuple[str, str]]:
    """The object types a grid image shows, row by row (``LAYOUT_SHAPES``), column by column
    (``LAYOUT_COLORS``): type (c, k) is present iff the pixel at its home cell's centre
    (``grid_home``; inside every shape) has colour ``COLORS[c]`` (backgrounds are greys / pastels)."""
    rgb = img.convert("RGB")
    s = rgb.size[1]
    out = []
    for k in LAYOUT_SHAPES:
        for c in LAYOUT_COLORS:
            home = grid_home(c, k, s)
            if rgb.getpixel((int(home.x), int(home.y))) == COLORS[c]:
                out.append((c, k))
    return out


def math_sample(rng: random.Random, s: int):
    """(image, question, answer, choices or None) of one math sample."""
    kind = rng.choice(("count_color", "count_shape", "most_color"))
    if kind == "most_color":
        colors = rng.sample(list(COLORS), 4)
        counts = [rng.randint(1, 2) for _ in colors]
        win = rng.randrange(4)
        counts[win] = max(counts) + 1
        combos = [(c, rng.choice(SHAPES)) for c, n in zip(colors, counts) for _ in range(n)]
    else:
        combos = [(rng.choice(list(COLORS)), rng.choice(SHAPES)) for _ in range(rng.randint(3, 8))]
    rng.shuffle(combos)
    shapes = _place(rng, s, combos)
    img = _draw(rng, s, shapes)
    if kind == "count_color":
        color = rng.choice(list(COLORS))
        n = sum(sh.color == color for sh in shapes)
        return img, f"How many {color} shapes are there in the image?", str(n), None
    if kind == "count_shape":
        kind_ = rng.choice(SHAPES)
        n = sum(sh.kind == kind_ for sh in shapes)
        return img, f"How many {kind_}s are there in the image?", str(n), None
    counts = {c: sum(sh.color == c for sh in shapes) for c in colors}
    best = max(counts.values())
    winners = [c for c in colors if counts[c] == best]
    if len(winners) != 1:  # a placement failure broke the unique maximum: fall back to counting
        n = len(shapes)
        return img, "How many shapes are there in the image?", str(n), None
    options = "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(colors))
    question = f"Which color appears most often in the image?\nChoices:\n{options}"
    return img, question, chr(65 + colors.index(winners[0])), colors


def convert(i: int, opts: SynthOpts) -> list[dict]:
    rng = random.Random(f"visurf-synthetic/{opts.task}/{opts.seed}/{opts.image_size}/{i}")
    s = opts.image_size
    choices = None
    row_id = f"{DATA_SOURCE[opts.task]}_{opts.seed}_{i}"
    if opts.task == "grounding":
        img, question, objects = grounding_sample(rng, s)
        gt = labels_json(objects)
    elif opts.task in GRID_TASKS:
        part = grid_part(opts.task, i)
        img, question, objects, w, h = grid_sample(rng, s, part)
        gt = labels_json(objects)
        row_id = f"{opts.task}-{part}-{opts.seed}-{i}"
    else:
        img, question, gt, choices = math_sample(rng, s)
    w, h = img.size
    row = build_row(
        data_source=DATA_SOURCE[opts.task], question=question, image_bytes=encode_image(img, opts.image_format),
        ground_truth=gt, row_id=row_id, split=opts.split, width=w, height=h, choices=choices,
    )
    if opts.task in GRID_TASKS:
        row["prompt"] = [{"role": "user", "content": GRID_PROMPT.format(question=question)}]
    return [row]


def generate(
    task: str,
    n: int,
    seed: int,
    out: str,
    *,
    image_size: int = FRAME,
    image_format: str = "png",
    split: str = "train",
    workers: int = 1,
    progress: bool = False,
    coords: str = DEFAULT_COORDS,
) -> Summary:
    """Write ``n`` synthetic rows of ``task`` (a key of ``DATA_SOURCE``) to the parquet ``out``
    (atomically) and return the :class:`~data_prep.common.Summary` (``.rows``, ``.out`` ...).

    Images are ``image_size`` x ``image_size``; label coordinates are in the 840 frame; the prompts ask
    for the coordinate convention ``coords`` (``verl_ext.coords``; ``rel1000`` for a Qwen3-VL policy).
    """
    if task not in DATA_SOURCE:
        raise ValueError(f"unknown synthetic task {task!r} ({', '.join(DATA_SOURCE)})")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 28 <= image_size <= 4096:
        raise ValueError(f"image_size must be in [28, 4096], got {image_size}")
    opts = SynthOpts(task=task, seed=seed, image_size=image_size, image_format=image_format, split=split)
    return convert_all(
        data_source=DATA_SOURCE[task], records=range(n), convert=convert, opts=opts, out=out,
        workers=workers, strict=True, progress=progress, coords=coords,
    )


def parser():
    p = make_parser(
        "python -m data_prep.synthetic", __doc__.split("\n\n")[0],
        "python -m data_prep.synthetic --task grounding --n 64 --seed 0 --image-size 112 --out data/syn_train.parquet\n\n"
        + "\n\n".join(__doc__.split("\n\n")[1:]),
        default_format="png",
    )
    p.add_argument("--task", required=True, choices=tuple(DATA_SOURCE))
    p.add_argument("--n", type=int, required=True, help="number of rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=FRAME,
                   help="canvas/stored image size S (default 840); labels stay in the 840 frame")
    p.add_argument("--split", default="train", help="value of extra_info.split (default train)")
    return p


def main(argv=None) -> int:
    p = parser()

    def records(a):
        if a.n < 1:
            p.error("--n must be >= 1")
        if not 28 <= a.image_size <= 4096:
            p.error("--image-size must be in [28, 4096]")
        return range(a.n)

    return run_cli(
        argv, p, lambda a: DATA_SOURCE[a.task], records, convert,
        lambda a: SynthOpts(task=a.task, seed=a.seed, image_size=a.image_size, image_format=a.image_format,
                            split=a.split),
    )


if __name__ == "__main__":
    sys.exit(main())
