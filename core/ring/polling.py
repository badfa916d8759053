"""Reaping completions from an IOPOLL ring: blocking, non-blocking and under asyncio.

A general ring helper next to :meth:`uringstack.ring.Ring.poll`: the iopoll
and nvme_passthrough plugins both reap polled rings through it.

On an IOPOLL ring the device raises no interrupt: a completion is posted to
the CQ only while some task polls the device's poll queue inside
``io_uring_enter(IORING_ENTER_GETEVENTS)``.  Three consequences:

- **blocking wait** (``Ring.wait``, ``submit(wait=True)``, ``close``): the
  kernel ignores the ``IORING_ENTER_EXT_ARG`` timeout on an IOPOLL ring and,
  asked for ``min_complete > 0``, spins until the completions came or the
  scheduler wants the CPU, so a hung polled command would have no bound.  The
  C helpers therefore enter with ``min_complete=0`` (one non-spinning pass
  over the poll queue per syscall) in a loop that checks the deadline between
  passes, and ``Ring.wait`` checks ``wait_timeout`` and the lost-completion
  count every ``wait_tick`` as on any ring.  It still spins (that is what
  IOPOLL costs), but in user space, where it can stop.
- **non-blocking check** (``Pending.done()``): peeking the CQ
  (``Ring.try_reap``) finds nothing new, ever.  :func:`poll_once` first enters
  the kernel with GETEVENTS and ``min_complete=0``, which makes the kernel run
  one non-spinning pass over the poll queue (``io_iopoll_check`` with
  ``min=0``), then the CQ is drained.
- **asyncio**: the eventfd bridge the core uses for interrupt-driven rings
  would never fire (nothing posts CQEs while the loop sleeps in epoll).  So
  one poller task per (ring, event loop) runs while there are waiters: each
  turn it calls :func:`poll_once`, drains the CQ, resolves the futures of
  finished batches and yields to the loop with ``asyncio.sleep(0)``.  The
  loop therefore never sleeps while polled I/O is in flight: that is what
  IOPOLL costs (a busy CPU) in exchange for no interrupt latency.  One poller
  serves all waiters, so 1,000 concurrent reads cost one ``io_uring_enter``
  per loop turn, not 1,000.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

from uringstack.ring import Batch, Ring, aio
from uringstack.ring.flags import SetupFlag


def is_polled(ring: Ring) -> bool:
    """True when *ring* was created with IORING_SETUP_IOPOLL (``Ring.polled``; a stand-in
    without it is asked its flags)."""
    polled = getattr(ring, "polled", None)
    return bool(ring.flags & SetupFlag.IOPOLL) if polled is None else polled


def poll_once(ring: Ring) -> None:
    """One non-spinning pass over the device's poll queue, then collect completions.

    ``Ring.poll`` enters the kernel with GETEVENTS and ``min_complete=0``: the
    kernel polls once and returns (the GIL is released meanwhile).
    """
    if not ring.closed:
        ring.poll()


def polled_done(ring: Ring, batch: Batch) -> bool:
    """Non-blocking completion check that makes progress on an IOPOLL ring."""
    if not batch.finished and not ring.closed:
        poll_once(ring)
    return batch.finished


class _Poller:
    """The one polling task of a ring within one event loop."""

    def __init__(self, ring: Ring, loop: asyncio.AbstractEventLoop) -> None:
        self.ring = ring
        self.loop = loop
        self.waiters = 0
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        while self.waiters > 0 and not self.ring.closed:
            poll_once(self.ring)
            await asyncio.sleep(0)


_pollers: weakref.WeakKeyDictionary[Ring, _Poller] = weakref.WeakKeyDictionary()
_pollers_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _pollers_lock
    _pollers_lock = threading.Lock()  # a parent thread may have held it at fork(): the child would hang on it


os.register_at_fork(after_in_child=_new_lock_in_child)


OTHER_LOOP = (
    "this IOPOLL ring is already polled by another running event loop; use one stack (or one worker) per event loop"
)
"""Why an await on an IOPOLL ring another loop is polling is refused (``RuntimeError``)."""


def _polled_elsewhere(poller: _Poller | None, loop: asyncio.AbstractEventLoop) -> bool:
    return poller is not None and poller.loop is not loop and not poller.loop.is_closed() and poller.waiters > 0


def check_poller(ring: Ring) -> None:
    """Raise what an await on IOPOLL *ring* would (``RuntimeError``: another open loop
    polls it for its waiters), before the caller starts the I/O it would await
    (as :func:`uringstack.ring.aio.check_bridge`)."""
    if _polled_elsewhere(_pollers.get(ring), asyncio.get_running_loop()):
        raise RuntimeError(OTHER_LOOP)


def _poller_for(ring: Ring) -> _Poller:
    loop = asyncio.get_running_loop()
    with _pollers_lock:
        poller = _pollers.get(ring)
        if poller is None or poller.loop is not loop:
            if _polled_elsewhere(poller, loop):
                raise RuntimeError(OTHER_LOOP)
            poller = _Poller(ring, loop)
            _pollers[ring] = poller
        return poller


async def wait_polled(ring: Ring, batch: Batch) -> list[int]:
    """Await *batch* on IOPOLL *ring* without blocking the event loop (see module doc)."""
    if batch.finished:
        return batch.results
    poller = _poller_for(ring)
    fut: asyncio.Future[list[int]] = poller.loop.create_future()
    # Usually run by the poller on the loop's thread, but a blocking wait in another
    # thread may reap this batch too (a signal there must not lose the wake-up), and the
    # loop may be closed by then (a cancelled await): aio.post drops it.
    batch.add_done_callback(aio.resolver(poller.loop, fut))
    if batch.finished and not fut.done():  # completed before the callback was installed
        fut.set_result(batch.results)
    poller.waiters += 1
    poller.ensure_running()
    try:
        return await fut
    finally:
        poller.waiters -= 1
