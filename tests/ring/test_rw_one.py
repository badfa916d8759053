"""``Ring.rw_one`` (C ``us_rw_one``): one waited read or write in one call, as bounded as a batch.

The op is prepared, submitted and waited for in one ``io_uring_enter``, but
only for ``Ring.wait_tick``: a hung op (a read from an empty pipe through the
ring) becomes a batch that owns its buffer and is waited for by the bounded
wait that detects lost completions.  Completions of other batches reaped by
the call are collected, and the call's own completion never reaches the
ring's done list.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from uringstack import ring as ring_module
from uringstack.errors import UringIOError
from uringstack.ring import Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op, SqeFlag
from uringstack.ring.native import ffi, lib


@pytest.fixture
def data_file(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


class ReadOne(Protocol):
    def __call__(self, ring: Ring, fd: int, buf: bytearray, offset: int = 0) -> int: ...


def _read_one(ring: Ring, fd: int, buf: bytearray, offset: int = 0) -> int:
    pin = ffi.from_buffer(buf)
    return ring.rw_one(Op.READ, fd, pin, len(buf), offset, 0, 0, (pin, buf))


def _read_bound(ring: Ring, fd: int, buf: bytearray, offset: int = 0) -> int:
    pin = ffi.from_buffer(buf)
    return ring.bind_rw_one(Op.READ, fd, pin, len(buf), 0, 0, (pin, buf))(offset)


@pytest.fixture(params=[_read_one, _read_bound], ids=["rw_one", "bind_rw_one"])
def read_one(request: pytest.FixtureRequest) -> ReadOne:
    """One waited read, through ``Ring.rw_one`` or a function from ``Ring.bind_rw_one``:
    every rule here holds for both."""
    fn: ReadOne = request.param
    return fn


def test_read_and_write_return_their_results_with_one_syscall_and_no_batch(
    read_one: ReadOne, ring: Ring, data_file: int, whole_first_wait: None
) -> None:
    """An op that completes within its submitting wait costs one ``io_uring_enter``.

    That wait lasts ``HOLD_MS`` (2 ms) on a ring with unlocked waits; an op slower than
    that waits again, in a second enter, by design (``test_wait_lets_the_ring_go``).  A
    loaded machine (CI's 6.12 guest under TCG) can take longer than 2 ms over a buffered
    write, so here the first wait is the ring's whole tick (0.2 s, ``whole_first_wait``):
    the count then tests the one-syscall path, not the machine's speed."""
    buf = bytearray(4096)
    before = ring.counters()
    assert read_one(ring, data_file, buf, 256) == 4096
    assert buf == bytes(range(256)) * 16
    out = b"w" * 100
    pin = ffi.from_buffer(out)
    assert ring.rw_one(Op.WRITE, data_file, pin, 100, 16384, 0, 0, pin) == 100
    assert os.pread(data_file, 200, 16300)[84:] == out
    assert read_one(ring, data_file, buf, 1 << 20) == 0  # past the end
    after = ring.counters()
    assert after["enters"] - before["enters"] == 3
    assert after["reaped"] - before["reaped"] == 3
    assert ring.inflight == 0 and ring._inflight == {}
    assert len(ring._free_slots) == lib.US_MAX_SLOTS
    # its slot never reaches the done list: nothing is left for a reap to find
    assert ring._done_n[0] == 0


def test_an_error_is_the_result(read_one: ReadOne, ring: Ring, data_file: int) -> None:
    buf = bytearray(16)
    assert read_one(ring, 1 << 20, buf) == -errno.EBADF  # no such descriptor


def test_other_batches_completed_meanwhile_are_collected(
    read_one: ReadOne, ring: Ring, pipe: tuple[int, int], data_file: int
) -> None:
    """A batch whose completion the single op's reap consumed is finished, its callback run."""
    r, w = pipe
    pbuf = bytearray(8)
    ppin = ffi.from_buffer(pbuf)
    batch = ring.submit(Op.READ, r, addrs=address_of(ppin), lens=8, offsets=0, keep=[ppin, pbuf])
    seen: list[list[int]] = []
    batch.add_done_callback(lambda b: seen.append(b.results))
    os.write(w, b"abc")  # its completion is posted by the kernel inside the next io_uring_enter at the latest
    time.sleep(0.05)
    assert read_one(ring, data_file, bytearray(4096)) == 4096
    assert batch.finished and seen == [[3]]
    assert ring._inflight == {} and ring.inflight == 0
    assert ring.reap() == []


@pytest.mark.timeout(30)
def test_a_hung_op_is_waited_for_past_the_tick_and_completes(
    read_one: ReadOne, ring: Ring, pipe: tuple[int, int]
) -> None:
    r, w = pipe
    timer = threading.Timer(0.6, os.write, (w, b"late"))
    timer.start()
    try:
        buf = bytearray(16)
        t0 = time.monotonic()
        assert read_one(ring, r, buf) == 4
        assert 0.4 < time.monotonic() - t0 < 5
        assert bytes(buf[:4]) == b"late"
        assert ring._inflight == {} and ring.inflight == 0
    finally:
        timer.join()


@pytest.mark.timeout(30)
def test_a_hung_op_fails_at_the_deadline_keeps_its_buffer_and_its_result_cell(
    read_one: ReadOne, ring: Ring, pipe: tuple[int, int], data_file: int
) -> None:
    """ETIMEDOUT at ``wait_timeout``; the op stays in flight as a batch owning the buffer and the
    result cell the kernel will write; later single ops get a cell of their own."""
    r, w = pipe
    ring.wait_timeout = 1.0
    buf = bytearray(16)
    pin = ffi.from_buffer(buf)
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match=r"1 op\(s\) not complete after 1 s") as info:
        read_one(ring, r, buf, 0)
    assert 0.9 < time.monotonic() - t0 < 5
    assert info.value.errno == errno.ETIMEDOUT
    assert ring.inflight == 1
    (batch,) = ring._inflight.values()
    assert batch._keep == (pin, buf)  # the kernel may still write into it: never released
    other = bytearray(4096)
    assert read_one(ring, data_file, other) == 4096  # meanwhile: its own result cell
    os.write(w, b"ok")
    time.sleep(0.05)
    assert read_one(ring, data_file, other, 4096) == 4096  # its reap also takes the pipe read's completion
    assert batch.finished and batch.results == [2]
    assert bytes(buf[:2]) == b"ok"
    assert ring._inflight == {} and ring.inflight == 0


@pytest.mark.timeout(30)
def test_a_lost_completion_of_a_hung_op_fails_fast(
    read_one: ReadOne, ring: Ring, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The op outlived the submitting wait; its CQE is then consumed behind the bookkeeping's
    back before the bounded wait runs: that wait raises at once instead of hanging."""
    r, w = pipe
    ring.wait_timeout = 60.0
    real = Ring._wait_slot_locked

    def lose_then_wait(self: Ring, slot: int) -> None:
        os.write(w, b"x")
        deadline = time.monotonic() + 5
        while not lib.us_test_drop_cqe(self._ring):  # the completion, consumed behind its back
            assert time.monotonic() < deadline, "the pipe read never completed"
            time.sleep(0.001)
        real(self, slot)

    monkeypatch.setattr(Ring, "_wait_slot_locked", lose_then_wait)
    buf = bytearray(16)
    t0 = time.monotonic()
    try:
        with pytest.raises(UringIOError, match="lost completion") as info:
            read_one(ring, r, buf)
        assert time.monotonic() - t0 < 5
        assert info.value.errno == errno.ETIMEDOUT
        assert ring.inflight == 1
    finally:
        monkeypatch.undo()
        ring.close_timeout = 0.5
        with pytest.raises(UringIOError, match="did not complete within"):
            ring.close()
        ring_module._ORPHANED.clear()


def test_a_closed_ring_refuses(read_one: ReadOne, data_file: int) -> None:
    ring = Ring(entries=4)
    ring.close()
    from uringstack.errors import RingClosedError

    with pytest.raises(RingClosedError):
        read_one(ring, data_file, bytearray(16))


def test_an_opcode_other_than_read_or_write_is_refused_before_anything_is_queued(ring: Ring) -> None:
    buf = bytearray(16)
    pin: Any = ffi.from_buffer(buf)
    from uringstack.errors import SubmissionError

    with pytest.raises(SubmissionError):
        ring.rw_one(Op.FSYNC, 0, pin, 16, 0, 0, 0, pin)
    assert ring.inflight == 0 and len(ring._free_slots) == lib.US_MAX_SLOTS
    assert ring.counters()["submitted"] == 0


@pytest.mark.timeout(30)
def test_a_changed_wait_tick_bounds_the_next_call(read_one: ReadOne, ring: Ring, pipe: tuple[int, int]) -> None:
    """The tick in ms is converted once per change of ``wait_tick``, not per call: a new
    value must still bound the very next call (here: a hung read failing at ``wait_timeout``
    within about one new tick, not one old tick)."""
    r, _ = pipe
    ring.wait_tick = 20.0
    buf = bytearray(16)
    assert read_one(ring, -1, buf) == -errno.EBADF  # a call converts the 20 s tick
    ring.wait_tick = 0.2
    ring.wait_timeout = 0.5
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match="not complete after") as info:
        read_one(ring, r, buf)
    assert info.value.errno == errno.ETIMEDOUT
    assert time.monotonic() - t0 < 5  # an old tick of 20 s would block the submitting wait for 20 s
    assert ring.inflight == 1  # (the ring's close cancels it)


def test_a_bound_op_passes_every_bound_argument_to_its_sqe(ring: Ring, data_file: int) -> None:
    """``bind_rw_one`` keeps opcode, file, buffer, length, SQE flags and buffer index in one
    C struct (``us_rw_bound``): a fixed read through a registered file into the second
    registered buffer, and a fixed write of part of it back, land where each argument says."""
    bufs = [bytearray(4096), bytearray(4096)]
    pins = ring.register_buffers(bufs)
    ring.register_files([-1, data_file])
    read = ring.bind_rw_one(Op.READ_FIXED, 1, pins[1], 512, int(SqeFlag.FIXED_FILE), 1, (pins, bufs))
    assert read(1024) == 512
    assert bufs[1][:512] == bytes(range(256)) * 2 and bufs[1][512:] == bytes(3584)
    assert bufs[0] == bytes(4096)
    bufs[1][:100] = b"x" * 100
    write = ring.bind_rw_one(Op.WRITE_FIXED, 1, pins[1], 100, int(SqeFlag.FIXED_FILE), 1, (pins, bufs))
    assert write(16384) == 100
    assert os.pread(data_file, 200, 16300)[84:] == b"x" * 100
    assert ring.inflight == 0 and len(ring._free_slots) == lib.US_MAX_SLOTS


def test_the_bound_call_refuses_a_null_struct() -> None:
    assert lib.us_rw_one_bound(ffi.NULL, 0, 0, ffi.new("int32_t[1]"), 100) == -errno.EINVAL
