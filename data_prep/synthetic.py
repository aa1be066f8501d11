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
DATA_SOURCE = {"grounding": "synthetic_grounding", "math": "synthetic_math"}


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
    d = ImageDraw.Draw(img)
    for sh in shapes:
        x1, y1, x2, y2 = sh.box
        fill = COLORS[sh.color]
        if sh.kind == "circle":
            d.ellipse((x1, y1, x2, y2), fill=fill)
        elif sh.kind == "square":
            d.rectangle((x1, y1, x2, y2), fill=fill)
        else:  # triangle with its base on the box bottom; the box centre lies inside it
            d.polygon([(sh.x, y1), (x2, y2), (x1, y2)], fill=fill)
    return img


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
    if opts.task == "grounding":
        img, question, objects = grounding_sample(rng, s)
        gt = labels_json(objects)
    else:
        img, question, gt, choices = math_sample(rng, s)
    return [
        build_row(
            data_source=DATA_SOURCE[opts.task], question=question, image_bytes=encode_image(img, opts.image_format),
            ground_truth=gt, row_id=f"{DATA_SOURCE[opts.task]}_{opts.seed}_{i}", split=opts.split,
            width=s, height=s, choices=choices,
        )
    ]


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
) -> Summary:
    """Write ``n`` synthetic rows of ``task`` ("grounding" or "math") to the parquet ``out``
    (atomically) and return the :class:`~data_prep.common.Summary` (``.rows``, ``.out`` ...).

    Images are ``image_size`` x ``image_size``; label coordinates are in the 840 frame.
    """
    if task not in DATA_SOURCE:
        raise ValueError(f"unknown synthetic task {task!r} (grounding or math)")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 28 <= image_size <= 4096:
        raise ValueError(f"image_size must be in [28, 4096], got {image_size}")
    opts = SynthOpts(task=task, seed=seed, image_size=image_size, image_format=image_format, split=split)
    return convert_all(
        data_source=DATA_SOURCE[task], records=range(n), convert=convert, opts=opts, out=out,
        workers=workers, strict=True, progress=progress,
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
