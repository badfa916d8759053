from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner

from uringstack.cli.wal import wal as wal_group
from uringstack.wal import Wal
from uringstack.wal.segment import list_segments


def test_verify_and_dump(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, backend="fallback") as wal:
        for i in range(20):
            wal.append(f"r{i}".encode())
    r = CliRunner().invoke(wal_group, ["verify", str(wal_dir)])
    assert r.exit_code == 0, r.output
    assert "records: 20  last LSN: 20" in r.output
    r = CliRunner().invoke(wal_group, ["dump", str(wal_dir), "--from", "19", "--json"])
    assert [json.loads(x)["lsn"] for x in r.output.splitlines()] == [19, 20]
    seg = list_segments(wal_dir)[0][1]
    with open(seg, "r+b") as f:
        f.seek(4096 + 3)
        f.write(b"\xff")
    # within reach of the last write this could be a torn tail: passes tolerate_tail...
    r = CliRunner().invoke(wal_group, ["verify", str(wal_dir)])
    assert r.exit_code == 0 and "torn tail" in r.output
    # ...but not absolute consistency
    r = CliRunner().invoke(wal_group, ["verify", "--mode", "absolute", str(wal_dir)])
    assert r.exit_code == 1
    assert "record checksum mismatch" in r.output


def test_verify_refuses_a_directory_that_is_not_a_wal(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for d in (empty, pathlib.Path("/etc")):
        for cmd in ("verify", "dump"):
            r = CliRunner().invoke(wal_group, [cmd, str(d)])
            assert r.exit_code == 2, (cmd, d, r.output)
            assert "not a WAL directory" in r.output and str(d) in r.output
            assert len(r.output.strip().splitlines()) == 1, r.output


def test_verify_says_what_a_point_in_time_open_would_do(wal_dir: pathlib.Path) -> None:
    """Damage in the oldest of several segments: ``verify --mode point_in_time`` passes, and
    says that the open ends the log there and sets the later segments aside (it used to say
    "would cut the tail" for an open that dropped 236 of 240 records)."""
    with Wal.open(wal_dir, backend="fallback", segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024) as wal:
        while len(wal.segments()) < 4:
            wal.append(b"r" * 1000)
    segs = list_segments(wal_dir)
    with open(segs[0][1], "r+b") as f:
        f.seek(4096 + 4 * 1016 + 20)  # inside record 5's payload
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    r = CliRunner().invoke(wal_group, ["verify", "--mode", "point_in_time", str(wal_dir)])
    assert r.exit_code == 0, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("ok under point_in_time: opening the log would end it at LSN 4 "), r.output
    assert "may have been acknowledged" in last and "torn" not in last
    assert f"set aside {len(segs) - 1} segment(s) past the damage" in last
    with Wal.open(wal_dir, backend="fallback", recovery="point_in_time") as wal:
        assert wal.durable_lsn == 4
    assert len(list(wal_dir.glob("*.discarded"))) == len(segs) - 1


def test_verify_says_a_torn_tail_is_cut(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, backend="fallback") as wal:
        for i in range(5):
            wal.append(f"r{i}".encode())
    seg = list_segments(wal_dir)[0][1]
    with open(seg, "r+b") as f:
        f.seek(4096 + 4 * 24 + 3)  # the last record's header
        f.write(b"\xff")
    r = CliRunner().invoke(wal_group, ["verify", str(wal_dir)])
    assert r.exit_code == 0, r.output
    last = r.output.strip().splitlines()[-1]
    assert last == (
        "ok under tolerate_tail: opening the log would end it at LSN 4 (cutting its torn last write: "
        "unacknowledged if a crash tore it; damage there looks the same)"
    ), r.output
