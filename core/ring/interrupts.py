"""Bookkeeping on an exception path that a further raising signal must not cut short."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

RETRIES = 16
"""Runs of the step after the first that raised: enough for Ctrl-C pressed again and
again, few enough that a step failing for a reason of its own raises instead of spinning."""


def despite_signals(step: Callable[[], T]) -> T:
    """Run *step* to its end even when raising signals interrupt it; its result.

    For bookkeeping that must finish before an exception propagates (an op the
    kernel still holds made owned, so nothing frees its buffer or closes its
    descriptor): a Python signal handler that raises (Ctrl-C twice) can do so
    inside *step*, which is therefore run again, so it must be safe to repeat.
    The caller re-raises its own first exception after this returns.  A third
    signal landing between two runs can still escape: pure Python cannot make
    that window zero (tests/ring/test_audit_signals.py,
    tests/stack/test_audit_signals.py)."""
    for _ in range(RETRIES):
        try:
            return step()
        except BaseException:
            continue
    return step()
