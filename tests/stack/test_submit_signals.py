"""A raising signal right after a batch was submitted leaves it waited for by the handle's close.

A start submits its batch, then returns the pending object that the handle's
tracker keeps (``InflightTracker.start``/``run``, a prepared object's last
batch).  A signal handler that raises (Ctrl-C) can run after the submission
returned and before that pending was stored: right after
``fn(*args, **kwargs)`` in the tracker, at each call the backend makes after
``Ring.submit_columns``, or inside the ring's submission after its C call.
The batch is then in the kernel, and ``close()`` must still wait for it, or
it releases the descriptor under it (the next ``open`` reuses the number).

Each test sends a real signal (tests/signal_points.py) at each point of the
tracker's, the handle's, the prepared objects', the io_uring backend's and
the ring's submission code in turn while the batch hangs in the kernel (the
handle's descriptor is redirected to an empty pipe, or for a write to a full
one), then closes the handle and only afterwards lets the batch complete:
``close()`` must not have returned while the ring still held it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TypeVar

import pytest

from tests.signal_points import Interrupt, code_of, signal_at, sweep
from tests.stack.conftest import GatedReads
from uringstack.ring import Ring
from uringstack.stack import open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.prepared import PreparedIO
from uringstack.stack.uring_backend import UringFileIO

CPU = sorted(os.sched_getaffinity(0))[0]
T = TypeVar("T")

# The tracker's, the handle's and the prepared objects' code, and each backend's own.
_TRACKING = ("ring/inflight.py", "ring/interrupts.py", "ring/io_backend.py", "stack/handle.py", "stack/prepared.py")
_CODE = code_of(Ring.submit_columns, Ring._submit_unfinished_locked, files=(*_TRACKING, "stack/uring_backend.py"))


def _chosen(code: CodeType) -> bool:
    # (not finalizers: a signal there is ignored, test_audit_signals.py tests their handover)
    return code.co_name != "__del__" and _CODE(code)


# Each form: (whether it writes, the call to interrupt).  A read takes 8 bytes from the
# empty pipe; a write is 8 bytes to the full one.
FORMS: dict[str, tuple[bool, Callable[[FileHandle, list[PreparedIO]], object]]] = {
    "start_read_many": (False, lambda h, _: h.start_read_many([0, 0], [bytearray(8), bytearray(8)])),
    "read_many": (False, lambda h, _: h.read_many([0, 0], [bytearray(8), bytearray(8)])),
    "prepared-start": (False, lambda h, p: p[0].start([0, 0])),
    "prepared-run": (False, lambda h, p: p[0].run([0, 0])),
    "write_durable": (True, lambda h, _: h.write_durable(b"y" * 8, 0, sync="dsync")),
}


def _fill(w: int) -> None:
    """Fill the pipe: a write to it then waits until the test reads."""
    os.set_blocking(w, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"\0" * 65536)
    os.set_blocking(w, True)


def _empty(r: int) -> None:
    """Read whatever the pipe holds (without blocking)."""
    os.set_blocking(r, False)
    with contextlib.suppress(BlockingIOError):
        while os.read(r, 65536):
            pass
    os.set_blocking(r, True)


def small_file(tmp_path: os.PathLike[str]) -> str:
    """A 4 KiB file to open (its descriptor is then redirected to the pipe)."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    return path


def _drained(ring: Ring) -> None:
    deadline = time.monotonic() + 5.0
    while ring.inflight and time.monotonic() < deadline:
        ring.reap()
        time.sleep(0.001)
    assert ring.inflight == 0, "the batch never completed"


def _signalled_then_closed(
    h: FileHandle,
    call: Callable[[], object],
    chosen: Callable[[CodeType], bool],
    at: int,
    complete: Callable[[], None],
    seen: Callable[[], T],
) -> tuple[str | None, T]:
    """``call()`` with a signal at point *at* of the *chosen* code, then ``h.close()``; where the
    signal landed and ``seen()`` right after close() returned.  *complete* (what lets the I/O
    complete) runs in a thread once close() began, after a close that does not wait would
    have returned (or 0.3 s into a waited call, which returns only then): joined before
    this returns."""
    closing = threading.Event()

    def completer() -> None:
        closing.wait(0.3)
        time.sleep(0.02)
        complete()

    completing = threading.Thread(target=completer)
    completing.start()
    try:
        with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
            call()
        closing.set()
        h.close()
        return sent.where, seen()
    finally:
        completing.join()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_signal_anywhere_after_a_submission_leaves_the_batch_waited_for_by_close(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int], form: str
) -> None:
    path = small_file(tmp_path)
    r, w = pipe
    write, call = FORMS[form]
    with open_stack(
        overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off", "core.close_timeout_s": 5.0}
    ) as s:
        ring = s.workers[0].rings["storage"]
        # A waited submission waits in its C call for at most this: the batch is still
        # hung when the call returns (the feeder starts only after close() began, or later)
        ring.wait_tick = 0.01

        def once(at: int) -> str | None:
            h = s.open(path)
            assert isinstance(h.io, UringFileIO) and h.ring is ring
            # every submission of this handle addresses the pipe (its fd column); its own
            # descriptor stays what close() releases
            monkeypatch.setattr(h.io, "_fd_and_flags", lambda: (w if write else r, 0))
            prepared = [h.prepare_reads([bytearray(8), bytearray(8)])] if form.startswith("prepared") else []
            if write:
                _fill(w)

            def complete() -> None:
                if write:
                    _empty(r)
                else:
                    os.write(w, b"z" * 16)

            # the ops the ring held when close() returned (complete() had run only if it waited)
            where, held = _signalled_then_closed(
                h, lambda: call(h, prepared), _chosen, at, complete, lambda: ring.inflight
            )
            _drained(ring)
            prepared.clear()
            _empty(r)
            assert not held, f"a signal {where}: close() returned while the ring still held the batch"
            return where

        sweep(once)


class CtrlC(BaseException):
    """What the test's SIGALRM handler raises: not an ``Exception``, as ``KeyboardInterrupt``."""


def _ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise CtrlC


@pytest.mark.timeout(30)
def test_ctrl_c_in_the_first_run_of_a_one_buffer_prepared_read_leaves_it_waited_for_by_close(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    """The first ``run`` of a prepared read of one buffer binds its single op and runs it from
    the backend's start (``UringPrepared.start``); Ctrl-C while the kernel holds that op
    propagates from the start without a pending: the op must still be the prepared object's
    last batch (``done()`` false), so the handle's close waits for it."""
    path = small_file(tmp_path)
    r, w = pipe
    old = signal.signal(signal.SIGALRM, _ctrl_c)
    try:
        with open_stack(
            overrides={"core.backend": "uring", "core.cores": [CPU], "sqpoll.mode": "off", "core.close_timeout_s": 5.0}
        ) as s:
            ring = s.workers[0].rings["storage"]
            ring.wait_tick, ring.wait_timeout = 2.0, 3.0  # the op's own wait: the alarm interrupts it
            h = s.open(path)
            monkeypatch.setattr(h.io, "_fd_and_flags", lambda: (r, 0))
            buf = bytearray(8)
            reads = h.prepare_reads([buf])
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(CtrlC):
                reads.run([0])
            assert ring.inflight == 1  # the kernel holds the read
            assert not reads.done(), "the interrupted op is not the prepared object's last batch"
            writer = threading.Timer(0.1, os.write, (w, b"late"))
            writer.start()
            h.close()
            assert bytes(buf[:4]) == b"late", "close() returned while the kernel held the read"
            writer.join()
            _drained(ring)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_FALLBACK_CODE = code_of(files=(*_TRACKING, "fallback/backend.py", "fallback/pool.py"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", ["prepared-run", "prepared-start", "read_many", "start_read_many"])
def test_on_the_fallback_a_signal_anywhere_after_queuing_leaves_the_ops_waited_for_by_close(
    tmp_path: os.PathLike[str], gated_fallback_reads: GatedReads, form: str
) -> None:
    """The same sweep on the fallback backend (its pool runs the reads; each waits at a gate
    the test opens only after close() began): no read runs after close() returned."""
    path = small_file(tmp_path)
    gate, ended = gated_fallback_reads.gate, gated_fallback_reads.ended
    _, call = FORMS[form]
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [CPU], "core.close_timeout_s": 5.0}) as s:

        def once(at: int) -> str | None:
            h = s.open(path)
            prepared = [h.prepare_reads([bytearray(8), bytearray(8)])] if form.startswith("prepared") else []
            gate.clear()
            ended.clear()
            where, closed = _signalled_then_closed(
                h, lambda: call(h, prepared), _FALLBACK_CODE, at, gate.set, time.monotonic
            )
            time.sleep(0.02)  # (a read still queued after the close would run now)
            prepared.clear()
            late = [t for t in ended if t > closed]
            assert not late, f"a signal {where}: {len(late)} read(s) ran after close() returned"
            return where

        sweep(once)
