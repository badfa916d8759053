"""Polling a condition a test cannot wait on directly (another thread's progress), with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout: float, what: str, poll: float = 0.001) -> None:
    """Return once ``cond()`` is true; fail the test (``AssertionError``: *what* never
    happened) if it is still false after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} never happened within {timeout:g} s"
        time.sleep(poll)
