"""A signal handler that raises as a waited call into C returns (Ctrl-C, SIGALRM) leaves the op owned.

The waited calls (``Ring.rw_one``, ``Ring.submit(wait=True)``) release the GIL
and wait in ``io_uring_enter``; a signal interrupts that wait, and Python runs
its handler right after the call returns, before the call's return value is
looked at.  If the handler raises (``KeyboardInterrupt``, a timeout alarm),
the op is still in the kernel: it must already be owned by a batch of the
ring (its buffer pinned, its completion expected), so that the caller's
``batch_holding`` finds it, the handle's close waits for it, and the
completion, when it comes, is collected instead of breaking the ring (a
``KeyError`` for a slot the ring did not know).  A read from an empty pipe is
an op the kernel holds until a writer shows up.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

import uringstack.ring as ring_module
from uringstack.ring import MAX_SLOTS, Batch, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi


class Alarm(Exception):
    """What the test's SIGALRM handler raises."""


@pytest.fixture
def alarm() -> Iterator[None]:
    def raise_alarm(signum: int, frame: FrameType | None) -> None:
        raise Alarm

    old = signal.signal(signal.SIGALRM, raise_alarm)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def waiting_ring(ring: Ring, whole_first_wait: None) -> Ring:
    # The call's own wait is long (the alarm interrupts it inside the call into C, not in
    # the wait without the lock that follows its first 2 ms: whole_first_wait), and a wait
    # that is not interrupted fails in seconds instead of hanging the test.
    ring.wait_tick = 2.0
    ring.wait_timeout = 3.0
    return ring


def _settled(ring: Ring) -> None:
    assert ring.inflight == 0 and ring._inflight == {}
    assert sorted(ring._free_slots) == list(range(MAX_SLOTS))


def _interrupted(call: Callable[[], object]) -> None:
    """Run *call* (a read from the empty pipe) with the alarm going off during its wait."""
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    with pytest.raises(Alarm):
        call()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _owned_then_fed(ring: Ring, keep: object, buf: bytearray, w: int) -> Batch:
    """The interrupted read is in the kernel, owned by a batch holding *keep*; fed, it completes."""
    assert ring.inflight == 1  # the kernel holds the read
    batch = ring.batch_holding(keep)
    assert batch is not None, "the op in the kernel is owned by nothing: its buffer is not pinned"
    os.write(w, b"12345678")
    assert ring.wait(batch) == [8] and buf == b"12345678"
    ring.reap()
    _settled(ring)
    return batch


@pytest.mark.usefixtures("alarm")
@pytest.mark.parametrize("bound", [False, True], ids=["rw_one", "bind_rw_one"])
def test_rw_one_interrupted_by_a_raising_handler_keeps_its_op_owned(
    waiting_ring: Ring, pipe: tuple[int, int], bound: bool
) -> None:
    """Also through ``Ring.bind_rw_one`` (the prepared QD1 path), which guards its op as rw_one does."""
    ring, (r, w) = waiting_ring, pipe
    buf = bytearray(8)
    keep = (pin := ffi.from_buffer(buf), buf)
    bound_read = ring.bind_rw_one(Op.READ, r, pin, 8, 0, 0, keep)

    def read() -> int:
        return bound_read(0) if bound else ring.rw_one(Op.READ, r, pin, 8, 0, 0, 0, keep)

    _interrupted(read)
    batch = _owned_then_fed(ring, keep, buf, w)
    # the ring goes on working, with a result cell of its own
    os.write(w, b"abcdefgh")
    assert read() == 8
    assert buf == b"abcdefgh" and batch.results == [8]
    _settled(ring)


class Second(Exception):
    """What the test's SIGUSR1 handler raises: a second signal, inside the first one's handling."""


class _SignalInBookkeeping:
    """The binding, except that the first ``us_slot_remaining`` (the first call into C of the
    ownership bookkeeping after rw_one raised) sends this thread a SIGUSR1 first: its
    handler raises :class:`Second` there, as a second Ctrl-C arriving at that moment would."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.sent = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def us_slot_remaining(self, st: Any, slot: int) -> int:
        if not self.sent:
            self.sent += 1
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        return int(self._real.us_slot_remaining(st, slot))


@pytest.mark.usefixtures("alarm")
@pytest.mark.parametrize("bound", [False, True], ids=["rw_one", "bind_rw_one"])
def test_a_second_signal_during_the_ownership_bookkeeping_still_leaves_the_op_owned(
    waiting_ring: Ring, pipe: tuple[int, int], bound: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C twice: the first interrupts the wait, the second raises while rw_one's handler
    makes the op in the kernel owned.  The op must still end up owned (its buffer pinned,
    found by ``batch_holding``) and the first exception propagate."""
    ring, (r, w) = waiting_ring, pipe
    buf = bytearray(8)
    keep = (pin := ffi.from_buffer(buf), buf)
    bound_read = ring.bind_rw_one(Op.READ, r, pin, 8, 0, 0, keep)

    def raise_second(signum: int, frame: FrameType | None) -> None:
        raise Second

    old = signal.signal(signal.SIGUSR1, raise_second)
    try:
        spy = _SignalInBookkeeping(ring_module.lib)
        monkeypatch.setattr(ring_module, "lib", spy)
        _interrupted(lambda: bound_read(0) if bound else ring.rw_one(Op.READ, r, pin, 8, 0, 0, 0, keep))
    finally:
        signal.signal(signal.SIGUSR1, old)
    monkeypatch.undo()
    assert spy.sent == 1, "the bookkeeping made no call into C: the test did not interrupt it"
    _owned_then_fed(ring, keep, buf, w)


@pytest.mark.usefixtures("alarm")
def test_waited_submit_interrupted_by_a_raising_handler_keeps_its_batch_owned(
    waiting_ring: Ring, pipe: tuple[int, int]
) -> None:
    ring, (r, w) = waiting_ring, pipe
    buf = bytearray(8)
    keep = [pin := ffi.from_buffer(buf), buf]
    _interrupted(lambda: ring.submit(Op.READ, r, addrs=address_of(pin), lens=8, offsets=0, keep=keep, wait=True))
    assert ring.inflight == 1
    owners = list(ring._inflight.values())
    assert len(owners) == 1, "the batch in the kernel is owned by nothing: its buffers are not pinned"
    os.write(w, b"12345678")
    assert ring.wait(owners[0]) == [8] and buf == b"12345678"
    ring.reap()
    _settled(ring)


@pytest.mark.usefixtures("alarm")
def test_close_after_an_interrupted_rw_one_cancels_the_op(waiting_ring: Ring, pipe: tuple[int, int]) -> None:
    """close() sees the interrupted op (it cancels and waits for it) instead of unmapping under it."""
    ring = waiting_ring
    buf = bytearray(8)
    keep = (pin := ffi.from_buffer(buf), buf)
    _interrupted(lambda: ring.rw_one(Op.READ, pipe[0], pin, 8, 0, 0, 0, keep))
    batch = ring.batch_holding(keep)
    assert batch is not None
    ring.close()
    assert batch.finished and batch.results[0] < 0  # cancelled (-ECANCELED or -EINTR)


@pytest.mark.usefixtures("alarm")
def test_a_signal_during_a_waited_submit_reaches_python_at_once(waiting_ring: Ring, pipe: tuple[int, int]) -> None:
    """The submitting enter hides its wait's EINTR (it returns the count submitted): the
    handler must still run when the signal comes, not after the rest of the tick (2 s here)."""
    ring, (r, w) = waiting_ring, pipe
    buf = bytearray(8)
    keep = [pin := ffi.from_buffer(buf), buf]
    start = time.monotonic()
    _interrupted(lambda: ring.submit(Op.READ, r, addrs=address_of(pin), lens=8, offsets=0, keep=keep, wait=True))
    took = time.monotonic() - start
    assert took < 1.0, f"the handler ran {took:.2f} s after the 0.05 s alarm (the wait went on after the signal)"
    (batch,) = ring._inflight.values()  # still owned
    os.write(w, b"12345678")
    assert ring.wait(batch) == [8] and buf == b"12345678"
    ring.reap()
    _settled(ring)
