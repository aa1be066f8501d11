"""Make PyPI's CUDA-linked torchvision importable beside the CPU build of torch.

The only torchvision wheel for torch 2.13 on PyPI is linked against CUDA; with the CPU torch
its compiled ops cannot load and ``import torchvision`` dies in ``_meta_registrations.py``
registering fake kernels for ``torchvision::nms`` / ``torchvision::qnms``. transformers 5
needs torchvision to build the Qwen2.5-VL processor, so we make exactly those two
registrations conditional on the ops being present. Idempotent; a no-op on GPU installs
(where the ops load) and on a torchvision that imports cleanly.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

PATTERN = re.compile(r'^@torch\.library\.register_fake\("torchvision::(q?nms)"\)', re.M)
REPLACEMENT = (
    r'@(torch.library.register_fake("torchvision::\1") '
    r"if torchvision.extension._has_ops() else (lambda f: f))"
)


def imports_cleanly() -> bool:
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("[fix_torchvision_cpu] torchvision not installed; nothing to do")
        return 0
    if imports_cleanly():
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    new, n = PATTERN.subn(REPLACEMENT, text)
    if n == 0:
        print(f"[fix_torchvision_cpu] {path}: expected registrations not found; torchvision still fails to import")
        return 1
    path.write_text(new)
    if not imports_cleanly():
        print("[fix_torchvision_cpu] patched, but torchvision still fails to import", file=sys.stderr)
        return 1
    print(f"[fix_torchvision_cpu] patched {n} fake-op registrations in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
