"""A raising signal at any point of the in-flight tracker's bookkeeping leaves its counts right.

``InflightTracker`` counts each start in (``enter``) and out (``left``) so that
``close()`` waits for calls still running, and keeps the pending of an op
that outlived its call (``keep``) so that ``close()`` waits for that op.  A
signal handler that raises (Ctrl-C, twice) can cut that bookkeeping at any
point CPython runs handlers at (tests/signal_points.py); each test here sends
a real signal at each such point of ``core/ring/inflight.py`` and
``core/ring/interrupts.py`` in turn and checks what a close sees afterwards:
a start left counted in would make it wait its whole timeout and report a
lost completion that was not lost ("ran past"); an op in flight left
untracked would let it release the descriptor under the op.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tests.signal_points import Alarm, Interrupt, code_of, signal_at, sweep
from uringstack.errors import RingClosedError
from uringstack.ring import Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.inflight import InflightTracker
from uringstack.ring.native import ffi
from uringstack.ring.pending import UringPending

TRACKER = code_of(files=("ring/inflight.py", "ring/interrupts.py"))


class FakePending:
    """A started op the test completes; ``wait()`` is interrupted by a real SIGALRM when *hang*."""

    def __init__(self, hang: bool) -> None:
        self.n = 1
        self.finished = not hang

    def done(self) -> bool:
        return self.finished

    def wait(self) -> list[int]:
        if not self.finished:
            signal.pthread_kill(threading.get_ident(), signal.SIGALRM)  # its handler raises here
        return [1]

    async def wait_async(self) -> list[int]:
        raise AssertionError("not awaited here")


def _closes_clean(t: InflightTracker, where: str | None) -> None:
    try:
        t.close(timeout=0.3)
    except TimeoutError as e:
        raise AssertionError(f"a signal {where} left a start counted: {e}") from None


def _closes_waiting_for(t: InflightTracker, pending: FakePending, where: str | None) -> None:
    """close() waits for *pending* (tracked, nothing else counted), then returns once it completes."""
    with pytest.raises(TimeoutError) as got:
        t.close(timeout=0.3)
    assert "1 op(s) in 1 batch(es)" in str(got.value), f"a signal {where}: {got.value}"
    pending.finished = True
    t.close(timeout=0.3)


def test_a_signal_anywhere_in_enter_and_left_leaves_nothing_counted() -> None:
    def once(at: int) -> str | None:
        t = InflightTracker("f")
        with signal_at(TRACKER, at) as sent:
            try:
                t.enter()
            except Interrupt:
                pass  # refused: nothing to count out
            else:
                t.left()
        _closes_clean(t, sent.where)
        return sent.where

    sweep(once)


def test_a_signal_anywhere_in_a_refused_enter_leaves_nothing_counted() -> None:
    """A close waiting for another start must not be held up by a refused one that a signal cut short."""

    def once(at: int) -> str | None:
        t = InflightTracker("f")
        t.enter()  # another thread's start, still running while the close waits
        closing = threading.Thread(target=t.close, kwargs={"timeout": 5.0})
        closing.start()
        while not t.closed:
            pass
        with signal_at(TRACKER, at) as sent, pytest.raises((Interrupt, RingClosedError)):
            t.enter()
        t.left()  # the other start returns: the close may go on
        closing.join(1.0)
        assert not closing.is_alive(), f"a signal {sent.where} left a refused start counted"
        return sent.where

    sweep(once)


def test_a_signal_anywhere_in_run_leaves_nothing_counted() -> None:
    def once(at: int) -> str | None:
        t = InflightTracker("f")
        with signal_at(TRACKER, at) as sent, contextlib.suppress(Interrupt):
            assert t.run(lambda: FakePending(hang=False)) == [1]
        _closes_clean(t, sent.where)
        return sent.where

    sweep(once)


def test_a_second_signal_anywhere_in_run_keeps_the_interrupted_op_tracked(counted_alarm: list[int]) -> None:
    """Ctrl-C twice: the first interrupts the wait (the op stays in flight), the second lands
    at each point of the bookkeeping after it; the first propagates, the op stays tracked."""

    def once(at: int) -> str | None:
        t = InflightTracker("f")
        pending = FakePending(hang=True)
        counted_alarm.clear()
        with (
            signal_at(TRACKER, at, armed=lambda: bool(counted_alarm)) as sent,
            pytest.raises((Alarm, Interrupt)) as got,
        ):
            t.run(lambda: pending)
        assert counted_alarm == [1]
        # (Interrupt only from a point past the bookkeeping: the caller's own exception)
        assert got.type is Alarm or sent.where is not None
        _closes_waiting_for(t, pending, sent.where)
        return sent.where

    sweep(once)


def _submitting_a_hung_read(ring: Ring, r: int) -> Callable[[], UringPending]:
    """A start: submits a read of an empty pipe (the kernel holds it until the test writes)."""
    buf = bytearray(8)
    pin = ffi.from_buffer(buf, require_writable=True)

    def fn() -> UringPending:
        return UringPending(ring, ring.submit(Op.READ, r, addrs=address_of(pin), lens=8, offsets=0, keep=[pin, buf]))

    return fn


def _close_with_the_read_hung(t: InflightTracker, ring: Ring, w: int) -> str:
    """Close *t* while the ring holds the pipe read (what the close reported), then complete
    the read and close again (the tracker lets go of it)."""
    try:
        t.close(timeout=0.1)
        got = "close() returned while the ring held the batch"
    except TimeoutError as e:
        got = str(e)
    os.write(w, b"z" * 8)
    deadline = time.monotonic() + 5.0
    while ring.inflight and time.monotonic() < deadline:
        ring.reap()
    t.close(timeout=0.3)
    return got


@pytest.mark.parametrize("how", ["start", "run"])
def test_a_signal_anywhere_in_start_or_run_keeps_the_submitted_batch_tracked(
    ring: Ring, pipe: tuple[int, int], how: str
) -> None:
    """A signal before the batch was submitted leaves nothing; after it, close() waits for
    the batch, whether the call returned its pending or raised before that pending was
    stored (right after ``fn(*args, **kwargs)`` returned: the ring's record of the batch)."""
    r, w = pipe
    ring.wait_tick = 0.01  # run()'s wait: back to the point after it soon, the read still hung

    def once(at: int) -> str | None:
        t = InflightTracker("f")
        fn = _submitting_a_hung_read(ring, r)
        feeder = threading.Timer(0.3, os.write, (w, b"z" * 8))  # run() waits for the read: complete it then
        if how == "run":
            feeder.start()
        with signal_at(TRACKER, at) as sent, contextlib.suppress(Interrupt):
            t.start(fn) if how == "start" else t.run(fn)
        feeder.cancel()
        if ring.inflight:
            got = _close_with_the_read_hung(t, ring, w)
            assert "1 op(s) in 1 batch(es)" in got, f"a signal {sent.where}: {got}"
        else:
            _closes_clean(t, sent.where)
        if feeder.is_alive():
            feeder.join()
        return sent.where

    sweep(once)


def test_a_batch_a_wait_submitted_before_it_raised_is_tracked_too(ring: Ring, pipe: tuple[int, int]) -> None:
    """A pending whose wait submits a further batch (IOPOLL's durable write: the flush after
    the write) and raises right after it, before storing it (a signal there): close() waits
    for that batch too, not only for the pending."""
    r, w = pipe
    submit = _submitting_a_hung_read(ring, r)

    class SubmitsInWait(FakePending):
        def wait(self) -> list[int]:
            submit()
            raise Interrupt("right after the submission")

    t = InflightTracker("f")
    pending = SubmitsInWait(hang=False)  # (its own op is done: only the batch its wait submitted is not)
    with pytest.raises(Interrupt):
        t.run(lambda: pending)
    assert ring.inflight == 1
    got = _close_with_the_read_hung(t, ring, w)
    assert "1 op(s) in 1 batch(es)" in got, got


def test_a_signal_anywhere_in_run_returning_while_a_close_waits_lets_the_close_return() -> None:
    """A close that began while the call ran returns once it leaves, wherever a signal cut
    the leaving short (a count that moved without the close being told must not hold it up)."""

    def once(at: int) -> str | None:
        t = InflightTracker("f")
        closing = threading.Thread(target=t.close, kwargs={"timeout": 5.0})

        def fn() -> FakePending:
            closing.start()  # the close begins while this call runs: it waits for it
            while not t.closed:
                pass
            return FakePending(hang=False)

        with signal_at(TRACKER, at) as sent, contextlib.suppress(Interrupt):
            t.run(fn)
        if closing.ident is None:  # the signal came before the call: nothing began
            _closes_clean(t, sent.where)
            return sent.where
        closing.join(1.0)
        assert not closing.is_alive(), f"a signal {sent.where} kept the close waiting"
        return sent.where

    sweep(once)


def test_a_signal_anywhere_in_a_close_leaves_the_counts_right_for_its_retry() -> None:
    """A file's close that Ctrl-C cut short is run again (``FileHandle.close``): it must then
    return at once, not wait its whole timeout for a start that a half-read count invented
    (seen in a stress run, session 41: "ran past 10 s" closing a file no other thread used)."""

    def once(at: int) -> str | None:
        t = InflightTracker("f")
        with signal_at(TRACKER, at) as sent, contextlib.suppress(Interrupt):
            t.close(timeout=0.3)
        _closes_clean(t, sent.where)
        return sent.where

    sweep(once)


def test_a_signal_anywhere_in_a_close_or_idle_keeps_a_running_start_counted() -> None:
    """While another thread's call runs, a close or the reaper's idle() cut short by a signal
    must not count it out: a close after that would release the descriptor under the call."""

    def once(at: int) -> str | None:
        t = InflightTracker("f")
        t.enter()  # another thread's call, running throughout
        with signal_at(TRACKER, at) as sent, contextlib.suppress(Interrupt, TimeoutError):
            t.idle()
            t.close(timeout=0.01)
        assert not t.idle(), f"a signal {sent.where} counted a running start out"
        t.left()
        _closes_clean(t, sent.where)
        return sent.where

    sweep(once)
