"""verl_ext.atomic_io, the repository's one way to write a product file, and its users: a product
file is complete or absent (old) whatever happens to the writer, no temp file is left behind, a
destination that cannot be written fails before any work with one line, modes follow the umask."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import common
from verl_ext import atomic_io as A


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def _row(i: int) -> dict:
    return common.build_row(data_source="synthetic_grounding", question=f"q{i}", image_bytes=b"x" * 100,
                            ground_truth="[]", row_id=str(i), split="train", width=10, height=10)


# --------------------------------------------------------------------------------------------
# write_atomically and its wrappers
# --------------------------------------------------------------------------------------------
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "r.json"
    A.write_text_atomically(out, "old")

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        A.write_atomically(out, failing)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]

    def interrupted(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        A.write_atomically(out, interrupted)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert A.write_atomically(tmp_path / "new" / "x.txt", lambda tmp: tmp.write_text("x")).read_text() == "x"
    assert A.write_bytes_atomically(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


def test_figures_are_written_in_the_format_of_their_suffix(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    png = A.save_figure_atomically(fig, tmp_path / "f.png", dpi=20)
    pdf = A.save_figure_atomically(fig, tmp_path / "f.pdf")
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_atomic_file_commit_and_abort(tmp_path):
    out = tmp_path / "s.txt"
    with A.AtomicFile(out) as f:
        f.tmp_path.write_text("one")
        assert not out.exists()  # nothing visible until the commit
    assert out.read_text() == "one"
    with pytest.raises(RuntimeError), A.AtomicFile(out) as f:
        f.tmp_path.write_text("two, half")
        raise RuntimeError("boom")
    assert out.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["s.txt"]
    f = A.AtomicFile(out)
    f.tmp_path.write_text("three")
    f.commit()
    with pytest.raises(RuntimeError, match="already committed"):
        f.commit()
    assert out.read_text() == "three"


# --------------------------------------------------------------------------------------------
# Destinations that cannot be written: one line, before any work
# --------------------------------------------------------------------------------------------
def test_unwritable_destinations_give_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = {
        tmp_path: "is a directory",
        afile / "x.parquet": "is a file, not a folder",
        afile / "deeper" / "x.parquet": "is a file, not a folder",
        Path("/proc/visurf-test.parquet"): "cannot write /proc/visurf-test.parquet",
    }
    for dest, reason in cases.items():
        with pytest.raises(A.DestinationError, match=reason) as e:
            A.check_destination(dest)
        assert "\n" not in str(e.value)
        with pytest.raises(A.DestinationError, match=reason):
            A.write_text_atomically(dest, "never written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert A.check_destination(tmp_path / "a" / "b" / "ok.parquet") == tmp_path / "a" / "b" / "ok.parquet"
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe leaves nothing


@pytest.mark.parametrize("dest", ["dir", "afile/x.parquet", "/proc/visurf-test.parquet"])
def test_data_prep_cli_checks_out_before_converting(tmp_path, capsys, dest):
    (tmp_path / "dir").mkdir()
    (tmp_path / "afile").write_text("x")
    out = dest if dest.startswith("/") else str(tmp_path / dest)
    converted = []

    def convert(i, _):
        converted.append(i)
        return [_row(i)]

    parser = common.make_parser("t", "t", "t")
    rc = common.run_cli(["--out", out, "--quiet"], parser, "synthetic_grounding", lambda a: range(5), convert,
                        lambda a: None)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and converted == []
    assert err[0].startswith("error: --out: ") and out.rstrip("/") in err[0] and err[1] == "(no output written)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dir"] and list((tmp_path / "dir").iterdir()) == []


def test_a_failed_commit_leaves_no_temp_file(tmp_path):
    out = tmp_path / "o.parquet"
    w = common.AtomicParquetWriter(out)
    w.write(_row(0))
    out.mkdir()  # the destination turns into a folder while the rows are written
    (out / "keep").write_text("x")
    with pytest.raises(OSError):
        w.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.parquet"] and out.is_dir()


# --------------------------------------------------------------------------------------------
# Modes: what open(path, "w") would give
# --------------------------------------------------------------------------------------------
def _parquet_writer(path):
    with common.AtomicParquetWriter(path) as w:
        w.write(_row(0))


def _to_sft(path):
    from data_prep import synthetic, to_sft

    src = path.with_name("rl.parquet")
    synthetic.generate("grounding", 2, 0, str(src), image_size=32)
    to_sft.convert(src, path)
    src.unlink()


def _drop_rows(path):
    from data_prep import synthetic
    from verl_ext.visurf.source_check import drop_rows

    src = path.with_name("src.parquet")
    synthetic.generate("grounding", 3, 0, str(src), image_size=32)
    os.replace(drop_rows(str(src), [1]), path)  # (the rename keeps the mode)
    src.unlink()


def _predictions(path):
    from recipe.visurf.evaluate import write_predictions

    write_predictions(path, [{"id": "1"}])


WRITERS = {"write_text_atomically": lambda p: A.write_text_atomically(p, "x"), "AtomicParquetWriter": _parquet_writer,
           "to_sft": _to_sft, "drop_rows": _drop_rows, "evaluate.write_predictions": _predictions}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_new_files_honour_the_umask(tmp_path, umask, writer):
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask(mask)
        out = tmp_path / f"{mask:o}" / "out.parquet"
        out.parent.mkdir()
        WRITERS[writer](out)
        assert _mode(out) == mode, f"{writer} under umask {mask:03o}: {_mode(out):03o}"
        assert [p.name for p in out.parent.iterdir()] == ["out.parquet"]


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    out = tmp_path / "shared.parquet"
    _parquet_writer(out)
    os.chmod(out, 0o640)
    _parquet_writer(out)
    A.write_text_atomically(out, "x")
    assert _mode(out) == 0o640


# --------------------------------------------------------------------------------------------
# SIGKILL at a random point: complete or absent
# --------------------------------------------------------------------------------------------
def _rewrite_text_forever(path: str) -> None:
    version = 0
    while True:
        version += 1
        A.write_text_atomically(path, json.dumps({"version": version, "pad": "v" * 200_000}))


def _rewrite_parquet_forever(path: str) -> None:
    version = 0
    while True:
        version += 1
        with common.AtomicParquetWriter(path, row_group_rows=4) as w:
            for i in range(40):
                w.write(_row(version * 100 + i))


def _check_text(path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["version"] >= 1 and data["pad"] == "v" * 200_000


def _check_parquet(path: Path) -> None:
    table = pq.read_table(path)
    assert table.num_rows == 40 and isinstance(table, pa.Table)


@pytest.mark.parametrize("writer, check", [(_rewrite_text_forever, _check_text),
                                           (_rewrite_parquet_forever, _check_parquet)])
def test_sigkill_at_a_random_point_leaves_the_file_complete_or_absent(tmp_path, writer, check):
    rng = random.Random(0)
    ctx = multiprocessing.get_context("fork")
    out = tmp_path / "product"
    seen_complete = 0
    for attempt in range(6):
        p = ctx.Process(target=writer, args=(str(out),))
        p.start()
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        if out.exists():
            check(out)  # never a partial file
            seen_complete += 1
        leftovers = [n.name for n in tmp_path.iterdir() if n.name != "product"]
        assert all(n.startswith(".product.") and n.endswith(".tmp") for n in leftovers), leftovers  # hidden only
    assert seen_complete >= 1  # the writer got through at least once (the property was exercised)
