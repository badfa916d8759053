"""A segment the log writes with O_DIRECT keeps no pages in the page cache.

An O_DIRECT write over cached pages must write back and invalidate them (before
and after the write) inside the durable write's syscall; the buffered zero-fill
of a new segment, recovery's reads and the tail read would leave every block of
the segment cached, so every flush paid for it (fio, the bench's reference,
drops its file's cache before a job).  The pages are clean when dropped (the
zero-fill was synced), so nothing written is lost.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

from tests.requires import skip_without
from uringstack.wal import Wal, WalConfig

CFG = WalConfig(segment_size_bytes=1 << 20, max_batch_bytes=64 << 10, backend="fallback")


def _cached_bytes(path: pathlib.Path) -> int:
    fincore = shutil.which("fincore")
    if fincore is None:
        skip_without("fincore (util-linux), which counts a file's cached pages")
    out = subprocess.run(
        [fincore, "--bytes", "--noheadings", "--raw", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.split()[0])


def _segments(d: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in d.iterdir() if p.suffix in (".wal", ".tmp"))


def test_new_and_spare_segments_are_not_cached(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, CFG) as wal:
        if not wal.direct_io:
            skip_without("O_DIRECT on the test directory's file system (tmpfs refuses it)")
        for _ in range(20):
            wal.append(b"r" * 4096)
        assert wal._writer.wait_spare(30)
        files = _segments(wal_dir)
        assert any(p.suffix == ".tmp" for p in files) and any(p.suffix == ".wal" for p in files), files
        assert {p.name: _cached_bytes(p) for p in files} == {p.name: 0 for p in files}


def test_reopened_segment_is_not_cached(wal_dir: pathlib.Path) -> None:
    with Wal.open(wal_dir, CFG) as wal:
        for _ in range(20):
            wal.append(b"r" * 1000)
    active = [p for p in _segments(wal_dir) if p.suffix == ".wal"][-1]
    with open(active, "rb") as f:  # as recovery does, and more: the whole file
        while f.read(1 << 20):
            pass
    assert _cached_bytes(active) > 0
    with Wal.open(wal_dir, CFG) as wal:  # recovery reads the segment, then the log writes it O_DIRECT
        if not wal.direct_io:
            skip_without("O_DIRECT on the test directory's file system (tmpfs refuses it)")
        assert _cached_bytes(active) == 0
        wal.append(b"r" * 1000)
        assert len(list(wal.read_from(1))) == 21
