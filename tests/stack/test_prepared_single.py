"""A prepared batch of ONE buffer, waited (``prepared.run([off])``, the QD1 loop): one ``Ring.rw_one``.

On io_uring the waited start of a single prepared buffer skips the batch
machinery (no ``Batch``, result array or pending object per op): one call
into C prepares, submits, waits (bounded by ``wait_tick``) and reaps, as
``read_into`` does.  It must keep everything the batch path promised: the
prepared opcode (READ_FIXED on a registered lease), the data, the completion
hook, and for an op that outlives the call (a hung device) the in-flight
rule: no restart on its buffer, ``done()`` false until it completes, and a
wait that fails in seconds instead of hanging.
"""

from __future__ import annotations

import errno
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.requires import skip_without
from tests.stack import test_prepared
from tests.stack.test_completion_hook import RingRecorder, _stack_with
from uringstack.errors import AlignmentError, BatchInFlightError, RingClosedError, UringIOError
from uringstack.ring import Ring
from uringstack.ring.buffers import RegisteredBuffer, aligned_buffer
from uringstack.ring.flags import Op
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO, UringPrepared

BS = 4096
CPU = sorted(os.sched_getaffinity(0))[0]
data_file = test_prepared.data_file  # the fixture: a file of 64 random blocks, and its bytes


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off"})
    yield s
    s.close()


def _ring(h: FileHandle) -> Ring:
    assert isinstance(h.io, UringFileIO)
    ring = h.ring
    assert isinstance(ring, Ring)
    return ring


def _spy(ring: Ring, monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[int, int, int, int]], list[object]]:
    """Record each rw_one call, also through functions bound (``bind_rw_one``) from now on
    (opcode, length, offset, buffer index), and refuse the batch path."""
    calls: list[tuple[int, int, int, int]] = []
    batches: list[object] = []
    real = ring.rw_one

    def rw_one(opcode: int, fd: int, buf: Any, length: int, offset: int, flags: int, index: int, keep: object) -> int:
        calls.append((opcode, length, offset, index))
        return real(opcode, fd, buf, length, offset, flags, index, keep)

    real_bind = ring.bind_rw_one

    def bind_rw_one(
        opcode: int, fd: int, buf: Any, length: int, flags: int, index: int, keep: object
    ) -> Callable[[int], int]:
        bound = real_bind(opcode, fd, buf, length, flags, index, keep)

        def one(offset: int) -> int:
            calls.append((opcode, length, offset, index))
            return bound(offset)

        return one

    def submit_columns(*args: Any, **kwargs: Any) -> Any:
        batches.append(args)
        raise AssertionError("a waited single prepared op must not build a batch")

    monkeypatch.setattr(ring, "rw_one", rw_one)
    monkeypatch.setattr(ring, "bind_rw_one", bind_rw_one)
    monkeypatch.setattr(ring, "submit_columns", submit_columns)
    return calls, batches


def _bind_through_rw_one(ring: Ring, monkeypatch: pytest.MonkeyPatch) -> None:
    """Functions bound from now on (``bind_rw_one``) call ``ring.rw_one``, looked up at each
    call: a test's replacement of ``rw_one`` (a pipe for the file) then applies to them."""

    def bind_rw_one(
        opcode: int, fd: int, buf: Any, length: int, flags: int, index: int, keep: object
    ) -> Callable[[int], int]:
        return lambda offset: ring.rw_one(opcode, fd, buf, length, offset, flags, index, keep)

    monkeypatch.setattr(ring, "bind_rw_one", bind_rw_one)


def test_a_waited_single_read_and_write_are_one_rw_one_call_each(
    stack: Stack, data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = data_file
    with stack.open(path) as h:
        assert isinstance(h.io, UringFileIO)
        h.io._inline_writes = False  # the ring's write path, whatever the file system
        buf = bytearray(BS)
        reads = h.prepare_reads([buf])
        out = bytearray(os.urandom(BS))
        writes = h.prepare_writes([out])
        assert isinstance(reads._prep, UringPrepared)
        calls, batches = _spy(_ring(h), monkeypatch)
        for off in (5 * BS, 0, 15 * BS):
            assert reads.run([off]) == [BS]
            assert bytes(buf) == data[off : off + BS]
        assert writes.run([3 * BS]) == [BS]
        assert calls == [(Op.READ, BS, 5 * BS, 0), (Op.READ, BS, 0, 0), (Op.READ, BS, 15 * BS, 0),
                         (Op.WRITE, BS, 3 * BS, 0)]  # fmt: skip
        assert batches == []
        assert reads.done() and writes.done()
        monkeypatch.undo()
        # a start (not waited) is still a batch: its caller waits later
        pending = reads.start([2 * BS])
        assert pending.wait() == [BS] and bytes(buf) == data[2 * BS : 3 * BS]
    assert path.read_bytes()[3 * BS : 4 * BS] == bytes(out)


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
def test_a_single_registered_lease_reads_with_read_fixed_under_o_direct(
    data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """The single waited op takes the batch's opcode: READ_FIXED under O_DIRECT, a plain
    READ at the lease's address on a buffered handle (buffers.fixed_opcodes_pay)."""
    path, data = data_file
    overrides = {"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off", "fixedbuf.mode": "on",
                 "fixedbuf.count": 4, "fixedbuf.buffer_size": BS, "fixedbuf.files": 4,
                 "iopoll.mode": "off"}  # fmt: skip
    with open_stack(overrides=overrides) as s, s.open(path, direct=direct) as h:
        leases = h.lease_buffers(2, BS)
        try:
            if not all(isinstance(b, RegisteredBuffer) for b in leases):
                skip_without("fixedbuf registered no buffers (RLIMIT_MEMLOCK too low)")
            lease = leases[1]
            reads = h.prepare_reads([lease])
            calls, _ = _spy(_ring(h), monkeypatch)
            assert reads.run([7 * BS]) == [BS]
            assert bytes(lease) == data[7 * BS : 8 * BS]
            assert calls == [(Op.READ_FIXED, BS, 7 * BS, lease.index) if direct else (Op.READ, BS, 7 * BS, 0)]
            reads.close()
        finally:
            monkeypatch.undo()
            h.release_buffers(leases)


def test_the_completion_hook_sees_each_single_prepared_op(tmp_path: pathlib.Path) -> None:
    recorder = RingRecorder()
    path = tmp_path / "f"
    path.write_bytes(b"z" * 100)
    with _stack_with(recorder, "auto") as stack, stack.open(path) as h:
        storage = stack.workers[0].rings["storage"]
        reads = h.prepare_reads([bytearray(64)])
        assert reads.run([0]) == [64]
        assert reads.run([90]) == [10]  # short at end of file: the hook saw the op's own result
    assert recorder.seen == [("read", [64], storage), ("read", [10], storage), ("read", [0], storage)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("first", [True, False], ids=["first-call", "bound"])
def test_a_single_op_that_outlives_its_wait_stays_in_flight_and_fails_in_seconds(
    stack: Stack, data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch, first: bool
) -> None:
    """The op hangs (here: the prepared buffer read from an empty pipe through the same ring):
    ``run`` raises at ``wait_timeout``; until the op completes the prepared object is in
    flight (``done()`` false, a restart refused: the kernel may still write the buffer)."""
    path, data = data_file
    r, w = os.pipe()
    try:
        with stack.open(path) as h:
            ring = _ring(h)
            ring.wait_tick = 0.2
            ring.wait_timeout = 1.0
            buf = bytearray(BS)
            reads = h.prepare_reads([buf])
            _bind_through_rw_one(ring, monkeypatch)
            if not first:  # (the first call binds the op; later ones take run's one-call path)
                assert reads.run([0]) == [BS]
            real = ring.rw_one

            def hung(opcode: int, fd: int, ptr: Any, length: int, offset: int, *rest: Any) -> int:
                return real(opcode, r, ptr, length, 0, 0, 0, rest[-1])  # the pipe instead of the file

            monkeypatch.setattr(ring, "rw_one", hung)
            t0 = time.monotonic()
            with pytest.raises(UringIOError, match="not complete after") as info:
                reads.run([BS])
            assert info.value.errno == errno.ETIMEDOUT
            assert time.monotonic() - t0 < 10
            monkeypatch.undo()
            assert not reads.done()
            with pytest.raises(BatchInFlightError, match="still in flight"):
                reads.run([2 * BS])
            assert ring.inflight == 1
            os.write(w, b"late")
            deadline = time.monotonic() + 5
            while not reads.done():  # done() reaps: the pipe read completes into the buffer
                assert time.monotonic() < deadline, "the pipe read never completed"
                time.sleep(0.01)
            assert bytes(buf[:4]) == b"late"
            assert reads.run([2 * BS]) == [BS] and bytes(buf) == data[2 * BS : 3 * BS]
            assert ring.inflight == 0
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.timeout(30)
def test_a_single_op_in_its_call_is_in_flight_for_other_threads(
    stack: Stack, data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Batch exists while the one call runs: another thread's start is still refused and
    ``finished`` is false (a pool asks it before leasing the buffer out again)."""
    path, data = data_file
    r, w = os.pipe()
    try:
        with stack.open(path) as h:
            ring = _ring(h)
            buf = bytearray(BS)
            reads = h.prepare_reads([buf])
            prep = reads._prep
            assert isinstance(prep, UringPrepared)
            _bind_through_rw_one(ring, monkeypatch)
            assert reads.run([0]) == [BS]  # binds the op: the calls below take run's one-call path
            real = ring.rw_one
            redirected = [0]

            def first_from_pipe(opcode: int, fd: int, ptr: Any, length: int, offset: int, *rest: Any) -> int:
                if redirected[0]:
                    return real(opcode, fd, ptr, length, offset, *rest)
                redirected[0] = 1
                return real(opcode, r, ptr, length, 0, 0, 0, rest[-1])  # blocks until the pipe is written

            monkeypatch.setattr(ring, "rw_one", first_from_pipe)
            got: list[Any] = []
            t = threading.Thread(target=lambda: got.append(reads.run([BS])))
            t.start()
            try:
                deadline = time.monotonic() + 5
                while ring.inflight == 0:
                    assert time.monotonic() < deadline, "the read never reached the ring"
                    time.sleep(0.005)
                assert not prep.finished
                with pytest.raises(BatchInFlightError, match="still in flight"):
                    reads.run([2 * BS])
                with pytest.raises(BatchInFlightError, match="still in flight"):
                    reads.start([2 * BS])  # nor a batch (not waited) on the same buffer
            finally:
                os.write(w, data[BS : BS + 4])  # a short read: run completes the rest from the file
                t.join(10)
            assert got == [[BS]] and bytes(buf) == data[BS : 2 * BS]
            assert prep.finished and reads.run([2 * BS]) == [BS]
    finally:
        os.close(r)
        os.close(w)


def test_a_refused_single_op_keeps_its_error_and_reaches_no_ring(
    stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-call path takes only offsets it can run: a negative, huge or (O_DIRECT) misaligned
    offset, a closed prepared object or handle get the general path's named errors first."""
    path = tmp_path / "d"
    path.write_bytes(os.urandom(4 * BS))
    with stack.open(path, direct=True) as h:
        buf = aligned_buffer(BS)
        reads = h.prepare_reads([buf])
        calls, batches = _spy(_ring(h), monkeypatch)
        assert reads.run([BS]) == [BS]  # the first call fills the fd columns (and binds the op)
        calls.clear()
        with pytest.raises(ValueError, match=r"offset -4096 \(op 0 of the batch\) is negative"):
            reads.run([-BS])
        with pytest.raises(ValueError, match=r"is past the largest file offset \(2\*\*63 - 1\)"):
            reads.run([1 << 64])
        with pytest.raises(AlignmentError, match="offset 100 is not a multiple"):
            reads.run([100])
        with pytest.raises(ValueError, match="2 offsets for 1 prepared buffers"):
            reads.run([0, BS])
        assert calls == [] and batches == []
        assert reads.run([2 * BS]) == [BS] and len(calls) == 1
        reads.close()
        with pytest.raises(ValueError, match="was closed"):
            reads._prep.start([0], wait=True)
        assert len(calls) == 1


def test_a_single_op_is_refused_once_the_handles_close_began(
    stack: Stack, data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run admitted by the handle's own check while its close begins (here: the close's
    first step, its tracker closed, done alone) is refused by the tracker and reaches no ring:
    close() waits only for what was admitted before it began."""
    path, _ = data_file
    with stack.open(path) as h:
        reads = h.prepare_reads([bytearray(BS)])
        calls, _batches = _spy(_ring(h), monkeypatch)
        assert reads.run([0]) == [BS]  # binds the op: the next run takes the one-frame path
        assert reads.run([BS]) == [BS] and len(calls) == 2
        h._inflight.close(1.0)
        with pytest.raises(RingClosedError, match="is closed"):
            reads.run([2 * BS])
        assert len(calls) == 2
        assert h._inflight._starts() == 0  # the refused run counted itself out


@pytest.mark.timeout(30)
def test_a_read_into_that_outlives_its_wait_keeps_the_handle_open_until_it_completes(
    data_file: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_into`` (one ``rw_one`` call) whose op hangs raises at ``wait_timeout``; the op
    is then tracked by the handle, so ``close()`` waits for it and, past
    ``core.close_timeout_s``, raises and keeps the descriptor open (the kernel may still
    use it), as for a batch."""
    path, _ = data_file
    r, w = os.pipe()
    s = open_stack(overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off",
                              "core.close_timeout_s": 1.0})  # fmt: skip
    try:
        h = s.open(path)
        ring = _ring(h)
        ring.wait_tick = 0.2
        ring.wait_timeout = 1.0
        real = ring.rw_one

        def hung(opcode: int, fd: int, ptr: Any, length: int, offset: int, *rest: Any) -> int:
            return real(opcode, r, ptr, length, 0, 0, 0, rest[-1])  # the pipe instead of the file

        monkeypatch.setattr(ring, "rw_one", hung)
        buf = bytearray(BS)
        with pytest.raises(UringIOError, match="not complete after") as info:
            h.read_into(buf, 0)
        assert info.value.errno == errno.ETIMEDOUT
        monkeypatch.undo()
        with pytest.raises(TimeoutError, match="still not complete"):
            h.close()
        assert os.fstat(h.fd)  # kept open: the op still in flight may use it
        os.write(w, b"late")
        deadline = time.monotonic() + 5
        while ring.inflight:
            assert time.monotonic() < deadline, "the pipe read never completed"
            ring.try_reap()
            time.sleep(0.01)
        assert bytes(buf[:4]) == b"late"
        os.close(h.fd)
    finally:
        s.close()
        os.close(r)
        os.close(w)
