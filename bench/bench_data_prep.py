"""Benchmark: throughput of the grefcoco CLI (--workers 2) vs raw PIL open+resize+encode.

Generates 200 random-texture 1280x960 JPEGs with a gRefCOCO index (one polygon target per
image, every 5th ref no-target), then measures

* raw:  PIL open -> RGB -> resize to 840x840 (bilinear) -> encode (JPEG q95), one process,
        the same files - the irreducible image work;
* cli:  ``python -m data_prep.grefcoco --workers 2`` end to end as a subprocess (includes
        interpreter start-up and imports) and the in-process conversion time (the CLI's own
        elapsed time, printed in its summary, excludes start-up).

Prints images/s and the ratio cli/raw (target >= 0.8).

    python bench/bench_data_prep.py [--n 200] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H = 1280, 960


def make_dataset(root: str, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    img_dir = os.path.join(root, "images", "train2014")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "grefcoco"), exist_ok=True)
    base = (rng.random((H // 8, W // 8, 3)) * 255).astype(np.uint8)
    images, anns, refs, paths = [], [], [], []
    for i in range(n):
        arr = np.roll(base, i, axis=1)
        img = Image.fromarray(arr).resize((W, H), Image.Resampling.BILINEAR)  # smooth photo-like texture
        name = f"COCO_train2014_{i:012d}.jpg"
        path = os.path.join(img_dir, name)
        img.save(path, quality=90)
        paths.append(path)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
        x, y = 100 + (i * 7) % 600, 80 + (i * 5) % 400
        anns.append({"id": 1000 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [x, y, 300, 200],
                     "area": 60000, "segmentation": [[x, y, x + 300, y, x + 250, y + 200, x + 20, y + 180]]})
        refs.append({"ref_id": i, "image_id": i, "ann_id": [-1] if i % 5 == 4 else [1000 + i], "split": "val",
                     "no_target": i % 5 == 4, "category_id": [1], "file_name": name, "sent_ids": [i],
                     "sentences": [{"tokens": ["thing"], "raw": f"thing number {i}", "sent": f"thing number {i}", "sent_id": i}]})
    with open(os.path.join(root, "grefcoco", "grefs(unc).json"), "w") as f:
        json.dump(refs, f)
    with open(os.path.join(root, "grefcoco", "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}, f)
    return paths


def raw_rate(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            small = im.convert("RGB").resize((840, 840), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=95)
    return len(paths) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", default=None, help="build the dataset here and keep it")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="bench_data_prep_")
    paths = make_dataset(root, args.n)
    raw_rate(paths[:10])  # warm the page cache
    raw = raw_rate(paths)
    out = os.path.join(root, "out.parquet")
    cmd = [sys.executable, "-m", "data_prep.grefcoco", "--root", root, "--split", "val", "--out", out,
           "--workers", str(args.workers), "--quiet", "--image-format", "jpeg"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout, res.stderr)
        return 1
    inner = float(re.search(r"time\s+([\d.]+) s", res.stdout).group(1))
    e2e, conv = args.n / wall, args.n / inner
    print(f"images: {args.n} x {W}x{H} JPEG, CPUs: {os.cpu_count()}, workers: {args.workers}")
    print(f"raw PIL open+resize+encode (1 process): {raw:8.1f} images/s")
    print(f"grefcoco CLI, conversion only        : {conv:8.1f} images/s   ratio {conv / raw:.2f}")
    print(f"grefcoco CLI, end to end incl. start : {e2e:8.1f} images/s   ratio {e2e / raw:.2f}  ({wall - inner:.1f} s start-up)")
    print(f"target ratio >= 0.8: {'met' if conv / raw >= 0.8 else 'NOT met'} (conversion only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
