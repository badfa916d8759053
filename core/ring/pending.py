"""Pending I/O: what a backend returns for a started batch, sync or asyncio."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from uringstack.ring import aio
from uringstack.ring.polling import check_poller, is_polled, polled_done, wait_polled

if TYPE_CHECKING:
    from uringstack.ring import Batch, Ring


class Pending(Protocol):
    """A started batch.  ``wait()`` blocks until every op completed and returns
    per-op results (bytes moved or ``-errno``); ``wait_async()`` is the
    asyncio form and never blocks the event loop."""

    n: int

    def done(self) -> bool: ...

    def wait(self) -> list[int]: ...

    async def wait_async(self) -> list[int]: ...


class CompletedPending:
    """A Pending whose results are already known (e.g. an empty batch)."""

    def __init__(self, results: list[int]) -> None:
        self.n = len(results)
        self._results = results

    def done(self) -> bool:
        return True

    def wait(self) -> list[int]:
        return self._results

    async def wait_async(self) -> list[int]:
        await asyncio.sleep(0)
        return self._results

    def cancel(self) -> None:
        """Nothing to cancel: the batch is over."""


class UringPending:
    """A batch in flight on a ring."""

    __slots__ = ("batch", "n", "ring")

    def __init__(self, ring: Ring, batch: Batch) -> None:
        self.ring = ring
        self.batch = batch
        self.n = batch.n

    def done(self) -> bool:
        if not self.batch.finished and not self.ring.closed:
            self.ring.try_reap()
        return self.batch.finished

    def wait(self) -> list[int]:
        batch = self.batch
        if batch.finished:  # reaped along with an earlier batch: no ring call
            return batch.results
        return self.ring.wait(batch)

    async def wait_async(self) -> list[int]:
        return await aio.wait_batch(self.ring, self.batch)

    def cancel(self) -> None:
        """Ask the kernel to cancel the batch's ops still in flight, without waiting
        (:meth:`~uringstack.ring.Ring.cancel_ops`): each still completes, with
        ``-ECANCELED`` or its own result, and only then is its buffer free."""
        self.ring.cancel_ops(self.batch)


class PolledPending(UringPending):
    """A batch in flight on an IOPOLL ring: only polling makes it progress.

    ``wait`` is inherited: Ring.wait polls the device with GETEVENTS passes
    (min_complete=0) until the batch completed, bounded like any wait (see
    :mod:`uringstack.ring.polling`)."""

    __slots__ = ()

    def done(self) -> bool:
        batch = self.batch
        # (a finished batch, every restart's check of the last one, without polled_done's frame)
        return batch.finished or polled_done(self.ring, batch)

    async def wait_async(self) -> list[int]:
        return await wait_polled(self.ring, self.batch)


def pending_for(ring: Ring, batch: Batch) -> UringPending:
    """The pending of *batch* on *ring*: :class:`PolledPending` on an IOPOLL ring, else :class:`UringPending`."""
    return PolledPending(ring, batch) if is_polled(ring) else UringPending(ring, batch)


def check_awaitable(ring: Ring) -> None:
    """Raise the ``RuntimeError`` an await of a batch on *ring* would raise from this event
    loop (another open loop watches or polls the ring), before the caller starts the batch.

    An asyncio call that starts I/O and then awaits it checks first: refused after the
    start, the I/O would still run with its caller told it failed (a read landing in a
    buffer the caller took back, a write reported as not done)."""
    if is_polled(ring):
        check_poller(ring)
    else:
        aio.check_bridge(ring)
