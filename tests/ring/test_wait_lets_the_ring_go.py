"""A thread blocked in a wait lets its ring go: other threads submit and complete meanwhile.

``Ring.wait`` (every synchronous handle call, ``pending.wait()``) and
``Ring.rw_one`` (a single read or write: ``read_into``, ``FileIO``) used to wait
in the kernel holding the ring's lock, which every submission and reap on the
ring takes too: blocking calls of threads sharing a worker's ring ran one at a
time, and an op the device never completed held back every other thread's
call on the ring until its wait gave up (60 s).  Now (``Ring.unlocked_waits``:
5.11+, neither IOPOLL nor SINGLE_ISSUER) a wait holds the lock for ``HOLD_MS``
(2 ms) at most; the rest of it lets the lock go, one waiter at a time waiting
in the kernel and draining for the others.  On a kernel without IORING_FEAT_EXT_ARG
(mainline before 5.11; Debian 11's 5.10 has it) the old limit stays, and the
tests say so.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

import uringstack.ring as ring_module
from tests.requires import skip_without
from tests.signal_points import Alarm
from tests.waiting import wait_until
from uringstack.errors import UringIOError
from uringstack.ring import Batch, Ring
from uringstack.ring.aio import wait_batch
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi, lib

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets
SECOND_THREAD_S = 3.0  # a NOP takes microseconds, even under the VM's emulation

# The states a test waits for in another thread (leading in the kernel, waiting behind
# the leader) are polled for up to 10 s (tests/waiting.py), not slept for: a fixed 0.3 s
# is short for a thread's start on a loaded CI host's emulated VM.
pytestmark = pytest.mark.timeout(120)


def _pipe_read(ring: Ring, r: int) -> tuple[Batch, bytearray, list[object]]:
    """Submit a 1-byte read of the empty pipe *r* (the kernel holds it until a byte comes): its
    batch, buffer, and what the batch keeps."""
    buf = bytearray(1)
    keep = [ffi.from_buffer(buf, require_writable=True)]
    batch = ring.submit(Op.READ, r, addrs=int(ffi.cast("uintptr_t", keep[0])), lens=1, offsets=ANY_POS, keep=keep)
    return batch, buf, keep


def _second_thread_finishes(ring: Ring, other: Callable[[], object], r: int, w: int) -> bool:
    """Whether *other* ends within SECOND_THREAD_S in a second thread while a first thread waits
    on *ring* for a read from the empty pipe that it submitted (fed afterwards, whatever the
    answer)."""
    waiting = threading.Thread(target=lambda: ring.wait(_pipe_read(ring, r)[0]))
    done = threading.Event()
    second = threading.Thread(target=lambda: (other(), done.set()))
    try:
        waiting.start()
        waiting.join(0.3)  # the first thread is in its wait
        second.start()
        return done.wait(SECOND_THREAD_S)
    finally:
        os.write(w, b"x")
        waiting.join(10)
        second.join(10)


def _unlocked_ring(entries: int) -> Ring:
    """A ring whose waits let its lock go, or a skip naming what the kernel lacks."""
    ring = Ring(entries=entries)
    if not ring.unlocked_waits:
        ring.close()
        skip_without(
            "IORING_FEAT_EXT_ARG (mainline 5.11; Debian 11's 5.10 has it), without which waits hold the ring's lock"
        )
    return ring


def _data_file(tmp_path: os.PathLike[str], blocks: int) -> str:
    """A file whose 4 KiB block k holds k's 8-byte little-endian number, repeated."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        for k in range(blocks):
            f.write(k.to_bytes(8, "little") * 512)
    return path


def test_a_submission_does_not_wait_for_a_blocked_wait(pipe: tuple[int, int]) -> None:
    ring = Ring(entries=8)
    ring.wait_tick = 0.2  # (where waits hold the lock throughout, each tick ends in the kernel)
    try:
        finished = _second_thread_finishes(ring, lambda: ring.run(Op.NOP, -1), *pipe)
        assert finished == ring.unlocked_waits
    finally:
        ring.close()


def test_a_single_op_does_not_wait_for_a_blocked_wait(tmp_path: os.PathLike[str], pipe: tuple[int, int]) -> None:
    fd = os.open(_data_file(tmp_path, 1), os.O_RDONLY)
    buf = bytearray(4096)
    pin = ffi.from_buffer(buf, require_writable=True)
    ring = Ring(entries=8)
    ring.wait_tick = 0.2
    try:
        finished = _second_thread_finishes(ring, lambda: ring.rw_one(Op.READ, fd, pin, 4096, 0, 0, 0, pin), *pipe)
        assert finished == ring.unlocked_waits
        if finished:
            assert buf == (0).to_bytes(8, "little") * 512
    finally:
        ring.close()
        os.close(fd)


def test_a_wait_holds_its_lock_for_milliseconds_not_a_tick(pipe: tuple[int, int]) -> None:
    """A tick far longer than the test's bound: only a wait whose first part (under the lock)
    is short passes."""
    ring = Ring(entries=8)
    ring.wait_tick = 30.0
    ring.wait_timeout = 60.0
    try:
        finished = _second_thread_finishes(ring, lambda: ring.run(Op.NOP, -1), *pipe)
        assert finished == ring.unlocked_waits
    finally:
        ring.close()


def test_while_a_thread_waits_in_the_kernel_no_other_call_drains_or_waits() -> None:
    """The rule that keeps the waiter in the kernel from sleeping through its own completion:
    while it is out (US_HOLD_LEADER, set here by hand), a submission, a reap and a wait on
    another thread leave every CQE in the CQ for it, and the wait returns at once (-EALREADY)
    instead of blocking with the lock held."""
    ring = Ring(entries=8)
    try:
        hold = ring._hold
        hold[0] |= lib.US_HOLD_LEADER
        try:
            batch = ring.submit(Op.NOP, -1, wait=True)
            assert ring.reap() == []
            assert ring._cq_tail[0] != ring._cq_head[0], "the NOP's CQE was drained behind the waiter's back"
            assert not batch.finished
            started = time.monotonic()
            assert lib.us_wait_slot_for(ring._ring, ring._state, batch.slot, 5000) == -errno.EALREADY
            assert time.monotonic() - started < 1
        finally:
            hold[0] &= ~lib.US_HOLD_LEADER
        assert ring.wait(batch) == [0]
    finally:
        ring.close()


def test_threads_sharing_a_ring_each_get_their_own_data_and_none_waits_out_a_tick(
    tmp_path: os.PathLike[str],
) -> None:
    """Four threads of single reads on one ring, each op timed: with a 30 s tick, a waiter that
    slept through its own completion would take 30 s for one op; every op must take far less,
    and read its own block."""
    blocks = 64
    fd = os.open(_data_file(tmp_path, blocks), os.O_RDONLY)
    ring = Ring(entries=32)
    ring.wait_tick = 30.0
    ring.wait_timeout = 60.0
    slowest: list[float] = []
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        buf = bytearray(4096)
        pin = ffi.from_buffer(buf, require_writable=True)
        worst = 0.0
        try:
            for i in range(300):
                k = (seed * 7919 + i * 31) % blocks
                t = time.monotonic()
                got = ring.rw_one(Op.READ, fd, pin, 4096, k * 4096, 0, 0, pin)
                worst = max(worst, time.monotonic() - t)
                assert got == 4096 and buf[:8] == k.to_bytes(8, "little") and buf[-8:] == buf[:8]
        except BaseException as e:  # (reported by the main thread)
            errors.append(e)
        slowest.append(worst)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(100)
        assert not errors, errors
        assert len(slowest) == 4 and max(slowest) < 10.0, slowest
        assert ring.inflight == 0
    finally:
        ring.close()
        os.close(fd)


@pytest.mark.parametrize("first", ["the waiter behind the leader", "the leader"])
def test_a_waiter_wakes_when_its_op_completes_not_at_its_tick(first: str, pipe: tuple[int, int]) -> None:
    """A leader waits in the kernel for one read, a second thread behind it for another; a
    30 s tick.  Whichever read completes first, the other thread's read, fed next, returns
    within seconds: the leader wakes the waiter whose op it drained, and a leader that
    leaves wakes the waiters left, one of which then leads (else they sleep out the tick)."""
    ring = _unlocked_ring(8)
    ring.wait_tick = 30.0
    ring.wait_timeout = 60.0
    r2, w2 = os.pipe()
    ends: dict[str, float] = {}

    def wait(name: str, batch: Batch) -> None:
        ring.wait(batch)
        ends[name] = time.monotonic()

    try:
        leader_batch = _pipe_read(ring, pipe[0])[0]
        behind_batch = _pipe_read(ring, r2)[0]
        leader = threading.Thread(target=wait, args=("the leader", leader_batch))
        behind = threading.Thread(target=wait, args=("the waiter behind the leader", behind_batch))
        leader.start()
        wait_until(lambda: ring._hold[0] & lib.US_HOLD_LEADER, 10, "the first thread leading, in the kernel")
        behind.start()
        wait_until(lambda: len(ring._gate) == 1, 10, "the second thread waiting behind the leader")
        assert ring._hold[0] & lib.US_HOLD_LEADER
        feeds = {"the leader": pipe[1], "the waiter behind the leader": w2}
        second = next(name for name in feeds if name != first)
        os.write(feeds[first], b"1")
        (leader if first == "the leader" else behind).join(5)
        assert first in ends
        fed = time.monotonic()
        os.write(feeds[second], b"2")
        (behind if first == "the leader" else leader).join(10)
        assert second in ends and ends[second] - fed < 5, "a waiter slept through its op's completion"
    finally:
        os.write(pipe[1], b"x")
        os.write(w2, b"x")
        ring.close()
        os.close(r2)
        os.close(w2)


def test_a_hung_op_does_not_hold_back_other_threads_and_still_times_out(
    tmp_path: os.PathLike[str], pipe: tuple[int, int]
) -> None:
    """While one thread waits for a read that never comes, another thread's reads on the ring
    complete; and the first wait still gives up at wait_timeout although the other thread's
    completions keep waking it."""
    ring = _unlocked_ring(16)
    fd = os.open(_data_file(tmp_path, 8), os.O_RDONLY)
    ring.wait_tick = 0.1
    ring.wait_timeout = 1.5
    raised: list[BaseException] = []
    batch, _, keep = _pipe_read(ring, pipe[0])

    def wait_for_the_pipe() -> None:
        try:
            ring.wait(batch)
        except BaseException as e:
            raised.append(e)

    waiting = threading.Thread(target=wait_for_the_pipe)
    buf = bytearray(4096)
    pin = ffi.from_buffer(buf, require_writable=True)
    try:
        waiting.start()
        reads = 0
        started = time.monotonic()
        while waiting.is_alive() and time.monotonic() - started < 20:
            assert ring.rw_one(Op.READ, fd, pin, 4096, (reads % 8) * 4096, 0, 0, pin) == 4096
            reads += 1
        waiting.join(5)
        assert not waiting.is_alive()
        assert reads > 10  # the other thread's I/O went on
        assert len(raised) == 1 and isinstance(raised[0], UringIOError)
        assert raised[0].errno == errno.ETIMEDOUT
        assert time.monotonic() - started < 10  # the deadline held
        assert ring.batch_holding(keep) is batch  # still owned: the kernel holds the read
    finally:
        os.write(pipe[1], b"x")
        if not batch.finished:
            assert ring.wait(batch) == [1]
        ring.close()
        os.close(fd)


def test_close_while_threads_wait_cancels_their_ops_and_wakes_them(pipe: tuple[int, int]) -> None:
    """Two threads wait on the ring (one in the kernel, one for it) when a third closes it: the
    close cancels both reads and returns at once (it wakes the one in the kernel, whose
    5 s tick it would otherwise wait out), and both waits return the cancellation."""
    ring = _unlocked_ring(8)
    ring.wait_tick = 5.0
    ring.wait_timeout = 30.0
    ring.close_timeout = 5.0
    r2, w2 = os.pipe()
    results: dict[int, object] = {}
    batches = [_pipe_read(ring, pipe[0])[0], _pipe_read(ring, r2)[0]]

    def wait(i: int) -> None:
        try:
            results[i] = ring.wait(batches[i])
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        # both past their first part: waiting without the lock
        wait_until(lambda: ring._hold[0] & lib.US_HOLD_LEADER and len(ring._gate) == 1, 10, "a leader and a waiter")
        started = time.monotonic()
        ring.close()
        assert time.monotonic() - started < 2.5
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert results == {0: [-errno.ECANCELED], 1: [-errno.ECANCELED]}
    finally:
        os.close(r2)
        os.close(w2)


def test_a_wait_for_cq_room_lets_the_ring_go() -> None:
    """The ring's cap of ops in flight is taken by reads the kernel holds; another thread's
    submission waits for room (30 s ticks) without holding the ring, and goes out once a
    read completes."""
    ring = _unlocked_ring(4)
    ring.wait_tick = 30.0
    ring.wait_timeout = 60.0
    pipes = [os.pipe() for _ in range(ring.cq_cap)]
    results: list[object] = []
    try:
        held = [_pipe_read(ring, r)[0] for r, _ in pipes]
        submitting = threading.Thread(target=lambda: results.append(ring.run(Op.NOP, -1)))
        submitting.start()
        time.sleep(0.3)
        assert submitting.is_alive() and not results  # waiting for room
        started = time.monotonic()
        assert ring.reap() == []
        assert time.monotonic() - started < 1, "the wait for room held the ring"
        os.write(pipes[0][1], b"r")
        submitting.join(10)
        assert results == [[0]]
        assert held[0].finished and held[0].results == [1]
    finally:
        for _, w in pipes:
            os.write(w, b"x")
        ring.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_an_event_loop_on_the_ring_goes_on_while_a_thread_waits_for_a_hung_op(
    tmp_path: os.PathLike[str], pipe: tuple[int, int]
) -> None:
    """A thread waits (30 s ticks) for a read that never comes; an event loop on this thread
    submits reads of a file on the same ring and awaits them: each completes at once (the
    waiting thread, in the kernel, drains their completions and posts them to the loop)."""
    ring = _unlocked_ring(8)
    ring.wait_tick = 30.0
    ring.wait_timeout = 60.0
    fd = os.open(_data_file(tmp_path, 4), os.O_RDONLY)
    bufs = [bytearray(4096) for _ in range(4)]
    pins = [ffi.from_buffer(b, require_writable=True) for b in bufs]
    waiting = threading.Thread(target=lambda: ring.wait(_pipe_read(ring, pipe[0])[0]))

    async def read_all() -> list[list[int]]:
        got = []
        for k, pin in enumerate(pins):
            batch = ring.submit(
                Op.READ, fd, addrs=int(ffi.cast("uintptr_t", pin)), lens=4096, offsets=k * 4096, keep=[pin]
            )
            got.append(await asyncio.wait_for(wait_batch(ring, batch), 5))
        return got

    try:
        waiting.start()
        time.sleep(0.3)  # past its first part: waiting without the lock
        started = time.monotonic()
        assert asyncio.run(read_all()) == [[4096]] * 4
        assert time.monotonic() - started < 5
        assert [b[:8] for b in bufs] == [k.to_bytes(8, "little") for k in range(4)]
    finally:
        os.write(pipe[1], b"x")
        waiting.join(10)
        ring.close()
        os.close(fd)


def test_wait_any_lets_the_ring_go_and_returns_what_completed(pipe: tuple[int, int]) -> None:
    ring = _unlocked_ring(8)
    ring.wait_tick = 30.0
    ring.wait_timeout = 60.0
    got: list[object] = []
    try:
        batch = _pipe_read(ring, pipe[0])[0]
        waiting = threading.Thread(target=lambda: got.extend(ring.wait_any()))
        waiting.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert ring.reap() == []  # the ring is not held (a NOP's completion would end wait_any)
        assert time.monotonic() - started < 1
        os.write(pipe[1], b"w")
        waiting.join(10)
        assert got == [batch] and batch.results == [1]
    finally:
        ring.close()


class _NoCancel:
    """The binding with ``us_cancel_all`` doing nothing: a close then waits out the leader's tick."""

    def __getattr__(self, name: str) -> object:
        if name == "us_cancel_all":
            return lambda *args: -errno.EALREADY
        return getattr(lib, name)


def test_a_close_cut_short_while_a_thread_waits_in_the_kernel_leaves_the_ring_to_it(
    counted_alarm: list[int], pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a close waits for the thread in the kernel: the ring is not freed under
    it (it reads the ring's mappings when it comes back); that thread frees it, once."""
    ring = _unlocked_ring(8)
    ring.wait_tick = 5.0
    ring.wait_timeout = 30.0
    batch = _pipe_read(ring, pipe[0])[0]
    results: list[object] = []
    leader = threading.Thread(target=lambda: results.append(ring.wait(batch)))
    leader.start()
    wait_until(lambda: ring._hold[0] & lib.US_HOLD_LEADER, 10, "the thread leading, in the kernel")
    monkeypatch.setattr(ring_module, "lib", _NoCancel())
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    with pytest.raises(Alarm):
        ring.close()
    monkeypatch.undo()
    assert ring.closed and not ring._exited, "the ring was freed under the thread in the kernel"
    os.write(pipe[1], b"c")
    leader.join(10)
    assert not leader.is_alive()
    assert ring._exited == [None]  # freed by the thread that led, once
    assert results == [[1]]


@pytest.mark.parametrize("role", ["leader", "waiting for the leader"])
def test_a_raising_signal_during_a_wait_without_the_lock_leaves_the_ring_whole(
    role: str, counted_alarm: list[int], pipe: tuple[int, int]
) -> None:
    """Ctrl-C (a raising SIGALRM handler) while the main thread waits without the lock, in the
    kernel or behind another waiter: the lock is held again when it propagates (the caller's
    ``with`` releases it), no thread is left marked as waiting in the kernel, the op stays
    owned, and the ring goes on working."""
    ring = _unlocked_ring(8)
    ring.wait_tick = 5.0
    ring.wait_timeout = 30.0
    r2, w2 = os.pipe()
    other = None
    try:
        if role == "waiting for the leader":
            other_batch, _, _ = _pipe_read(ring, r2)
            other = threading.Thread(target=ring.wait, args=(other_batch,))
            other.start()
            # it leads: in the kernel without the lock
            wait_until(lambda: ring._hold[0] & lib.US_HOLD_LEADER, 10, "the other thread leading, in the kernel")
        batch, buf, keep = _pipe_read(ring, pipe[0])
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Alarm):
            ring.wait(batch)
        assert ring._lock.acquire(False), "the ring's lock was left held"
        ring._lock.release()
        if role == "leader":
            assert not ring._hold[0] & lib.US_HOLD_LEADER
        assert ring.batch_holding(keep) is batch
        assert ring.run(Op.NOP, -1) == [0]
        os.write(pipe[1], b"y")
        assert ring.wait(batch) == [1] and buf == b"y"
    finally:
        os.write(w2, b"z")
        if other is not None:
            other.join(10)
            assert not other.is_alive()
        ring.close()
        os.close(r2)
        os.close(w2)
