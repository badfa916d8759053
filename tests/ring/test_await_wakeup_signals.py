"""A raising signal in another thread's collection never leaves an await on the ring hanging.

``wait_batch`` (``pending.wait_async()``: ``read_many_async``, ``PreparedIO.run_async``,
``fdatasync_async``, the write-ahead log's batches) awaits a future that the batch's
done-callback resolves, posting the result to the awaiting loop.  Whichever thread
collects the completion runs that callback: another thread's blocking call on the same
ring, or a leader draining for the others while it waits.  A signal handler that raises
(Ctrl-C caught by a program that goes on, an alarm-based timeout) runs at the points of
that thread's code (tests/signal_points.py); one at the entry of the callback, or inside
``call_soon_threadsafe`` before it woke the loop, used to count as the callback's run:
the future was never resolved and the await hung for good, even past the ring's
``close()`` (the batch was finished).  Found by a stress run of four threads, an event
loop and SIGALRM on one ring (session 40).  Such callbacks are now
:class:`~uringstack.ring.interrupts.Repeatable`: the collection runs one again when it
raised, and a repeat only posts an already resolved future's result again, which
``set_result_unless_done`` ignores.

Each point of the collection, the callback, ``post`` and asyncio's
``call_soon_threadsafe`` gets a signal in turn, with the callback alone on its batch
and after another one (a stack's completion hook comes first); the await must end with
the read's result within two seconds of the loop running again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.signal_points import Interrupt, code_of, signal_at, sweep
from tests.waiting import wait_until
from uringstack.ring import Batch, Ring
from uringstack.ring.aio import wait_batch
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets
WAKE_S = 2.0  # the loop runs its posted callbacks in its first turn: seconds mean lost

# The ring's collection, the bridge (wait_batch's callback, post), the retry, and the
# loop's side of a post from another thread.
SWEPT = code_of(files=("ring/__init__.py", "ring/aio.py", "ring/interrupts.py", "asyncio/base_events.py"))

pytestmark = pytest.mark.timeout(300)


def _awaited_read_collected_here(at: int, first_callback: bool, among_others: bool) -> str | None:
    """A loop's task awaits a pipe read on a new ring; the read completes, and this thread
    (not the loop's, which is stopped meanwhile, as another thread's would be busy)
    collects it with a signal at point *at*, then once more; the loop must then end the
    await with the read's result within WAKE_S.  Where the signal was sent (None: fewer
    points)."""
    ring = Ring(entries=8)
    ring.wait_tick = 0.05
    ring.wait_timeout = 1.0
    loop = asyncio.new_event_loop()
    r, w = os.pipe()
    task: asyncio.Task[list[int]] | None = None
    try:
        buf = bytearray(1)
        pin = ffi.from_buffer(buf, require_writable=True)
        batch = ring.submit(Op.READ, r, addrs=address_of(pin), lens=1, offsets=ANY_POS, keep=[pin, buf])
        hook_ran: list[Batch] = []
        if first_callback:
            batch.add_done_callback(hook_ran.append)  # as a stack's completion hook, first
        waiting: Callable[[], Coroutine[Any, Any, list[int]]] = lambda: wait_batch(ring, batch)  # noqa: E731
        task = loop.create_task(waiting())
        for _ in range(3):  # the task is at its await (the bridge's reader registered)
            loop.run_until_complete(asyncio.sleep(0))
        assert not task.done()
        os.write(w, b"x")
        other = ring.submit(Op.NOP, -1) if among_others else None  # (a collection of two batches)
        wait_until(lambda: ring._cq_tail[0] - ring._cq_head[0] >= 1 + among_others, 5.0, "the pipe read's completion")
        with signal_at(SWEPT, at) as sent, contextlib.suppress(Interrupt):
            ring.reap()
        ring.reap()  # the next collection (one cut short is done again)
        assert batch.finished, f"a signal {sent.where} left the batch unfinished"
        assert other is None or other.finished, sent.where
        try:
            results = loop.run_until_complete(asyncio.wait_for(asyncio.shield(task), WAKE_S))
        except TimeoutError:
            raise AssertionError(
                f"a signal {sent.where}: the await never ended (its wake-up was lost), "
                f"though the batch finished with {batch.results}"
            ) from None
        assert results == [1] and buf == b"x", sent.where
        assert len(hook_ran) <= 1, f"a signal {sent.where}: the first callback ran twice"
        return sent.where
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        ring.close()
        loop.close()
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("among_others", [False, True], ids=["one-batch", "two-batches"])
@pytest.mark.parametrize("first_callback", [False, True], ids=["alone", "after-a-hook"])
def test_a_signal_in_another_threads_collection_never_loses_an_awaits_wake_up(
    first_callback: bool, among_others: bool
) -> None:
    """Each of the collection's three ways of running a callback: a batch's only callback in
    a collection of one batch (unrolled) or of several, and a further one (``_run_then``)."""
    points = sweep(lambda at: _awaited_read_collected_here(at, first_callback, among_others), most=400)
    assert points > 10
