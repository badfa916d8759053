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
