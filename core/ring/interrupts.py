"""Bookkeeping on an exception path that a further raising signal must not cut short."""

from __future__ import annotations

from collections.abc import Callable
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
