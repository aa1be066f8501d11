"""Every document the repository cites is in the repository (issue 19.4).

Greps every tracked text file for references to Markdown files — paths (``docs/METHOD.md``,
``../recipe/visurf/EVALUATION.md``) and bare names (``EVALUATION.md``) — and checks that each one
resolves: a path relative to the citing file or to the repository root, a bare name to some
tracked file of that name. A path preceded by ``/`` (a URL, ``<dir>/NAME.md`` placeholders) is not
a repository reference. Citations of the method by section (``§3.2``) must name a numbered heading
of ``docs/METHOD.md``, and a citation of the method document must use its path.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "METHOD.md"

# file names the code writes at run time, cited as outputs, not as repository documents
OUTPUT_NAMES = {
    "report.md",  # recipe/visurf/evaluate.py REPORT: the evaluation report written into --out
}

MD_REFERENCE = re.compile(r"(?<![\w/.<>-])((?:\.{1,2}/|[\w+-][\w.+-]*/)*[\w+-][\w.+-]*\.md)(?![\w-])")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)?)")
BARE_METHOD = re.compile(r"(?<![\w/])METHOD(?:\.md)?(?![\w/])")  # "METHOD §3" / "METHOD.md" without docs/
HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)?)\.?\s", re.MULTILINE)


def tracked_text_files() -> list[Path]:
    """The repository's tracked files that are text (no NUL byte, UTF-8)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path == Path(__file__).resolve():  # this file's examples
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


@pytest.fixture(scope="module")
def files() -> list[Path]:
    return tracked_text_files()


def _lines(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        yield f"{path.relative_to(REPO)}:{number}", line


def resolves(reference: str, citing: Path, basenames: set[str]) -> bool:
    """Relative to the citing file's directory; else a path relative to the repository root, a bare
    name as some tracked file's name (or a run-time output name)."""
    if (citing.parent / reference).is_file():
        return True
    if "/" not in reference:
        return reference in basenames or reference in OUTPUT_NAMES
    return (REPO / reference).is_file()


def test_reference_pattern_reads_paths_and_bare_names():
    found = MD_REFERENCE.findall("see docs/METHOD.md §3.2, EVALUATION.md, [a](../recipe/visurf/EVALUATION.md), "
                                 "https://github.com/x/y/README.md, ``<docs>/RESULTS.md``, shared/docs/METHOD.md.")
    assert found == ["docs/METHOD.md", "EVALUATION.md", "../recipe/visurf/EVALUATION.md", "shared/docs/METHOD.md"]
    assert resolves("docs/METHOD.md", REPO / "README.md", set())
    assert resolves("ARCHITECTURE.md", REPO / "docs" / "METHOD.md", set())  # relative to the citing file
    assert not resolves("shared/docs/METHOD.md", REPO / "README.md", set())
    assert not resolves("NOWHERE.md", REPO / "README.md", {"README.md"})
    assert SECTION.findall("§1-§3, §1-2, (§3.1), § 6") == ["1", "3", "1", "3.1", "6"]
    assert BARE_METHOD.findall("METHOD §3 and METHOD.md, not docs/METHOD.md nor METHODS") == ["METHOD", "METHOD.md"]


def test_every_markdown_reference_resolves(files):
    basenames = {p.name for p in files}
    dangling = [f"{where}: {ref}" for path in files for where, line in _lines(path)
                for ref in MD_REFERENCE.findall(line) if not resolves(ref, path, basenames)]
    assert not dangling, "references to documents that are not in the repository:\n" + "\n".join(dangling)


def test_the_method_is_cited_by_its_path(files):
    bare = [f"{where}: {line.strip()[:120]}" for path in files for where, line in _lines(path)
            if BARE_METHOD.search(line)]
    assert not bare, "cite the method as docs/METHOD.md:\n" + "\n".join(bare)


def test_every_cited_section_is_a_heading_of_the_method():
    assert METHOD.is_file(), "docs/METHOD.md is missing"
    headings = set(HEADING.findall(METHOD.read_text(encoding="utf-8")))
    assert {"1", "1.2", "1.4", "1.5", "1.6", "2", "3", "3.1", "3.2", "3.3", "4", "5", "6", "7"} <= headings
    missing = [f"{where}: §{number}" for path in tracked_text_files() for where, line in _lines(path)
               for number in SECTION.findall(line) if number not in headings]
    assert not missing, "sections cited but not in docs/METHOD.md:\n" + "\n".join(missing)
