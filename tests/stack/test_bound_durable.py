"""``FileHandle.bind_write_durable``: the write-ahead log's durable write, checked and bound once.

The bound callable must make every check ``write_durable`` makes, on every
call (a closed handle, a fork()ed child, a negative or misaligned offset),
and report every failed write or flush: a durable write that failed is never
returned as done.  On both backends the host runs (io_uring and the fallback,
whose ``durable_writer`` is bound without the generic ``start_write_durable``).
"""

from __future__ import annotations

import errno
import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

import uringstack.plugins.fallback.backend as fallback_backend
from uringstack.errors import AlignmentError, ForkedChildError, RingClosedError, UringIOError
from uringstack.ring import Batch, forking
from uringstack.ring.buffers import address_of, aligned_buffer
from uringstack.ring.flags import Op
from uringstack.ring.io_backend import SyncMethod
from uringstack.ring.native import ffi
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO, UringPending
from uringstack.wal import Wal, WalConfig, WalFailedError

BS = 4096
CPU = sorted(os.sched_getaffinity(0))[0]


@pytest.fixture
def handle(stack: Stack, tmp_path: pathlib.Path) -> Iterator[FileHandle]:
    with stack.open(tmp_path / "f", create=True, direct=True) as h:
        yield h


def _fail_writes(handle: FileHandle, monkeypatch: pytest.MonkeyPatch, step: str) -> list[int]:
    """Make the next durable write's *step* (``write`` or ``flush``) fail with EIO; count the calls."""
    calls: list[int] = []
    ring = handle.ring
    if ring is not None:
        real_wait = ring.wait

        def wait(batch: Batch) -> list[int]:
            got = list(real_wait(batch))
            calls.append(len(got))
            if step == "write":
                return [-errno.EIO] + [-errno.ECANCELED] * (len(got) - 1)
            return [got[0], -errno.EIO] if len(got) == 2 else got

        monkeypatch.setattr(ring, "wait", wait)
    elif step == "write":

        def pwritev(fd: int, buf: object, offset: int, flags: int = 0) -> int:
            calls.append(1)
            return -errno.EIO

        monkeypatch.setattr(fallback_backend, "_pwritev", pwritev)
    else:

        def sync(fd: int, datasync: bool) -> int:
            calls.append(1)
            return -errno.EIO

        monkeypatch.setattr(fallback_backend, "_sync", sync)
    return calls


@pytest.mark.parametrize("sync", ["dsync", "fdatasync"])
def test_bound_write_writes_and_returns_the_length(handle: FileHandle, sync: SyncMethod) -> None:
    write = handle.bind_write_durable(sync)
    buf = aligned_buffer(2 * BS)
    buf[:] = os.urandom(2 * BS)
    assert write(memoryview(buf), 3 * BS) == 2 * BS
    assert write(buf, 0) == 2 * BS  # not a memoryview: the handle's generic length path
    assert pathlib.Path(handle.path).read_bytes()[3 * BS :] == bytes(buf)


@pytest.mark.parametrize("via", ["bound", "write_durable"])
@pytest.mark.parametrize(("step", "sync"), [("write", "dsync"), ("write", "fdatasync"), ("flush", "fdatasync")])
def test_a_failed_step_is_reported_never_retried(
    handle: FileHandle, monkeypatch: pytest.MonkeyPatch, step: str, sync: SyncMethod, via: str
) -> None:
    """A failed write or flush raises (op named), is issued once and never retried: after a failed
    fdatasync the kernel may have dropped the dirty pages, so the data must count as lost."""
    if via == "bound":
        write = handle.bind_write_durable(sync)
    else:

        def write(buf: memoryview, offset: int) -> int:
            return handle.write_durable(buf, offset, sync=sync)

    calls = _fail_writes(handle, monkeypatch, step)
    with pytest.raises(UringIOError) as ei:
        write(memoryview(aligned_buffer(BS)), 0)
    assert ei.value.errno == errno.EIO and ei.value.op == ("write" if step == "write" else "fdatasync")
    assert len(calls) == 1, f"the failed {step} was retried or never issued"


def test_bound_write_refuses_a_closed_handle(stack: Stack, tmp_path: pathlib.Path) -> None:
    """Bound while open, called after close: refused, and nothing lands in the file that got the fd number."""
    h = stack.open(tmp_path / "f", create=True)
    write = h.bind_write_durable("dsync")
    fd = h.fd
    h.close()
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)
    try:
        assert other == fd, "the test needs the closed handle's descriptor number reused"
        with pytest.raises(RingClosedError):
            write(b"x" * BS, 0)
        assert os.fstat(other).st_size == 0, "a closed handle's bound write landed in another file"
    finally:
        os.close(other)


def test_bound_write_refuses_a_forked_child(handle: FileHandle) -> None:
    write = handle.bind_write_durable("dsync")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(forking, "_generation", forking._generation + 1)  # as after fork(), in the child
        with pytest.raises(ForkedChildError):
            write(memoryview(aligned_buffer(BS)), 0)
    assert os.fstat(handle.fd).st_size == 0


def test_bound_write_checks_offset_and_alignment(handle: FileHandle) -> None:
    write = handle.bind_write_durable("dsync")
    buf = aligned_buffer(2 * BS)
    with pytest.raises(ValueError, match="negative"):
        write(memoryview(buf), -BS)
    with pytest.raises(AlignmentError, match="offset 100 is not a multiple"):
        write(memoryview(buf), 100)
    with pytest.raises(AlignmentError, match="length 1000"):
        write(memoryview(buf)[:1000], 0)
    assert os.fstat(handle.fd).st_size == 0


def test_bind_refuses_an_unknown_sync_method(handle: FileHandle) -> None:
    with pytest.raises(ValueError, match="sync='fsync'"):
        handle.bind_write_durable(cast(Any, "fsync"))


@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_log_stops_after_a_failed_bound_write(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The log's flushes go through its bound writer: a failed write is never acknowledged."""
    with Wal.open(tmp_path / "wal", WalConfig(segment_size_bytes=4 << 20), backend=backend) as wal:
        wal.wait_spare()
        first = wal.append(b"first")
        handle = wal._writer.handle
        assert handle is not None
        calls = _fail_writes(handle, monkeypatch, "write")
        with pytest.raises(WalFailedError) as ei:
            wal.append(b"second")
        assert ei.value.errno == errno.EIO and calls, "the log did not fail on its failed durable write"
        assert wal.durable_lsn == first
        with pytest.raises(WalFailedError):
            wal.append(b"third")
        assert len(calls) == 1, "the log wrote again after a failed durable write"


class _HeldWrite:
    """The io_uring backend's durable write replaced by an op the kernel holds (reads of two
    empty pipes on the same ring, as the write and its flush): it completes when the pipes are
    written (:meth:`feed`), with the results of a complete write and flush."""

    def __init__(self, io: UringFileIO) -> None:
        self.ring = io.ring
        self.pipes = [os.pipe() for _ in range(2)]
        self.buf = bytearray(2 * BS)
        self.pin = ffi.from_buffer(self.buf)

    def start(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> UringPending:
        base = address_of(self.pin)
        batch = self.ring.submit(
            Op.READ, [r for r, _ in self.pipes], addrs=[base, base + BS], lens=[BS, 1], offsets=0,
            keep=[self.pin, self.buf], wait=wait,
        )  # fmt: skip
        return UringPending(self.ring, batch)

    def feed(self) -> None:
        os.write(self.pipes[0][1], b"w" * BS)
        os.write(self.pipes[1][1], b"\0")

    def fed(self) -> bool:
        return bytes(self.buf[:BS]) == b"w" * BS

    def close(self) -> None:
        for r, w in self.pipes:
            os.close(r)
            os.close(w)


@pytest.fixture
def held(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FileHandle, _HeldWrite]]:
    """A handle on the io_uring backend whose bound durable writes hang until fed."""
    with open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off"}) as s:
        h = s.open(tmp_path / "f", create=True)
        assert isinstance(h.io, UringFileIO) and h.ring is not None
        hold = _HeldWrite(h.io)
        monkeypatch.setattr(h.io, "start_write_durable", hold.start)
        h.ring.wait_tick = 0.05
        try:
            yield h, hold
        finally:
            hold.feed()  # whatever the test left in flight completes: the stack closes
            h.close()
            hold.close()


def _close_waits_for(h: FileHandle, hold: _HeldWrite) -> None:
    """close() returns only once the held op completed (fed 0.3 s later), never under it."""
    feeder = threading.Timer(0.3, hold.feed)
    feeder.start()
    t0 = time.monotonic()
    h.close()
    assert hold.fed(), "close() returned while the kernel still held the durable write"
    assert time.monotonic() - t0 >= 0.25
    feeder.join()


@pytest.mark.timeout(30)
def test_a_bound_durable_write_that_outlives_its_raising_call_is_waited_for_by_close(
    held: tuple[FileHandle, _HeldWrite],
) -> None:
    """io_uring backend: the wait of a bound durable write gives up (wait_timeout) while the
    kernel still holds the op; the handle keeps tracking it, so close() waits for it."""
    h, hold = held
    assert h.ring is not None
    h.ring.wait_timeout = 0.3
    write = h.bind_write_durable("fdatasync")
    with pytest.raises(UringIOError) as err:
        write(b"x" * BS, 0)
    assert err.value.errno == errno.ETIMEDOUT
    assert h.ring.inflight == 2
    _close_waits_for(h, hold)


@pytest.mark.timeout(30)
def test_close_waits_for_a_bound_durable_write_in_its_call(held: tuple[FileHandle, _HeldWrite]) -> None:
    """io_uring backend: another thread's close() while a bound durable write waits in its call
    waits for it (the write returns its length) instead of closing the descriptor under it."""
    h, hold = held
    assert h.ring is not None
    h.ring.wait_timeout = 10.0
    write = h.bind_write_durable("fdatasync")
    got: list[object] = []
    writer = threading.Thread(target=lambda: got.append(write(b"x" * BS, 0)), daemon=True)
    writer.start()
    deadline = time.monotonic() + 5
    while h.ring.inflight < 2:
        assert time.monotonic() < deadline, "the held write never reached the ring"
        time.sleep(0.01)
    _close_waits_for(h, hold)
    writer.join(5)
    assert got == [BS]
