"""data_prep.common: 840-frame geometry, mask -> box/point, JSON/image errors, the atomic
streaming writer (exceptions, SIGTERM, SIGKILL), determinism across --workers."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep import common, synthetic
from data_prep.common import AtomicParquetWriter, DataPrepError, RowError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_to_frame_rule_and_clamp():
    assert common.to_frame(10, 100) == int(10 * 840 / 100 + 0.5) == 84
    assert common.to_frame(29, 100) == 244  # 243.6 + 0.5
    assert common.to_frame(1999, 2000) == 839  # 839.58 + 0.5 -> 840 clamped to the last pixel
    assert common.to_frame(-3, 100) == 0
    assert common.make_object([0, 0, 99, 49], [50, 25], 100, 50) == {"bbox_2d": [0, 0, 832, 823], "point_2d": [420, 420]}


def test_mask_box_point_inside_and_extent():
    m = np.zeros((50, 100), bool)
    m[10:20, 10:30] = True
    assert common.mask_box_point(m) == ([10, 10, 29, 19], [14, 14])
    # a ring-like L shape: the point must be a mask pixel, not the box centre
    m = np.zeros((40, 40), bool)
    m[0:40, 0:8] = True
    m[32:40, 0:40] = True
    box, (px, py) = common.mask_box_point(m)
    assert box == [0, 0, 39, 39] and m[py, px]
    assert common.mask_box_point(np.zeros((5, 5), bool)) is None
    # a mask touching the image border: the border counts as boundary
    m = np.ones((10, 10), bool)
    assert common.mask_box_point(m)[1] == [4, 4]


def test_components_reading_order():
    m = np.zeros((30, 30), bool)
    m[20:25, 0:5] = True
    m[0:3, 20:29] = True
    comps = common.mask_components(m)
    assert [common.mask_box_point(c)[0] for c in comps] == [[20, 0, 28, 2], [0, 20, 4, 24]]


def test_check_inside_message():
    common.check_inside([0, 0, 100.5, 50], 100, 50, "r1", "polygon")  # sub-pixel overshoot is fine
    with pytest.raises(RowError) as e:
        common.check_inside([0, 0, 103, 10], 100, 50, "ref 7", "polygon of annotation 3")
    assert e.value.reason == "coords_outside_image"
    assert str(e.value) == "polygon of annotation 3 of record ref 7: coordinate (103, 10) outside the 100x50 image"


def test_read_json_errors_and_cp1252(tmp_path):
    p = tmp_path / "a.json"
    p.write_bytes('{"text": ["caf\u00e9"]}'.encode("cp1252"))
    assert common.read_json(str(p)) == {"text": ["café"]}
    p.write_text('{"a": [1,}')
    with pytest.raises(DataPrepError, match=r"malformed JSON in .*a\.json: .* \(line 1, column 10\)$"):
        common.read_json(str(p))
    p.write_text('{"a": "x\n}')  # json's message ends in "at": "Invalid control character at"
    with pytest.raises(DataPrepError) as e:
        common.read_json(str(p))
    assert str(e.value).endswith(": Invalid control character at (line 1, column 9)") and " at at " not in str(e.value)
    with pytest.raises(RowError, match=r"a\.json \(record rec9\)") as e:
        common.read_json(str(p), fatal=False, record="rec9")
    assert e.value.reason == "malformed_json"
    with pytest.raises(RowError, match="missing file: .*nope.json") as e:
        common.read_json(str(tmp_path / "nope.json"), fatal=False)


def test_open_image_errors(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(RowError, match=r"unreadable image .*x\.jpg \(record r1\)") as e:
        common.open_image(str(bad), "r1")
    assert e.value.reason == "unreadable_image"
    with pytest.raises(RowError, match=r"missing image file: .*y\.jpg \(record r2\)"):
        common.open_image(str(tmp_path / "y.jpg"), "r2")


def _row(i, nbytes=1000):
    return common.build_row(data_source="synthetic_grounding", question=f"q{i}", image_bytes=b"x" * nbytes,
                            ground_truth="[]", row_id=str(i), split="train", width=10, height=10)


def test_writer_row_groups_and_exception_leaves_nothing(tmp_path):
    out = tmp_path / "o.parquet"
    with AtomicParquetWriter(out, row_group_rows=4, row_group_bytes=2500) as w:
        for i in range(10):
            w.write(_row(i))
    meta = pq.ParquetFile(out).metadata
    # the byte bound (3 x 1000 B >= 2500 B) flushes before the row bound: groups of 3, 3, 3, 1
    assert [meta.row_group(k).num_rows for k in range(meta.num_row_groups)] == [3, 3, 3, 1]
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError), AtomicParquetWriter(out, row_group_rows=2) as w:
        for i in range(7):
            w.write(_row(i))
            if i == 5:
                raise RuntimeError("boom mid-stream")
    assert out.read_bytes() == b"previous"  # untouched
    assert sorted(os.listdir(tmp_path)) == ["o.parquet"]  # no temp leftovers


def test_strict_error_mid_stream_leaves_no_file(tmp_path):
    out = tmp_path / "s.parquet"

    def convert(i, _):
        if i == 37:
            raise RowError("bad", f"record {i} is bad")
        return [_row(i)]

    with pytest.raises(RowError, match="record 37"):
        common.convert_all(data_source="synthetic_grounding", records=range(50), convert=convert, opts=None,
                           out=str(out), strict=True, progress=False, row_group_rows=8)
    assert os.listdir(tmp_path) == []
    s = common.convert_all(data_source="synthetic_grounding", records=range(50), convert=convert, opts=None,
                           out=str(out), strict=False, progress=False, row_group_rows=8)
    assert (s.rows, dict(s.skipped)) == (49, {"bad": 1})
    assert pq.read_table(out).column("extra_info").to_pylist()[40]["index"] == 40


def _slow_convert(i, ready):
    if i == 20:
        ready.set()
    if i >= 20:
        time.sleep(0.5)
    return [_row(i, 100)]


def _slow_cli(out, ready):
    """Child process: a CLI run that stalls after 20 rows (row groups of 8 already flushed)."""
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the child
    # Ctrl-C as in a terminal: a shell starts background jobs with SIGINT ignored (POSIX, no job control),
    # and a child forked from a pytest started that way (CI scripts, nohup) would inherit SIG_IGN and never stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = common.make_parser("t", "t", "t")
    rc = common.run_cli(["--out", out, "--quiet", "--workers", "2"], parser, "synthetic_grounding",
                        lambda a: range(1000), _slow_convert, lambda a: ready)
    os._exit(rc)


def test_killed_cli_leaves_no_output(tmp_path, monkeypatch):
    """SIGTERM / SIGINT / SIGKILL mid-write (after row groups were flushed, worker pool
    running): never an output file; TERM/INT also remove the temp file and exit 130."""
    import multiprocessing

    monkeypatch.setattr(common, "ROW_GROUP_ROWS", 8)
    ctx = multiprocessing.get_context("fork")
    procs = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        d = tmp_path / sig.name
        d.mkdir()
        ready = ctx.Event()
        p = ctx.Process(target=_slow_cli, args=(str(d / "k.parquet"), ready))
        p.start()
        procs[sig] = (d, p, ready)
    for sig, (d, p, ready) in procs.items():
        assert ready.wait(30)
    time.sleep(0.3)
    for sig, (d, p, ready) in procs.items():
        os.kill(p.pid, sig)
    for sig, (d, p, ready) in procs.items():
        p.join(120)  # a loaded host (CPU steal) can take > 30 s to stop a worker pool; a hang still fails
        left = os.listdir(d)
        assert "k.parquet" not in left
        if sig == signal.SIGKILL:
            assert p.exitcode == -signal.SIGKILL and all(n.startswith(".k.parquet.") for n in left)
        else:
            assert p.exitcode == 130 and left == []


def test_workers_do_not_change_output(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    synthetic.generate("grounding", 24, 3, str(a), image_size=112)
    synthetic.generate("grounding", 24, 3, str(b), image_size=112, workers=2)
    assert pq.read_table(a).equals(pq.read_table(b))
    assert a.read_bytes() == b.read_bytes()


def test_bounded_window_does_not_drain_input():
    consumed = []

    def gen():
        for i in range(1000):
            consumed.append(i)
            yield i

    it = common.ordered_map(_square, None, gen(), workers=2, window=6)
    assert next(it) == (True, [0])
    time.sleep(0.2)
    assert len(consumed) <= 8
    it.close()


def _square(i, _):
    return [i * i]
