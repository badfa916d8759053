"""What reaches the kernel, in which order and with which flags: every durability
step of the WAL's I/O path (a FileHandle's ``write_durable``) has a test that
fails when the step is removed.

io_uring: the SQEs on the stack's storage ring, recorded by
:class:`~uringstack.wal.faults.RecordingRing`.  Fallback: the syscalls of the
fallback plugin (``_pwritev`` with its flags, ``_sync``), recorded in order.
"""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

import uringstack.plugins.fallback.backend as fallback_backend
from tests.requires import skip_without
from uringstack.stack import Stack, open_stack
from uringstack.wal import Wal, WalConfig, WalFailedError
from uringstack.wal.faults import RecordingRing

from .conftest import _URING_SKIP

CFG = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024)


@pytest.fixture
def uring_stack() -> Iterator[Stack]:
    if _URING_SKIP:
        skip_without(_URING_SKIP)
    # (iopoll off: on a device with poll queues, as in the NVMe VM, the log's writes would go
    # to the IOPOLL ring and only its flushes to the storage ring recorded here)
    overrides = {"core.backend": "uring", "core.cores": [0], "sqpoll.mode": "off", "iopoll.mode": "off"}
    with open_stack(overrides=overrides) as stack:
        yield stack


@pytest.fixture
def ring(uring_stack: Stack) -> Iterator[RecordingRing]:
    rec = RecordingRing().install(uring_stack.workers[0].rings["storage"])
    try:
        yield rec
    finally:
        rec.remove()


def test_uring_fdatasync_is_linked_to_its_write(wal_dir: pathlib.Path, uring_stack: Stack, ring: RecordingRing) -> None:
    from uringstack.ring.flags import FSYNC_DATASYNC, SqeFlag

    with Wal.open(wal_dir, CFG, stack=uring_stack, sync="fdatasync") as wal:
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


def test_uring_dsync_write_carries_rwf_dsync(wal_dir: pathlib.Path, uring_stack: Stack, ring: RecordingRing) -> None:
    with Wal.open(wal_dir, CFG, stack=uring_stack, sync="dsync") as wal:
        for _ in range(3):
            wal.append(b"x" * 100)
    assert len(ring.submissions) >= 3
    for sub in ring.submissions:
        assert [op.opcode for op in sub] == ["WRITE"]
        assert sub[0].op_flags & os.RWF_DSYNC and sub[0].result == sub[0].length


def test_uring_fdatasync_error_fails_the_log(wal_dir: pathlib.Path, uring_stack: Stack, ring: RecordingRing) -> None:
    """An fdatasync error returned in a CQE must fail the log, never be acknowledged or retried."""
    ring.results[("FSYNC", 2)] = -errno.EIO
    with Wal.open(wal_dir, CFG, stack=uring_stack, sync="fdatasync") as wal:
        assert wal.append(b"one") == 1
        assert wal.append(b"two") == 2
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"three")
        assert ei.value.errno == errno.EIO and ei.value.op == "fdatasync", str(ei.value)
        assert wal.durable_lsn == 2
        with pytest.raises(WalFailedError):
            wal.append(b"four")
    assert len(ring.submissions) == 3  # not retried, nothing after the failure


def test_uring_write_error_fails_the_log(wal_dir: pathlib.Path, uring_stack: Stack, ring: RecordingRing) -> None:
    ring.results[("WRITE", 1)] = -errno.ENOSPC
    with Wal.open(wal_dir, CFG, stack=uring_stack, sync="dsync") as wal:
        assert wal.append(b"one") == 1
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"two")
        assert ei.value.errno == errno.ENOSPC and ei.value.op == "write"


@pytest.mark.parametrize("sync", ["dsync", "fdatasync"])
def test_uring_short_write_continues_with_a_fresh_durable_write(
    wal_dir: pathlib.Path, uring_stack: Stack, ring: RecordingRing, sync: str
) -> None:
    """A short write cancels its linked flush (-ECANCELED); the rest is written with a new
    link (fdatasync) or as another RWF_DSYNC write (dsync)."""
    from uringstack.ring.flags import SqeFlag

    ring.results[("WRITE", 0)] = 4096
    if sync == "fdatasync":
        ring.results[("FSYNC", 0)] = -errno.ECANCELED
    with Wal.open(wal_dir, CFG, stack=uring_stack, sync=sync) as wal:
        assert wal.append(os.urandom(6000)) == 1  # an 8 KiB write
    first, second = ring.submissions[0], ring.submissions[1]
    assert first[0].length == 8192 and second[0].length == 4096
    assert second[0].offset == first[0].offset + 4096
    if sync == "fdatasync":
        assert second[0].sqe_flags & SqeFlag.IO_LINK and [op.opcode for op in second] == ["WRITE", "FSYNC"]
    else:
        assert [op.opcode for op in second] == ["WRITE"] and second[0].op_flags & os.RWF_DSYNC


class Syscalls:
    """The fallback's durable-write primitives, recorded in order, with chosen results."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, results: dict[tuple[str, int], int] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []  # (name, flags)
        self.results = dict(results or {})
        real_pwritev, real_sync = fallback_backend._pwritev, fallback_backend._sync

        def pwritev(fd: int, buf: Any, offset: int, flags: int = 0) -> int:
            k = sum(1 for c in self.calls if c[0] == "pwritev")
            self.calls.append(("pwritev", flags))
            got = self.results.get(("pwritev", k))
            if got is not None and got >= 0:  # a short write: only that much lands
                return real_pwritev(fd, memoryview(buf)[:got], offset, flags)
            return got if got is not None else real_pwritev(fd, buf, offset, flags)

        def sync(fd: int, datasync: bool) -> int:
            k = sum(1 for c in self.calls if c[0] == "fdatasync")
            self.calls.append(("fdatasync" if datasync else "fsync", 0))
            res = real_sync(fd, datasync)
            return self.results.get(("fdatasync", k), res)

        monkeypatch.setattr(fallback_backend, "_pwritev", pwritev)
        monkeypatch.setattr(fallback_backend, "_sync", sync)


@pytest.fixture
def fallback_cfg() -> WalConfig:
    return WalConfig(**{**CFG.model_dump(), "backend": "fallback"})


def test_fallback_every_flush_ends_with_fdatasync(
    wal_dir: pathlib.Path, fallback_cfg: WalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Syscalls(monkeypatch)
    with Wal.open(wal_dir, fallback_cfg, sync="fdatasync") as wal:
        for _ in range(4):
            wal.append(b"y" * 500)
    assert rec.calls == [("pwritev", 0), ("fdatasync", 0)] * 4


def test_fallback_dsync_writes_carry_rwf_dsync(
    wal_dir: pathlib.Path, fallback_cfg: WalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Syscalls(monkeypatch)
    with Wal.open(wal_dir, fallback_cfg, sync="dsync") as wal:
        for _ in range(3):
            wal.append(b"y" * 500)
    assert rec.calls == [("pwritev", os.RWF_DSYNC)] * 3


def test_fallback_fdatasync_error_fails_the_log_never_retried(
    wal_dir: pathlib.Path, fallback_cfg: WalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Syscalls(monkeypatch, {("fdatasync", 1): -errno.EIO})
    with Wal.open(wal_dir, fallback_cfg, sync="fdatasync") as wal:
        assert wal.append(b"one") == 1
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"two")
        assert ei.value.errno == errno.EIO and ei.value.op == "fdatasync", str(ei.value)
        assert wal.durable_lsn == 1
        with pytest.raises(WalFailedError):
            wal.append(b"three")
    assert rec.calls == [("pwritev", 0), ("fdatasync", 0)] * 2


@pytest.mark.parametrize("sync", ["dsync", "fdatasync"])
def test_fallback_short_write_is_completed_then_flushed(
    wal_dir: pathlib.Path, fallback_cfg: WalConfig, monkeypatch: pytest.MonkeyPatch, sync: str
) -> None:
    rec = Syscalls(monkeypatch, {("pwritev", 0): 4096})
    data = os.urandom(6000)
    with Wal.open(wal_dir, fallback_cfg, sync=sync) as wal:
        assert wal.append(data) == 1
    if sync == "fdatasync":  # no flush after the short write: it would cover only part
        assert rec.calls == [("pwritev", 0), ("pwritev", 0), ("fdatasync", 0)]
    else:
        assert rec.calls == [("pwritev", os.RWF_DSYNC)] * 2
    with Wal.open(wal_dir, fallback_cfg) as wal:
        assert list(wal.read_from(1)) == [(1, data)]
