"""Bookkeeping on an exception path that a further raising signal must not cut short."""

from __future__ import annotations

import collections
import functools
import itertools
import os
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

RETRIES = 16
"""Runs of the step after the first that raised: enough for Ctrl-C pressed again and
again, few enough that a step failing for a reason of its own raises instead of spinning."""


def despite_signals(step: Callable[..., T], *args: Any) -> T:
    """Run ``step(*args)`` to its end even when raising signals interrupt it; its result.

    For bookkeeping that must finish before an exception propagates (an op the
    kernel still holds made owned, so nothing frees its buffer or closes its
    descriptor): a Python signal handler that raises (Ctrl-C twice) can do so
    inside *step*, which is therefore run again, so it must be safe to repeat.
    The caller re-raises its own first exception after this returns.

    A handler can also raise at the entry of any Python function, this one
    included (and after any call of a C function, such as building a
    ``functools.partial``): a caller that must not lose the step to that makes
    the first run itself inside ``try`` and calls this from its ``except``
    (``InflightTracker.run``).  A further signal landing between two runs (the
    entry of this function, the loop's jump back) can still escape: pure Python
    cannot make that window zero (docs/api.md, "Ctrl-C during I/O";
    tests/ring/test_audit_signals.py, tests/stack/test_audit_signals.py,
    tests/ring/test_inflight_signals.py)."""
    retries = RETRIES  # (no call before the first run: no point for a signal to raise at)
    while True:
        try:
            return step(*args)
        except BaseException:
            if not retries:
                raise
            retries -= 1


_consume: Callable[[Iterable[Any]], object] = functools.partial(collections.deque, maxlen=0)


def close_popped(fds: list[int]) -> None:
    """Take the descriptors out of *fds* and close them, each in one step no raising signal
    handler can cut: a cleanup that must close a descriptor once, never twice, never leaking it.

    ``os.close(fds.pop())`` has a point between the two calls where a handler runs (the
    number taken out, not closed: leaked), and ``os.close(fds[0]); fds.clear()`` one
    where a rerun closes it again (perhaps another thread's file by then).  Here C pops
    and closes (a ``deque`` consuming ``map(os.close, ...)`` over ``iter(fds.pop, None)``),
    so a rerun (:func:`despite_signals`) finds only what is still open.  A descriptor is
    stored in *fds* the same way, as it is made: :func:`open_stored`."""
    _consume(map(os.close, itertools.islice(iter(fds.pop, None), len(fds))))


def open_stored(
    fds: list[int], path: str | bytes | os.PathLike[str] | os.PathLike[bytes], flags: int, mode: int = 0o777
) -> int:
    """``os.open(path, flags, mode)``, its descriptor appended to *fds* by C as it is made
    (``fds.extend(map(os.open, ...))``): a raising signal handler cannot run between the
    open and the store, so a cleanup with :func:`close_popped` over *fds* never leaks it.
    ``fd = os.open(...)`` has a point there (after the call, before the store).  (Given a
    ``Path``, ``os.open`` runs its ``__fspath__`` in Python, and tests/signal_points.py then
    cannot count the point after the open: callers that sweep it pass a ``str``.)"""
    fds.extend(map(os.open, (path,), (flags,), (mode,)))
    return fds[-1]


def with_descriptor(path: str, flags: int, use: Callable[[int], T], mode: int = 0o777) -> T:
    """``use(fd)`` for *path* opened just for the call (``os.open(path, flags, mode)``), the
    descriptor closed after it, once, wherever a raising signal lands (:func:`open_stored`,
    :func:`close_stored`): for the short opens of the probe, ``tune`` and the benches.
    *path* is a ``str`` (see :func:`open_stored`)."""
    fds: list[int] = []
    try:
        # (Stored before the return: the signal point after the call then lies inside the
        # try, which tests/signal_points.py, raising at the next instruction, also sees.)
        result = use(open_stored(fds, path, flags, mode))
    finally:
        close_stored(fds)
    return result


def opens(path: str, flags: int) -> None:
    """Open *path* and close it again (:func:`with_descriptor`): the open is the test
    (access, ``O_DIRECT`` support, an ``O_EXCL`` claim); its ``OSError`` propagates."""
    with_descriptor(path, flags, _unused)


def _unused(fd: int) -> None:
    """Nothing: :func:`opens` only asks whether the open succeeds."""


def close_stored(fds: list[int]) -> None:
    """Close what :func:`open_stored` put in *fds* (a ``finally``'s cleanup): each descriptor
    once, even when raising signals interrupt the closing (:func:`despite_signals` over
    :func:`close_popped`)."""
    if fds:
        despite_signals(close_popped, fds)


class Repeatable(functools.partial[None]):
    """A batch's done-callback that is safe to run again, which the ring then does when
    a raising signal cut its run short (``Ring._collect_done``, ``_run_then``).

    Any other done-callback cut short by a signal (at its entry included) counts as run
    (docs/api.md, "Ctrl-C during I/O"): the ring cannot tell how far it got.  A callback
    that is the only way an await learns of its batch's end must not be lost so
    (``aio.resolver``, the wake-up of ``wait_batch`` and of the IOPOLL poller's awaits;
    the asyncio coalescer's flush callback), whatever thread collects the batch: it is
    made a ``Repeatable`` (a ``functools.partial``: ``Repeatable(fn, *args)`` is called
    as ``fn(*args, batch)``), and a run again must only repeat what it did (posting a
    result that ``set_result_unless_done`` ignores once set, queueing a delivery that
    runs once).  A second signal, at the entry of the retry, can still escape, as for
    :func:`despite_signals`."""

    __slots__ = ()


def run_callback_again(callback: Callable[[Any], object], batch: object) -> None:
    """After *callback* (one of a batch's done-callbacks) raised: run it to its end again if it
    is :class:`Repeatable` (the caller re-raises the first exception either way)."""
    if type(callback) is Repeatable:
        despite_signals(callback, batch)


FAILURES = (OSError, ValueError)
"""What ends a step that must not be cut short as a failure, for its caller to raise: the
I/O failed (``OSError``), or the file or its stack is closed (``ValueError``).  Anything
else is taken for a raising signal's exception, after which the step runs again.  (A
``TimeoutError`` a signal handler raises is an ``OSError``: taken as a failure, it ends
the step.)"""


def run_to_end(step: Callable[[], object]) -> BaseException | None:
    """Run ``step()`` to its end through raising signals; the first exception it raised, or None.

    For a flush that a close must finish before it closes (a Ctrl-C there would
    otherwise drop the bytes of writes that returned): a raising signal that
    cuts *step* short makes it run again (:func:`despite_signals`) until it
    returns or fails with one of :data:`FAILURES`, which ends it as it ends the
    built-in file's flush.  The exception returned is the first one: the
    signal's (with a failure of a later run as its ``__context__``, so the
    traceback says the data did not reach the kernel) or the failure.  *step*
    must be safe to run again after it raised.

    The exceptions kept lose the locals of *step*'s frames (the traceback's
    lines stay): a file's flush frames hold the buffered layer's ``memoryview``
    and the cffi pin of it, and the garbage collector of Python 3.11 crashes
    when it breaks a reference cycle through them (CPython gh-77894)."""
    try:
        step()
    except FAILURES as e:
        traceback.clear_frames(e.__traceback__)
        return e
    except BaseException as e:  # a raising signal's: the step runs again until done
        traceback.clear_frames(e.__traceback__)
        try:
            late = despite_signals(_failure_of, step)
        except BaseException as again:  # still raising after every retry: a failure of its own
            traceback.clear_frames(again.__traceback__)
            late = again
        if late is not None and e.__context__ is None:
            e.__context__ = late
        return e
    return None


def _failure_of(step: Callable[[], object]) -> BaseException | None:
    try:
        step()
    except FAILURES as e:
        traceback.clear_frames(e.__traceback__)
        return e
    return None
