"""An op the kernel cancelled on its own (``-ECANCELED`` for an op that never ran) is run
again by the handle, a bounded number of times, on every path of the public API.

Why it happens (docs/api.md, "An op the kernel cancelled on its own"): io_uring's io-wq
cannot create the worker thread an op needs while a signal is pending in the submitting
thread, and Debian's 5.10, 6.1 and 6.12 kernels then cancel the queued ops.  The real
thing is reproduced in tests/ring/test_iowq_signal_cancel.py; here each backend's start
functions report the cancellation (a fault injected at the backend's boundary), so each
path's rerun, its bound and its exceptions are checked on every backend and kernel.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from uringstack.errors import UringIOError
from uringstack.ring.pending import CompletedPending, Pending
from uringstack.stack import Stack
from uringstack.stack.handle import KERNEL_CANCEL_RERUNS, FileHandle

DATA = bytes(range(256)) * 64  # 16 KiB
CANCELLED = -errno.ECANCELED


def _signals_held() -> bool:
    """Whether this thread blocks signals now (SIGINT stands for all of them)."""
    return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])


class Cancels:
    """A backend start function whose first *times* calls report every op ``-ECANCELED``
    (the kernel cancelled them before they ran); later calls run the real one.  ``held``:
    per call, whether it was made with the thread's signals blocked."""

    def __init__(self, real: Callable[..., Pending], times: int, ops: Callable[..., int]) -> None:
        self.real, self.left, self.ops = real, times, ops
        self.calls = 0
        self.held: list[bool] = []

    def __call__(self, *args: Any, wait: bool = False) -> Pending:
        self.calls += 1
        self.held.append(_signals_held())
        if self.left > 0:
            self.left -= 1
            return CompletedPending([CANCELLED] * self.ops(*args))
        return self.real(*args, wait=wait)


def _cancel(monkeypatch: pytest.MonkeyPatch, h: FileHandle, name: str, times: int) -> Cancels:
    """Make *h*'s backend's *name* (``start_rw``, ``start_sync``, ``start_write_durable``)
    report its first *times* calls cancelled; every op of the handle goes through it."""
    ops: dict[str, Callable[..., int]] = {
        "start_rw": lambda write, offsets, buffers: len(offsets),
        "start_sync": lambda datasync: 1,
        "start_write_durable": lambda offset, buf, sync: 2 if sync == "fdatasync" else 1,
    }
    fake = Cancels(getattr(h.io, name), times, ops[name])
    monkeypatch.setattr(h.io, name, fake)
    # the backends' shortcuts around the start functions (a waited single op, a bound
    # durable write): the tests go through the start functions alone
    monkeypatch.setattr(h, "_one", None)
    monkeypatch.setattr(h.io, "durable_writer", None, raising=False)
    return fake


@pytest.fixture
def h(stack: Stack, tmp_path: pathlib.Path) -> Any:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with stack.open(path, direct=False) as handle:
        yield handle


def _read_many(h: FileHandle) -> None:
    bufs = [bytearray(4096), bytearray(4096)]
    assert h.read_many([0, 8192], bufs) == [4096, 4096]
    assert bytes(bufs[0]) == DATA[:4096] and bytes(bufs[1]) == DATA[8192:12288]


def _read_into(h: FileHandle) -> None:
    buf = bytearray(4096)
    assert h.read_into(buf, 4096) == 4096 and bytes(buf) == DATA[4096:8192]


def _write_many(h: FileHandle) -> None:
    assert h.write_many([0, 4096], [b"a" * 4096, b"b" * 4096]) == [4096, 4096]
    assert pathlib.Path(h.path).read_bytes()[:8192] == b"a" * 4096 + b"b" * 4096


def _read_many_async(h: FileHandle) -> None:
    bufs = [bytearray(4096)]
    assert asyncio.run(h.read_many_async([4096], bufs)) == [4096]
    assert bytes(bufs[0]) == DATA[4096:8192]


RW_CALLS: dict[str, Callable[[FileHandle], None]] = {
    "read_many": _read_many,
    "read_into": _read_into,
    "write_many": _write_many,
}


@pytest.mark.parametrize("call", sorted(RW_CALLS))
def test_reads_and_writes_the_kernel_cancelled_are_run_again(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    fake = _cancel(monkeypatch, h, "start_rw", 2)
    RW_CALLS[call](h)
    assert fake.left == 0  # the two cancellations were met, and the calls succeeded after them
    # each rerun submitted with the thread's signals blocked (a pending one fails the
    # kernel's worker creation again), the first run and the mask afterwards not
    assert fake.held[0] is False and len(fake.held) >= 3 and all(fake.held[1:]) and not _signals_held()


def test_an_awaited_batch_the_kernel_cancelled_is_run_again(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    if h.backend == "uring":
        # (io_uring's awaited batches go through the loop's coalescer, not start_rw: the
        # real kernel's cancellation of those is tests/ring/test_iowq_signal_cancel.py's)
        monkeypatch.setattr(h, "_coalescer", lambda offset: (None, offset))
    fake = _cancel(monkeypatch, h, "start_rw", 2)
    _read_many_async(h)
    assert fake.left == 0


@pytest.mark.parametrize("datasync", [True, False], ids=["fdatasync", "fsync"])
def test_a_flush_the_kernel_cancelled_is_issued_again(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch, datasync: bool
) -> None:
    fake = _cancel(monkeypatch, h, "start_sync", 2)
    (h.fdatasync if datasync else h.fsync)()
    assert fake.calls == 3  # two cancelled, the third flushed
    assert fake.held == [False, True, True] and not _signals_held()


def test_an_awaited_flush_the_kernel_cancelled_is_issued_again(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _cancel(monkeypatch, h, "start_sync", 2)
    asyncio.run(h.fdatasync_async())
    assert fake.calls == 3 and fake.held == [False, True, True]


@pytest.mark.parametrize("sync", ["fdatasync", "dsync"])
def test_a_durable_write_the_kernel_cancelled_is_issued_again(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch, sync: str
) -> None:
    fake = _cancel(monkeypatch, h, "start_write_durable", 2)
    assert h.write_durable(b"d" * 4096, 4096, sync=sync) == 4096  # type: ignore[arg-type]
    assert fake.calls == 3 and fake.held == [False, True, True]
    assert pathlib.Path(h.path).read_bytes()[4096:8192] == b"d" * 4096


def test_a_whole_writes_flush_the_kernel_cancelled_is_issued_on_its_own(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write ran whole and only its linked flush was cancelled: a new flush is issued
    (never the write again), and the call returns once it succeeded."""
    real = h.io.start_write_durable
    writes: list[int] = []

    def flush_cancelled(offset: int, buf: Any, sync: str, *, wait: bool = False) -> Pending:
        res = real(offset, buf, "dsync", wait=True).wait()  # the write, durable by itself
        writes.append(res[0])
        return CompletedPending([res[0], CANCELLED])

    monkeypatch.setattr(h.io, "start_write_durable", flush_cancelled)
    monkeypatch.setattr(h.io, "durable_writer", None, raising=False)
    flushes = _cancel(monkeypatch, h, "start_sync", 1)
    assert h.write_durable(b"e" * 4096, 0) == 4096
    assert writes == [4096] and flushes.calls == 2


def test_a_flush_that_ran_and_failed_is_never_issued_again(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a cancellation is run again: after a flush that failed (EIO) the kernel may have
    dropped the dirty pages, and a second flush would report them durable."""
    real = h.io.start_write_durable

    def flush_failed(offset: int, buf: Any, sync: str, *, wait: bool = False) -> Pending:
        res = real(offset, buf, "dsync", wait=True).wait()
        return CompletedPending([res[0], -errno.EIO])

    monkeypatch.setattr(h.io, "start_write_durable", flush_failed)
    monkeypatch.setattr(h.io, "durable_writer", None, raising=False)
    flushes = _cancel(monkeypatch, h, "start_sync", 0)
    with pytest.raises(UringIOError) as info:
        h.write_durable(b"f" * 4096, 0)
    assert info.value.errno == errno.EIO and flushes.calls == 0


@pytest.mark.parametrize("name", ["start_rw", "start_sync"])
def test_an_op_cancelled_past_the_bound_raises_ecanceled(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    fake = _cancel(monkeypatch, h, name, KERNEL_CANCEL_RERUNS + 1)
    with pytest.raises(UringIOError) as info:
        _read_into(h) if name == "start_rw" else h.fdatasync()
    assert info.value.errno == errno.ECANCELED
    assert fake.calls == KERNEL_CANCEL_RERUNS + 1 and fake.left == 0  # the first run and every rerun


def test_a_cancellation_with_the_handle_closed_is_not_run_again(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handle's (or its ring's) close cancels what is in flight: that ECANCELED is the
    library's own, raised as it is."""
    fake = _cancel(monkeypatch, h, "start_sync", 5)
    real_call = fake.__call__

    def closing(*args: Any, wait: bool = False) -> Pending:
        pending = real_call(*args, wait=wait)
        h._closed = True  # what close() records first; the op was cancelled by it
        return pending

    monkeypatch.setattr(h.io, "start_sync", closing)
    try:
        with pytest.raises(UringIOError) as info:
            h.fdatasync()
        assert info.value.errno == errno.ECANCELED and fake.calls == 1
    finally:
        h._closed = False  # (the fixture closes it for real)


def test_a_read_at_the_file_position_the_kernel_cancelled_is_run_again(
    plain_uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uringstack.FileIO.readinto``'s path on io_uring (the backend's ``read_here``; the
    fallback has none, FileIO looks the position up there): the position moves once, past
    the bytes read by the rerun."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    h = open_plain_uring(plain_uring_stack, path)
    real = h._here
    assert real is not None
    calls = []

    def here(pin: Any, buf: Any, got: int = 0) -> int | None:
        calls.append((got, _signals_held()))
        if len(calls) <= 2:
            return CANCELLED
        return real(pin, buf, got)

    monkeypatch.setattr(h, "_here", here)
    monkeypatch.setattr(h, "_cached", None)  # (the page cache's copy would take the hot file's read)
    os.lseek(h.fd, 4096, os.SEEK_SET)
    buf = bytearray(4096)
    try:
        assert h._read_here(buf, 4096) == 4096 and bytes(buf) == DATA[4096:8192]
        assert calls == [(0, False), (0, True), (0, True)] and os.lseek(h.fd, 0, os.SEEK_CUR) == 8192
    finally:
        h.close()


def test_a_read_ahead_read_the_kernel_cancelled_is_run_again(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """``uringstack.open(direct=True)``'s read-ahead checks each read's result with
    ``finish_read``: a cancelled one is read again (into the same buffer)."""
    from uringstack.fileobj.stream import finish_read

    fake = _cancel(monkeypatch, h, "start_rw", 1)
    buf = bytearray(4096)
    assert finish_read(h, 4096, buf, CANCELLED) == 4096 and bytes(buf) == DATA[4096:8192]
    assert fake.calls == 2


def test_a_write_behind_write_the_kernel_cancelled_is_written_again(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-behind's writes (``start_write_many``) are checked when waited for: a
    cancelled one is written again before ``drain()`` returns (so ``flush()`` and ``close()``)."""
    from uringstack.fileobj.stream import WriteBehind

    wb = WriteBehind(h)
    fake = _cancel(monkeypatch, h, "start_rw", 2)
    wb.write(memoryview(b"w" * 4096), 8192)
    wb.drain()
    assert fake.calls == 3 and pathlib.Path(h.path).read_bytes()[8192:12288] == b"w" * 4096


@pytest.mark.parametrize("write", [False, True], ids=["read_into", "write_from"])
def test_a_single_op_the_kernel_cancelled_is_run_again(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch, write: bool
) -> None:
    """``read_into``/``write_from``'s own path (the backend's ``run_one``, the buffer pinned
    once): a cancelled op is run again through the batch path, into the same memory."""
    real_one = h._one
    assert real_one is not None
    ones: list[int] = []

    def one(write: bool, pin: Any, buf: Any, offset: int) -> int | None:
        ones.append(offset)
        return CANCELLED

    monkeypatch.setattr(h, "_one", one)
    reruns = Cancels(h.io.start_rw, 0, lambda write, offsets, buffers: len(offsets))
    monkeypatch.setattr(h.io, "start_rw", reruns)
    buf = bytearray(b"s" * 4096) if write else bytearray(4096)
    assert (h.write_from if write else h.read_into)(buf, 4096) == 4096
    assert ones == [4096] and reruns.calls == 1 and reruns.held == [True]
    assert pathlib.Path(h.path).read_bytes()[4096:8192] == (b"s" * 4096 if write else DATA[4096:8192])
    if not write:
        assert bytes(buf) == DATA[4096:8192]


class _WaitsOnTheLoop:
    """Records every waited (blocking) op the handle runs while an event loop runs in this
    thread: the asyncio API must await each op it needs, or the loop stops for that op."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, h: FileHandle) -> None:
        self.ops: list[str] = []
        self._real = h._run
        monkeypatch.setattr(h, "_run", self)

    def __call__(self, fn: Callable[..., Pending], *args: Any, **kwargs: Any) -> list[int]:
        if asyncio._get_running_loop() is not None:
            self.ops.append(getattr(fn, "__name__", repr(fn)))
        return self._real(fn, *args, **kwargs)


def test_an_awaited_rerun_never_blocks_the_event_loop(h: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rerun of an awaited batch is awaited too (until session 44 it ran waited, on the
    loop's thread: every other task stopped for it)."""
    monkeypatch.setattr(h, "_coalescer", lambda offset: (None, offset))
    waits = _WaitsOnTheLoop(monkeypatch, h)
    fake = _cancel(monkeypatch, h, "start_rw", 2)
    _read_many_async(h)
    assert asyncio.run(h.write_many_async([8192], [b"x" * 4096])) == [4096]
    assert pathlib.Path(h.path).read_bytes()[8192:12288] == b"x" * 4096
    assert fake.left == 0 and fake.held[1:3] == [True, True]  # (reruns still submitted held)
    assert waits.ops == [], f"waited ops on the event loop's thread: {waits.ops}"


def test_an_awaited_coalesced_read_the_kernel_cancelled_is_run_again_awaited(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``await handle.read(n, off)``'s own path (the loop's coalescer on io_uring): its result
    ``-ECANCELED`` is run again, awaited."""

    async def main() -> bytes:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(CANCELLED)
        monkeypatch.setattr(h, "_add_read", lambda size, offset: fut)
        return await h.read(4096, 4096)

    waits = _WaitsOnTheLoop(monkeypatch, h)
    fake = _cancel(monkeypatch, h, "start_rw", 1)
    assert asyncio.run(main()) == DATA[4096:8192]
    assert fake.calls == 2 and fake.held == [True, True]
    assert waits.ops == [], f"waited ops on the event loop's thread: {waits.ops}"


@pytest.mark.parametrize("call", ["read", "read_into_async", "read_many_async", "prepared"])
def test_an_awaited_read_across_the_end_of_the_file_never_blocks_the_event_loop(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """A read that comes back short is completed (here: the read that finds the end of the
    file) by an awaited op, not a waited one."""
    waits = _WaitsOnTheLoop(monkeypatch, h)
    monkeypatch.setattr(h, "_copy_cached", lambda *args: None)  # (the page cache's copy needs no op)
    offset = len(DATA) - 100

    async def main() -> bytes:
        if call == "read":
            return await h.read(4096, offset)
        buf = bytearray(4096)
        if call == "read_into_async":
            got = await h.read_into_async(buf, offset)
        elif call == "prepared":
            prepared = h.prepare_reads([buf])
            try:
                (got,) = await prepared.run_async([offset])
            finally:
                prepared.close()
        else:
            (got,) = await h.read_many_async([offset], [buf])
        return bytes(buf[:got])

    assert asyncio.run(main()) == DATA[-100:]
    assert waits.ops == [], f"waited ops on the event loop's thread: {waits.ops}"
