"""The tracker's registered owners (prepared batches): a close waits for them, also when dropped unclosed.

A prepared batch is registered with its handle's tracker once instead of
adding a set entry per start (the per-batch cost of the sync API), so these
check the two ways its in-flight I/O could escape a close: the owner itself
reporting not done, and an owner garbage-collected without ``close()``
whose last batch is still in flight.
"""

from __future__ import annotations

import gc
import pathlib

import pytest

from uringstack.errors import RingClosedError
from uringstack.ring.inflight import InflightTracker
from uringstack.stack import open_stack


class FakePending:
    """A Pending whose completion the test decides."""

    def __init__(self, n: int = 4) -> None:
        self.n = n
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def wait(self) -> list[int]:
        raise AssertionError("a close never blocks in wait()")

    async def wait_async(self) -> list[int]:
        raise AssertionError("not awaited here")


class Owner:
    def __init__(self) -> None:
        self.n = 4
        self.last = FakePending()

    def done(self) -> bool:
        return self.last.done()


def test_close_waits_for_a_registered_owner() -> None:
    t = InflightTracker("f")
    owner = Owner()
    t.register(owner)
    with pytest.raises(TimeoutError, match="4 op"):
        t.close(timeout=0.2)
    owner.last.finished = True
    t.close(timeout=2)


def test_enter_is_refused_once_closed_and_register_too() -> None:
    t = InflightTracker("f")
    t.close(timeout=1)
    with pytest.raises(RingClosedError):
        t.enter()
    with pytest.raises(RingClosedError):
        t.register(Owner())


def test_unregister_hands_the_last_pending_over() -> None:
    t = InflightTracker("f")
    owner = Owner()
    t.register(owner)
    t.unregister(owner, owner.last)
    with pytest.raises(TimeoutError):
        t.close(timeout=0.2)
    owner.last.finished = True
    t.close(timeout=2)


def test_a_prepared_batch_dropped_unclosed_is_still_waited_for(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    with open_stack(overrides={"core.backend": "uring"}) as stack:
        h = stack.open(str(path))
        prepared = h.prepare_reads([bytearray(4096)])
        fake = FakePending(1)
        prepared._last = fake  # as if its batch were still in flight
        del prepared
        gc.collect()
        with pytest.raises(TimeoutError, match="1 op"):
            h._inflight.close(timeout=0.2)
        fake.finished = True
        h._inflight.close(timeout=2)
        h.close()
