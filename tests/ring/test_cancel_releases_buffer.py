"""A cancelled await on a caller's buffer gives the buffer back (docs/api.md, asyncio, "Cancelling an await").

When ``CancelledError`` comes out of ``read_into_async``, ``write``, ``read_many_async``
or ``write_many_async``, the kernel no longer uses the buffer: a read no longer lands
in it, a write no longer reads it.  Until session 34 the error came at once and the op
ran on: a read filled a buffer its caller had handed back to a pool, a write put on
disk what the caller wrote into the buffer after the cancel.

A slow op here is one on a pipe: the handle's descriptor is swapped for a pipe's end
(``_PipeBacked``), so a read stays in the kernel until the test writes to the pipe and
a write (into a full pipe) until the test reads.  The kernel can cancel such an op at
once; an op it cannot cancel (one the device already runs) is played by turning the
ring's cancel off (``no_kernel_cancel``) and completing the op from a timer thread.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from tests.requires import skip_without
from uringstack.errors import CancelTimeoutError
from uringstack.ring import Ring
from uringstack.ring.flags import SetupFlag
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

pytestmark = pytest.mark.usefixtures("reads_through_ring")

SIZE = 16
LATE = 0.4  # when the timer completes an op the kernel was not asked to cancel (s)


@pytest.fixture
def stack() -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0]}) as s:
        yield s


@pytest.fixture
def data(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "data"
    path.write_bytes(b"." * 4096)
    return path


@pytest.fixture
def no_kernel_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ring asks the kernel to cancel nothing: every op runs to its end, as one the
    device already runs does (the cancelled await must then wait for it)."""
    monkeypatch.setattr(Ring, "cancel_ops", lambda self, batch, ops=None: None, raising=False)


class _PipeBacked:
    """A uring handle whose descriptor is a pipe's read end (or, *write*, its write end,
    the pipe filled first): its ops stay in the kernel until the test writes (reads)."""

    def __init__(self, handle: FileHandle, write: bool = False) -> None:
        self.handle = handle
        self.r, self.w = os.pipe()
        self.file_fd = handle.io.fd
        self.fixed_index = handle.io.fixed_index
        self.filler = 0
        if write:
            flags = fcntl.fcntl(self.w, fcntl.F_GETFL)
            fcntl.fcntl(self.w, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            try:
                while True:
                    self.filler += os.write(self.w, b"f" * 65536)
            except BlockingIOError:
                pass
            fcntl.fcntl(self.w, fcntl.F_SETFL, flags)  # (a non-blocking descriptor: io_uring's EAGAIN)
        handle.io.fd = self.w if write else self.r
        handle.io.fixed_index = None  # a registered-file slot would still name the file

    def take_filler(self) -> None:
        """Read the bytes that filled the pipe (only those): room for a write."""
        left = self.filler
        while left:
            left -= len(os.read(self.r, left))
        self.filler = 0

    def reap_until_idle(self, ring: Ring, seconds: float = 5.0) -> None:
        """Reap *ring* until nothing is in flight (or *seconds* passed), without touching the
        pipe: bytes the test wrote are the kernel's to read (a read of the pipe here would
        race the kernel's retry of its read, and on 6.1 the retry, finding the descriptor
        non-blocking and the pipe empty, completes with -EAGAIN)."""
        end = time.monotonic() + seconds
        while ring.inflight and time.monotonic() < end:
            ring.try_reap()
            time.sleep(0.01)

    def drain(self, ring: Ring, seconds: float = 1.0) -> bytes:
        """Everything in the pipe, reaping *ring* meanwhile, until nothing is in flight and
        the pipe is empty (or *seconds* passed)."""
        got = bytearray()
        flags = fcntl.fcntl(self.r, fcntl.F_GETFL)
        fcntl.fcntl(self.r, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                try:
                    chunk = os.read(self.r, 1 << 20)
                except BlockingIOError:
                    chunk = b""
                got += chunk
                ring.try_reap()
                if not chunk and ring.inflight == 0:
                    break
                time.sleep(0.01)
        finally:
            fcntl.fcntl(self.r, fcntl.F_SETFL, flags)
        return bytes(got)

    def restore(self) -> None:
        self.handle.io.fd = self.file_fd
        self.handle.io.fixed_index = self.fixed_index
        os.close(self.r)
        os.close(self.w)


def _run(coro: Any, timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def _in_flight(ring: Ring, n: int) -> None:
    """Yield until *n* ops are in the kernel (queued, flushed), 10 s at most (a loaded CI
    host's emulated VM may take more than the usual milliseconds)."""
    end = time.monotonic() + 10
    while ring.inflight < n:
        assert time.monotonic() < end, f"{ring.inflight} op(s) in flight, not {n}"
        await asyncio.sleep(0.001)


def _later(seconds: float, fn: Any, *args: Any) -> threading.Timer:
    timer = threading.Timer(seconds, fn, args)
    timer.start()
    return timer


def _assert_untouched(ring: Ring, pipe: _PipeBacked, buf: bytearray, sentinel: bytes) -> None:
    """*buf* holds *sentinel* (written after the cancel) once bytes were written to the pipe
    and the ring was reaped: no read of the cancelled await landed in it."""
    os.write(pipe.w, b"L" * SIZE)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        ring.try_reap()
        time.sleep(0.01)
    assert bytes(buf) == sentinel, "a read landed in the buffer after its await was cancelled"


@pytest.mark.timeout(60)
def test_a_read_cancelled_in_the_kernel_no_longer_fills_its_buffer(stack: Stack, data: pathlib.Path) -> None:
    with open_plain_uring(stack, data) as h:
        ring = h.ring
        pipe = _PipeBacked(h)
        buf = bytearray(SIZE)
        try:

            async def main() -> None:
                with pytest.raises(TimeoutError):  # (asyncio.wait_for's own timeout: a cancel)
                    await asyncio.wait_for(h.read_into_async(buf, 0), 0.2)
                assert ring.inflight == 0, "the cancelled read is still in the kernel"

            _run(main())
            buf[:] = b"S" * SIZE  # (back to a pool: another user's bytes)
            _assert_untouched(ring, pipe, buf, b"S" * SIZE)
        finally:
            pipe.drain(ring)
            pipe.restore()


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("no_kernel_cancel")
@pytest.mark.parametrize("cancels", [1, 2], ids=["one cancel", "a second cancel does not cut the wait short"])
def test_a_read_the_kernel_does_not_cancel_is_waited_for(stack: Stack, data: pathlib.Path, cancels: int) -> None:
    with open_plain_uring(stack, data) as h:
        ring = h.ring
        pipe = _PipeBacked(h)
        buf = bytearray(SIZE)
        try:

            async def main() -> float:
                task = asyncio.create_task(h.read_into_async(buf, 0))
                await _in_flight(ring, 1)
                _later(LATE, os.write, pipe.w, b"D" * SIZE)
                began = time.monotonic()
                task.cancel()
                for _ in range(cancels - 1):
                    await asyncio.sleep(0.1)  # the task waits for its read now
                    assert not task.done()
                    task.cancel()
                    await asyncio.sleep(0.05)
                    task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert ring.inflight == 0
                return time.monotonic() - began

            waited = _run(main())
            assert waited >= LATE - 0.1, f"CancelledError after {waited:.3f} s, before the read completed"
            assert bytes(buf) == b"D" * SIZE  # (it completed before the CancelledError)
            buf[:] = b"S" * SIZE
            _assert_untouched(ring, pipe, buf, b"S" * SIZE)
        finally:
            pipe.drain(ring)
            pipe.restore()


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("no_kernel_cancel")
def test_an_op_that_never_completes_raises_cancel_timeout_and_keeps_its_buffer(data: pathlib.Path) -> None:
    with open_stack(overrides={"core.cores": [0], "core.close_timeout_s": 0.5}) as stack:
        h = open_plain_uring(stack, data)
        ring = h.ring
        pipe = _PipeBacked(h)
        buf = bytearray(SIZE)
        try:

            async def main() -> float:
                began = time.monotonic()
                with pytest.raises(CancelTimeoutError) as caught:
                    await asyncio.wait_for(h.read_into_async(buf, 0), 0.1)
                assert caught.value.errno == errno.ETIMEDOUT
                assert "do not reuse" in str(caught.value) and h.path in str(caught.value)
                assert ring.inflight == 1  # still the kernel's, and its batch still owns the buffer
                return time.monotonic() - began

            waited = _run(main())
            assert 0.5 <= waited < 5, waited
            os.write(pipe.w, b"D" * SIZE)  # the op completes: the buffer is the caller's again
            pipe.reap_until_idle(ring)
            assert ring.inflight == 0 and bytes(buf) == b"D" * SIZE
        finally:
            pipe.restore()
            h.close()


@pytest.mark.timeout(60)
def test_only_the_cancelled_awaits_ops_are_cancelled_in_their_flush(stack: Stack, data: pathlib.Path) -> None:
    """The cancelled await's ops (and only those) are cancelled in the kernel; the await
    returns once its flush's batch completed (the batch completes as one)."""
    with open_plain_uring(stack, data) as h:
        ring = h.ring
        pipe = _PipeBacked(h)
        kept = [bytearray(SIZE), bytearray(SIZE)]
        single = bytearray(SIZE)
        gone = [bytearray(SIZE), bytearray(SIZE)]
        try:

            async def main() -> tuple[list[Any], float]:
                # one flush: a read_many of 2 ops, a single read, another read_many of 2 ops
                first = asyncio.create_task(h.read_many_async([0, 0], kept))
                middle = asyncio.create_task(h.read_into_async(single, 0))
                last = asyncio.create_task(h.read_many_async([0, 0], gone))
                await _in_flight(ring, 5)
                # enough for ops 0-2 only: ops 3 and 4, if not cancelled, would take some
                _later(LATE, os.write, pipe.w, b"D" * SIZE * 3)
                began = time.monotonic()
                last.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await last
                waited = time.monotonic() - began
                assert ring.inflight == 0
                for buf in gone:
                    buf[:] = b"S" * SIZE
                return await asyncio.gather(first, middle), waited

            got, waited = _run(main())
            assert waited >= LATE - 0.1, f"CancelledError after {waited:.3f} s, before its batch completed"
            assert got == [[SIZE, SIZE], SIZE]
            assert kept == [bytearray(b"D" * SIZE)] * 2 and single == b"D" * SIZE
            for buf in gone:
                _assert_untouched(ring, pipe, buf, b"S" * SIZE)
        finally:
            pipe.drain(ring)
            pipe.restore()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kernel_cancel", [True, False], ids=["cancelled", "waited"])
@pytest.mark.parametrize("many", [False, True], ids=["write", "write_many_async"])
def test_a_cancelled_write_never_puts_what_the_buffer_holds_afterwards_on_disk(
    stack: Stack, data: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kernel_cancel: bool, many: bool
) -> None:
    if not kernel_cancel:
        monkeypatch.setattr(Ring, "cancel_ops", lambda self, batch, ops=None: None, raising=False)
    with open_plain_uring(stack, data) as h:
        ring = h.ring
        pipe = _PipeBacked(h, write=True)
        buf = bytearray(b"A" * SIZE)
        try:

            async def main() -> None:
                if many:
                    task = asyncio.create_task(h.write_many_async([0], [buf]))
                else:
                    task = asyncio.create_task(h.write(buf, 0))
                await _in_flight(ring, 1)
                if not kernel_cancel:
                    _later(LATE, pipe.take_filler)  # room in the pipe: the write goes in
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                buf[:] = b"B" * SIZE  # the caller's buffer again: reused

            _run(main())
            written = pipe.drain(ring)
            assert b"B" not in written, "the write put bytes written into its buffer after the cancel in the file"
            assert ring.inflight == 0
        finally:
            pipe.drain(ring)
            pipe.restore()


@pytest.mark.timeout(60)
def test_a_read_into_cancelled_before_its_flush_is_never_submitted(stack: Stack, data: pathlib.Path) -> None:
    with open_plain_uring(stack, data) as h:
        ring = h.ring
        assert ring is not None

        async def main() -> int:
            await h.read(SIZE, 0)
            before = ring.counters()["submitted"]
            buf = bytearray(SIZE)
            task = asyncio.create_task(h.read_into_async(buf, 0))
            await asyncio.sleep(0)  # the task queued its read; the flush has not run yet
            task.cancel()
            await h.read(SIZE, 0)  # flushed in the same iteration as the cancelled one
            with pytest.raises(asyncio.CancelledError):
                await task
            assert buf == bytearray(SIZE)
            return ring.counters()["submitted"] - before

        assert _run(main()) == 1


@pytest.mark.timeout(60)
def test_on_an_sqpoll_ring_a_cancelled_reads_slot_is_reused_and_the_read_never_lands(data: pathlib.Path) -> None:
    """SQPOLL: the kernel's poller thread, not an ``io_uring_enter`` of ours, picks up the
    cancel and every later SQE.  A read held in the kernel (a pipe) is cancelled; the reads
    after it reuse its batch slot and SQ entries and must get their own bytes, never its
    completion; bytes written to the pipe afterwards land in no buffer."""
    content = bytes(range(256)) * 16
    data.write_bytes(content)
    with open_stack(overrides={"sqpoll.mode": "on", "core.cores": [0]}) as stack, open_plain_uring(stack, data) as h:
        ring = h.ring
        assert ring is not None
        if not ring.flags & SetupFlag.SQPOLL:
            skip_without(f"an SQPOLL storage ring (sqpoll.mode = on gave {ring.flags!r}: see `uringstack plan`)")
        if "SQPOLL_NONFIXED" not in ring.feature_names():
            skip_without("IORING_FEAT_SQPOLL_NONFIXED (5.11+): the test's pipe is not a registered file")
        pipe = _PipeBacked(h)
        buf = bytearray(SIZE)
        try:

            async def cancel_then_reuse() -> list[bytes]:
                with pytest.raises(TimeoutError):  # (asyncio.wait_for's own timeout: a cancel)
                    await asyncio.wait_for(h.read_into_async(buf, 0), 0.2)
                assert ring.inflight == 0, "the cancelled read is still in the kernel"
                h.io.fd, h.io.fixed_index = pipe.file_fd, pipe.fixed_index  # the file again
                return [await h.read(SIZE, off) for off in range(0, 4096, 256)]

            got = _run(cancel_then_reuse())
            assert got == [content[off : off + SIZE] for off in range(0, 4096, 256)]
            bufs = [bytearray(SIZE) for _ in range(8)]
            for rnd in range(10):
                offs = [(rnd * 8 + i) * 16 % 4000 for i in range(8)]
                assert h.read_many(offs, bufs) == [SIZE] * 8
                assert [bytes(b) for b in bufs] == [content[o : o + SIZE] for o in offs]
            buf[:] = b"S" * SIZE  # (back to a pool: another user's bytes)
            _assert_untouched(ring, pipe, buf, b"S" * SIZE)
            assert [bytes(b) for b in bufs] == [content[o : o + SIZE] for o in offs]
        finally:
            pipe.drain(ring)
            pipe.restore()
