"""A real signal delivered at a chosen point where CPython runs a raising signal handler.

CPython runs a Python signal handler only at certain points of the code (the
"eval breaker" checks): at the entry of a Python function, right after a call
of a C function returns, and at a loop's jump back.  A handler that raises
(Ctrl-C's ``KeyboardInterrupt``, a timeout alarm) makes that point raise.
Bookkeeping that must not be cut short (the in-flight tracker's counts) has to
hold at every such point, which :class:`SignalAt` makes testable: a trace
function (``sys.settrace`` with opcode events) over chosen code counts those
points as the code runs and, at the *at*-th, sends this thread a real
``SIGUSR1``; its handler (:class:`Interrupt`) runs inside the trace function
and the exception enters the traced frame there.  Tracing stops at once (a
trace function that raises is removed), so one run gets one signal.

A point after a ``CALL`` whose callee ran Python code is not counted: a call
of a Python function is made without a C call in between, and its return is
not such a point (its own points are counted in it when it is in the chosen
code).  That also leaves out the point after a C callee that ran Python code
(a class with ``__init__`` in Python, a ``functools.partial``), which the
trace cannot tell apart; ``CALL_FUNCTION_EX`` (``f(*args, **kwargs)``) always
goes through C and is always followed by a point.  Python 3.11's instructions.

The exception enters at the instruction after the call, where CPython raises it at the
call itself.  That differs in one place: after the last call of a ``try`` body (``try:
return f(x)`` with a ``finally``), the next instruction starts the ``finally`` inlined
after the protected range, so the trace's exception skips the ``finally`` that CPython
would run (checked with ``os.kill`` of the process itself inside such a ``try``).
Swept code stores such a result first (``result = f(x)``, returned after the ``try``):
the point then lies inside the range for both.
"""

from __future__ import annotations

import dis
import gc
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

_CALLS = frozenset({"CALL"})
_CALLS_THROUGH_C = frozenset({"CALL_FUNCTION_EX"})  # never inlined: a point even when Python ran
_JUMPS_BACK = frozenset({"JUMP_BACKWARD"})


class Alarm(Exception):
    """What the ``counted_alarm`` fixture's SIGALRM handler raises: a first signal, interrupting a wait."""


class Interrupt(Exception):
    """What the SIGUSR1 handler installed by :func:`signal_at` raises (a second Ctrl-C)."""


class Stop(BaseException):
    """A signal's exception that is not an ``Exception``, as Ctrl-C's ``KeyboardInterrupt``
    (which pytest itself would take for the user's)."""


def _opnames(code: CodeType) -> dict[int, str]:
    return {ins.offset: ins.opname for ins in dis.get_instructions(code)}


class SignalAt:
    """Counts the signal points in frames of code accepted by *chosen*, once *armed()*; sends
    SIGUSR1 at point number *at* (0-based).  ``where`` then names that point."""

    def __init__(self, chosen: Callable[[CodeType], bool], at: int, armed: Callable[[], bool]) -> None:
        self.chosen = chosen
        self.at = at
        self.armed = armed
        self.count = 0
        self.where: str | None = None
        self._ops: dict[CodeType, dict[int, str]] = {}
        self._last: dict[FrameType, int] = {}  # the instruction a traced frame ran last
        self._python_ran = False  # a Python frame began since that instruction
        self._tid = threading.get_ident()

    def _point(self, frame: FrameType, what: str) -> None:
        if not self.armed():
            return
        if self.count == self.at:
            self.where = f"{frame.f_code.co_qualname} {what} (line {frame.f_lineno})"
            self.count += 1
            self._last.clear()  # (tracing ends here: hold no frame, nor what its locals hold)
            signal.pthread_kill(self._tid, signal.SIGUSR1)  # the handler raises right here
            raise AssertionError("the SIGUSR1 handler did not raise")  # pragma: no cover
        self.count += 1

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The global trace function: every Python frame's 'call' event."""
        self._python_ran = True
        if event != "call" or not self.chosen(frame.f_code):
            return None
        if frame.f_code not in self._ops:
            self._ops[frame.f_code] = _opnames(frame.f_code)
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        self._point(frame, "at its entry")
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            last = self._last.get(frame)
            self._last[frame] = frame.f_lasti
            if last is not None:
                op = self._ops[frame.f_code].get(last)
                if (op in _CALLS and not self._python_ran) or op in _CALLS_THROUGH_C or op in _JUMPS_BACK:
                    self._point(frame, f"after {op} at {last}")
            self._python_ran = False
        elif event == "exception":
            self._last.pop(frame, None)  # the raising instruction is not followed by a point
        elif event == "return":
            self._last.pop(frame, None)
            self._python_ran = True
        return self._local


@contextmanager
def signal_at(
    chosen: Callable[[CodeType], bool],
    at: int,
    armed: Callable[[], bool] = lambda: True,
    raising: type[BaseException] = Interrupt,
) -> Iterator[SignalAt]:
    """Within the block, SIGUSR1 raises *raising* (:class:`Interrupt`, or :class:`Stop` as Ctrl-C's
    ``KeyboardInterrupt`` would) at the *at*-th signal point of the code *chosen* accepts
    (``sent.where`` says where; None: the block had fewer points)."""
    sent = SignalAt(chosen, at, armed)

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise raising(sent.where)

    # A finalizer the cyclic collector ran in the block (an earlier run's file object in a
    # cycle, found when the code under test allocates) would take the signal: its exception
    # is "ignored in __del__" and the call under test never sees it.  With the collector off
    # (a full collection per point would double these tests' time) each point belongs to the
    # code being tested.
    was_enabled = gc.isenabled()
    gc.disable()
    old_handler = signal.signal(signal.SIGUSR1, raise_interrupt)
    old_trace = sys.gettrace()
    sys.settrace(sent.trace)
    try:
        yield sent
    finally:
        sys.settrace(old_trace)
        signal.signal(signal.SIGUSR1, old_handler)
        sent._last.clear()
        if was_enabled:
            gc.enable()


def code_of(*functions: Callable[..., Any], files: tuple[str, ...] = ()) -> Callable[[CodeType], bool]:
    """Accepts the code of *functions* and of every function in a file whose path ends with one of *files*."""
    codes = {getattr(f, "__func__", f).__code__ for f in functions}
    return lambda code: code in codes or (bool(files) and code.co_filename.endswith(files))


def sweep(once: Callable[[int], str | None], most: int = 200) -> int:
    """Run ``once(at)`` for at = 0, 1, ... until it returns None (``sent.where``: the run had
    fewer points); how many points there were.  ``once`` raises AssertionError for a point
    where the code under test failed: every point is tried, the failures reported together."""
    failed: list[str] = []
    for at in range(most):
        try:
            where = once(at)
        except AssertionError as e:  # (the signal was sent: the run had this point)
            failed.append(str(e).splitlines()[0])
            continue
        if where is None:
            assert at > 0, "no signal point was reached: the test tested nothing"
            assert not failed, "\n".join(failed)
            return at
    raise AssertionError("\n".join([f"more than {most} signal points", *failed[:5]]))
