"""A loop left open but not running, with nothing on the ring, does not keep the ring.

One ring serves one running event loop; a second ``asyncio.run`` later reuses it
(docs/api.md, asyncio).  Until session 32 only a *closed* loop could be replaced:
a loop made with ``asyncio.new_event_loop()``, used once and never closed (or
dropped: the ring's bridge kept it alive) made every later ``asyncio.run`` on the
ring raise "this ring already serves another running event loop", though it ran
nothing.  A loop that still has awaits queued on the ring (stopped mid-way) keeps
it, with a message that says so; once those are done another loop takes the ring.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
from collections.abc import Iterator

import pytest

from tests.conftest import open_plain_uring
from tests.pipe_io import PipeIO
from uringstack.ring import aio, coalesce
from uringstack.ring.inflight import InflightTracker
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

DATA = bytes(range(256)) * 64
OVERRIDES = {
    "core.cores": [0],
    "core.backend": "auto",
    "fallback.mode": "auto",
    "iopoll.mode": "off",
    "core.aio_inline_read_budget": 0,  # every read through the ring's coalescer
}


@pytest.fixture
def one_ring() -> Iterator[Stack]:
    with open_stack(overrides=OVERRIDES) as s:
        yield s


@pytest.fixture
def h(one_ring: Stack, tmp_path: pathlib.Path) -> Iterator[FileHandle]:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    handle = open_plain_uring(one_ring, path)
    yield handle
    handle.close()


async def _read(h: FileHandle, off: int = 0) -> bytes:
    return await asyncio.wait_for(h.read(100, off), 5)


@pytest.mark.timeout(60)
def test_a_loop_left_open_does_not_keep_the_ring(h: FileHandle) -> None:
    """A loop used once and not closed: later asyncio.run calls (reads, a batch, an fdatasync
    that checks the ring before it starts) use the ring; the old loop no longer watches its
    eventfd, and when it runs again it takes the ring back."""
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(_read(h)) == DATA[:100]
        efd = aio._bridges[h.ring].efd  # type: ignore[index]
        for _ in range(2):
            assert asyncio.run(_read(h, 100)) == DATA[100:200]
        assert efd not in first._selector.get_map(), "the replaced loop still watches the ring's eventfd"  # type: ignore[attr-defined]
        asyncio.run(asyncio.wait_for(h.fdatasync_async(), 5))
        assert first.run_until_complete(_read(h, 200)) == DATA[200:300]
        assert aio._bridges[h.ring].loop is first  # type: ignore[index]
    finally:
        first.close()


@pytest.mark.timeout(60)
def test_a_dropped_loop_does_not_keep_the_ring(h: FileHandle) -> None:
    def once() -> None:
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(_read(h)) == DATA[:100]

    with pytest.warns(ResourceWarning):  # (the dropped loop, collected unclosed once replaced)
        once()
        gc.collect()
        assert asyncio.run(_read(h, 100)) == DATA[100:200]
        gc.collect()
    assert asyncio.run(_read(h, 300)) == DATA[300:400]


@pytest.mark.timeout(60)
def test_a_stopped_loop_with_an_await_queued_keeps_the_ring(h: FileHandle) -> None:
    """A loop stopped with a read queued on the ring (not flushed yet) keeps it, with a
    RuntimeError that says the loop is not running; run again until the read is done, it
    lets another loop have the ring."""
    first = asyncio.new_event_loop()
    try:
        task = first.create_task(h.read(100, 0))
        first.call_soon(first.stop)  # (runs before the flush the read schedules)
        first.run_forever()
        assert not task.done()
        with pytest.raises(RuntimeError, match="another event loop, not running now"):
            asyncio.run(_read(h, 100))
        assert first.run_until_complete(task) == DATA[:100]
        assert asyncio.run(_read(h, 100)) == DATA[100:200]
    finally:
        first.close()


@pytest.mark.timeout(60)
def test_a_stopped_loop_with_an_op_in_flight_keeps_the_ring(h: FileHandle, pipe: tuple[int, int]) -> None:
    """A loop stopped while a read it awaits is in the kernel keeps the ring until it ran
    the read's await to its end."""
    r, w = pipe
    ring = h.ring
    assert ring is not None
    first = asyncio.new_event_loop()
    try:

        async def start() -> asyncio.Future[bytes]:
            fut = coalesce.coalescer_for(ring).add_read(PipeIO(r), InflightTracker("pipe"), 16, 0)
            await asyncio.sleep(0.05)  # flushed: in the kernel until the pipe is written
            return fut

        held = first.run_until_complete(start())
        assert ring.inflight == 1
        with pytest.raises(RuntimeError, match="another event loop, not running now"):
            asyncio.run(_read(h, 100))
        os.write(w, b"z" * 16)
        assert first.run_until_complete(asyncio.wait_for(held, 5)) == b"z" * 16
        assert asyncio.run(_read(h, 100)) == DATA[100:200]
    finally:
        first.close()


@pytest.mark.timeout(60)
def test_a_replaced_loops_scheduled_reap_leaves_the_new_loops_coalescer_alone(
    h: FileHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eventfd reader cut short by a signal schedules a reap on its loop; that loop then
    stopped (Ctrl-C) and was replaced.  Run again, it must not run the new loop's coalescer
    (its reap and deliveries belong to the new loop's thread)."""
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(_read(h)) == DATA[:100]
        bridge = aio._bridges[h.ring]  # type: ignore[index]

        def interrupted(fd: int) -> int:
            raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr(aio.os, "eventfd_read", interrupted)
            with pytest.raises(KeyboardInterrupt):
                bridge._on_readable()  # (what the reader does when the signal comes)
        wrong: list[object] = []
        reap = coalesce.Coalescer.reap

        def checked(self: coalesce.Coalescer) -> None:
            if asyncio._get_running_loop() is not self.loop:
                wrong.append(asyncio._get_running_loop())
            reap(self)

        monkeypatch.setattr(coalesce.Coalescer, "reap", checked)
        assert asyncio.run(_read(h, 100)) == DATA[100:200]
        first.run_until_complete(asyncio.sleep(0))  # runs what the reader scheduled
        assert not wrong, "a replaced loop ran the reap of the loop that took the ring"
    finally:
        first.close()
