"""A segment file shorter than the size in its header is outside damage (issue 12, item 2).

Segments are preallocated and pre-written to the size their header records,
and the writer never shortens one, so no crash can leave a short segment:
whatever cut it lost acknowledged records, and every recovery mode must say so.
"""

from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner

from uringstack.cli.wal import wal as wal_group
from uringstack.wal import Wal, WalConfig, WalCorruptionError
from uringstack.wal.segment import list_segments

CFG = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")


def _log(d: pathlib.Path, n: int = 300) -> list[bytes]:
    data = [os.urandom(900) for _ in range(n)]
    with Wal.open(d, CFG) as wal:
        for x in data:
            wal.append(x)
        assert len(wal.segments()) >= 3
    return data


@pytest.mark.parametrize("size", [4096, 8192, 30_000])
@pytest.mark.parametrize("mode", ["tolerate_tail", "absolute"])
def test_truncated_last_segment_is_corruption(wal_dir: pathlib.Path, size: int, mode: str) -> None:
    _log(wal_dir)
    last = list_segments(wal_dir)[-1][1]
    os.truncate(last, size)
    with pytest.raises(WalCorruptionError) as ei:
        Wal.open(wal_dir, CFG, recovery=mode)
    msg = str(ei.value)
    assert last.name in msg and f"{size} bytes" in msg and "65536" in msg, msg
    assert "corruption" in msg
    # nothing was changed: the file is still short, so a later open still refuses
    assert os.path.getsize(last) == size
    r = CliRunner().invoke(wal_group, ["verify", "--mode", mode, str(wal_dir)])
    assert r.exit_code == 1, r.output
    assert "CORRUPTION" in r.output and f"{size} bytes" in r.output


def test_truncated_older_segment_names_the_size(wal_dir: pathlib.Path) -> None:
    _log(wal_dir)
    second = list_segments(wal_dir)[1][1]
    os.truncate(second, 20_000)
    with pytest.raises(WalCorruptionError, match=r"20000 bytes.*65536"):
        Wal.open(wal_dir, CFG)


def test_point_in_time_keeps_the_intact_prefix_and_never_reuses_silently(wal_dir: pathlib.Path) -> None:
    data = _log(wal_dir)
    first_last, last = list_segments(wal_dir)[-1]
    os.truncate(last, 8192)
    with Wal.open(wal_dir, CFG, recovery="point_in_time") as wal:
        got = [p for _, p in wal.read_from(1)]
        assert wal.recovered.damage is not None and not wal.recovered.damage.torn_tail
        assert "8192 bytes" in wal.recovered.damage.reason
        n = len(got)
        assert got == data[:n] and n >= first_last - 1
        assert wal.append(b"next") == n + 1
    # repaired: the segment is full size again and the log is clean
    assert os.path.getsize(last) == CFG.segment_size_bytes
    with Wal.open(wal_dir, CFG, recovery="absolute") as wal:
        assert [p for _, p in wal.read_from(1)] == [*data[:n], b"next"]
