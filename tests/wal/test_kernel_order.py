"""What reaches the kernel, in which order and with which flags: every durability
step of the WAL's I/O path has a test that fails when the step is removed."""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Iterator

import pytest

from uringstack.wal import Wal, WalConfig, WalFailedError
from uringstack.wal.faults import RecordingRing
from uringstack.wal.io import PosixBackend, UringBackend

CFG = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024)


@pytest.fixture
def ring(backend_name: str) -> Iterator[RecordingRing]:
    if backend_name != "uring":
        pytest.skip("io_uring path only")
    from uringstack.ring import Ring

    r = Ring(entries=8)
    try:
        yield RecordingRing(r)
    finally:
        r.close()


def test_uring_fdatasync_is_linked_to_its_write(wal_dir: pathlib.Path, ring: RecordingRing) -> None:
    from uringstack.flags import FSYNC_DATASYNC, SqeFlag

    be = UringBackend(ring=ring, sync="fdatasync")
    with Wal.open(wal_dir, CFG, backend=be) as wal:
        for i in range(5):
            wal.append(os.urandom(3000 + i))
    assert len(ring.submissions) >= 5
    for sub in ring.submissions:
        assert [op.opcode for op in sub] == ["WRITE", "FSYNC"], sub
        write, flush = sub
        # io_uring does not order SQEs: without the link the flush may run first
        assert write.sqe_flags & SqeFlag.IO_LINK, sub
        assert not flush.sqe_flags & SqeFlag.IO_LINK, sub  # the chain ends at the flush
        assert flush.op_flags & FSYNC_DATASYNC and flush.fd == write.fd
        assert write.result == write.length and flush.result == 0, sub


def test_uring_dsync_write_carries_rwf_dsync(wal_dir: pathlib.Path, ring: RecordingRing) -> None:
    be = UringBackend(ring=ring, sync="dsync")
    with Wal.open(wal_dir, CFG, backend=be) as wal:
        for _ in range(3):
            wal.append(b"x" * 100)
    assert len(ring.submissions) >= 3
    for sub in ring.submissions:
        assert [op.opcode for op in sub] == ["WRITE"]
        assert sub[0].op_flags & os.RWF_DSYNC and sub[0].result == sub[0].length


def test_uring_fdatasync_error_fails_the_log(wal_dir: pathlib.Path, ring: RecordingRing) -> None:
    """An fdatasync error returned in a CQE must fail the log, never be acknowledged or retried."""
    ring.results[("FSYNC", 2)] = -errno.EIO
    be = UringBackend(ring=ring, sync="fdatasync")
    with Wal.open(wal_dir, CFG, backend=be) as wal:
        assert wal.append(b"one") == 1
        assert wal.append(b"two") == 2
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"three")
        assert ei.value.errno == errno.EIO and ei.value.op == "fdatasync", str(ei.value)
        assert wal.durable_lsn == 2
        with pytest.raises(WalFailedError):
            wal.append(b"four")
    assert len(ring.submissions) == 3  # not retried, nothing after the failure


def test_uring_write_error_fails_the_log(wal_dir: pathlib.Path, ring: RecordingRing) -> None:
    ring.results[("WRITE", 1)] = -errno.ENOSPC
    be = UringBackend(ring=ring, sync="dsync")
    with Wal.open(wal_dir, CFG, backend=be) as wal:
        assert wal.append(b"one") == 1
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"two")
        assert ei.value.errno == errno.ENOSPC and ei.value.op == "write"


def test_uring_short_write_continues_with_a_fresh_linked_flush(wal_dir: pathlib.Path, ring: RecordingRing) -> None:
    """A short write cancels its linked flush (-ECANCELED); the rest is written with a new link."""
    from uringstack.flags import SqeFlag

    ring.results[("WRITE", 0)] = 4096
    ring.results[("FSYNC", 0)] = -errno.ECANCELED
    be = UringBackend(ring=ring, sync="fdatasync")
    with Wal.open(wal_dir, CFG, backend=be) as wal:
        assert wal.append(os.urandom(6000)) == 1  # an 8 KiB write
    first, second = ring.submissions[0], ring.submissions[1]
    assert first[0].length == 8192 and second[0].length == 4096
    assert second[0].offset == first[0].offset + 4096
    assert second[0].sqe_flags & SqeFlag.IO_LINK and [op.opcode for op in second] == ["WRITE", "FSYNC"]


class _RecordingPosix(PosixBackend):
    def __init__(self) -> None:
        super().__init__("fdatasync")
        self.calls: list[str] = []

    def _pwrite(self, fd: int, buf: memoryview, offset: int) -> int:
        self.calls.append("pwrite")
        return super()._pwrite(fd, buf, offset)

    def _fdatasync(self, fd: int) -> None:
        self.calls.append("fdatasync")
        super()._fdatasync(fd)


def test_posix_every_flush_ends_with_fdatasync(wal_dir: pathlib.Path) -> None:
    be = _RecordingPosix()
    with Wal.open(wal_dir, CFG, backend=be) as wal:
        for _ in range(4):
            wal.append(b"y" * 500)
    assert be.calls == ["pwrite", "fdatasync"] * 4
