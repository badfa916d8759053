"""The tracker's start count (``enter``/``leave``), which takes no lock: a close still waits
for every start admitted before it, and refuses every start after it.

A handle's single waited op (``read_into``, ``prepared.run`` of one buffer)
is tracked only by this count while it runs, so a close that missed one
would close the descriptor under an op in flight.
"""

from __future__ import annotations

import threading
import time

import pytest

from uringstack.errors import RingClosedError
from uringstack.ring.inflight import InflightTracker


def test_close_waits_for_an_admitted_start() -> None:
    t = InflightTracker("f")
    t.enter()
    with pytest.raises(TimeoutError, match="ran past"):
        t.close(timeout=0.2)
    t.leave()
    t.close(timeout=1.0)  # nothing admitted is left: returns at once


def test_close_returns_when_the_start_leaves() -> None:
    t = InflightTracker("f")
    t.enter()
    left = threading.Event()

    def later() -> None:
        time.sleep(0.2)
        left.set()
        t.leave()

    th = threading.Thread(target=later)
    th.start()
    t0 = time.monotonic()
    t.close(timeout=5.0)
    assert left.is_set()  # close() returned only after the leave
    assert time.monotonic() - t0 < 2.0  # woken by the leave, not by its timeout
    th.join()


def test_a_refused_start_leaves_nothing_counted() -> None:
    t = InflightTracker("f")
    t.close(timeout=1.0)
    for _ in range(3):
        with pytest.raises(RingClosedError):
            t.enter()
    t.close(timeout=0.2)  # would time out if the refused starts stayed counted


def _close_under_starts() -> tuple[int, list[int], bool]:
    """One thread starts and leaves in a tight loop while this one closes: how many
    starts were inside when close() returned, those admitted after, whether it stopped."""
    t = InflightTracker("f")
    inside = [0]  # one starter thread: exact without a lock of the test's own
    after: list[int] = []
    closed = threading.Event()
    stop = threading.Event()

    def starter() -> None:
        while not stop.is_set():
            try:
                t.enter()
            except RingClosedError:
                return
            inside[0] += 1
            if closed.is_set():
                after.append(1)
            inside[0] -= 1
            t.leave()

    th = threading.Thread(target=starter)
    th.start()
    time.sleep(0.005)
    t.close(timeout=5.0)
    now_inside = inside[0]
    closed.set()
    stop.set()
    th.join(5.0)
    return now_inside, after, not th.is_alive()


def test_no_start_runs_after_close_returned() -> None:
    """Once close() returned, no start is inside (admitted and not left), and none is admitted again."""
    for _ in range(20):
        assert _close_under_starts() == (0, [], True)
