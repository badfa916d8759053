"""Error messages say what is really wrong (issue 12, item 13)."""

from __future__ import annotations

import errno
import os
import pathlib

import pytest

from uringstack.wal import Wal, WalConfig, WalCorruptionError, WalFailedError
from uringstack.wal.faults import FaultPlan, FaultyIO
from uringstack.wal.segment import list_segments, segment_name

CFG = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")


def _log(d: pathlib.Path) -> None:
    with Wal.open(d, CFG) as wal:
        for _ in range(200):
            wal.append(os.urandom(900))


def test_renamed_segment_names_file_and_header(wal_dir: pathlib.Path) -> None:
    _log(wal_dir)
    first, path = list_segments(wal_dir)[-1]
    os.rename(path, path.with_name(segment_name(first + 5)))
    with pytest.raises(WalCorruptionError) as ei:
        Wal.open(wal_dir, CFG)
    msg = str(ei.value)
    assert f"file name says LSN {first + 5}" in msg and f"header says LSN {first}" in msg, msg
    assert "expected" not in msg or f"expected {first}," not in msg


def test_missing_segment_says_which_lsns(wal_dir: pathlib.Path) -> None:
    _log(wal_dir)
    segs = list_segments(wal_dir)
    os.unlink(segs[1][1])
    with pytest.raises(WalCorruptionError) as ei:
        Wal.open(wal_dir, CFG)
    msg = str(ei.value)
    assert f"LSNs {segs[1][0]}..{segs[2][0] - 1} are missing" in msg, msg


@pytest.mark.parametrize("sync", ["fdatasync"])
def test_fdatasync_error_names_fdatasync(wal_dir: pathlib.Path, sync: str) -> None:
    be = FaultyIO(FaultPlan(sync_errors={1: errno.EIO}))
    with Wal.open(wal_dir, CFG, sync=sync, wrap_io=be) as wal:
        wal.append(b"one")
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"two")
    assert ei.value.errno == errno.EIO
    assert ei.value.op == "fdatasync" and "WAL failed: fdatasync: Input/output error" in str(ei.value), str(ei.value)


def test_write_error_names_the_write(wal_dir: pathlib.Path) -> None:
    be = FaultyIO(FaultPlan(write_errors={0: errno.ENOSPC}))
    with Wal.open(wal_dir, CFG, wrap_io=be) as wal, pytest.raises(WalFailedError) as ei:
        wal.append(b"one")
    assert ei.value.op == "write" and ei.value.errno == errno.ENOSPC, str(ei.value)


def test_a_segment_that_cannot_be_mapped_is_named(wal_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a small RLIMIT_AS the open failed with a bare "[Errno 12] Cannot allocate memory"
    (session 32): recovery maps each segment whole to scan it."""
    import uringstack.wal.recovery as recovery

    _log(wal_dir)

    def no_memory(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(recovery.mmap, "mmap", no_memory)
    with pytest.raises(OSError) as ei:
        Wal.open(wal_dir, CFG)
    assert ei.value.errno == errno.ENOMEM
    assert ei.value.filename == str(list_segments(wal_dir)[0][1]), str(ei.value)
    assert "RLIMIT_AS" in str(ei.value)
