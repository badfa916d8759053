"""The coalescer's CQ room (``Ring.cq_cap``) is spent only on ops it submits.

A flush trims its queue to the ring's CQ room and puts the rest back until a
completion frees room (the ring's eventfd wakes a reap, which flushes again).
Until session 32, ops the admission then dropped were counted against that
room: awaits cancelled before the flush (a ``TaskGroup`` whose first task
failed cancels its siblings) or refused for a closed handle.  With the oldest
of them filling the room nothing was submitted, so nothing was in flight, no
completion ever came and every other queued await hung for good.  Each test
queues more reads than the room of a 4-entry ring (8 CQEs, 6 ops in flight) on
a stack whose reads all go through the ring (no inline page-cache copy), and
fails within seconds instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from tests.pipe_io import PipeIO
from uringstack.errors import RingClosedError
from uringstack.ring import coalesce
from uringstack.ring.inflight import InflightTracker
from uringstack.stack import Stack, open_stack

SIZE = 512
BLOCKS = 64
OVERRIDES = {
    "core.cores": [0],
    "core.ring_entries": 4,
    "iopoll.mode": "off",
    "core.aio_inline_read_budget": 0,  # every read through the coalescer
}


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = open_stack(overrides=OVERRIDES)
    yield s
    s.close()


def _file(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    data = os.urandom(SIZE * BLOCKS)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for *tasks* at most 5 s: the hang this module is about fails here."""
    _, pending = await asyncio.wait(tasks, timeout=5)
    for t in pending:
        t.cancel()
    assert not pending, f"{len(pending)} of {len(tasks)} awaits never completed"


@pytest.mark.timeout(60)
def test_cancelled_oldest_awaits_take_no_room(stack: Stack, tmp_path: Path) -> None:
    """The oldest queued awaits cancelled before the flush, more of them than the room:
    the others still complete (3 x the room queued, the first 2 x the room cancelled)."""
    path, data = _file(tmp_path, "f")
    h = open_plain_uring(stack, path, writable=False)
    try:
        ring = h.ring
        assert ring is not None and ring.cq_cap == 6
        n, cancelled = 3 * ring.cq_cap, 2 * ring.cq_cap

        async def main() -> None:
            tasks = [asyncio.create_task(h.read(SIZE, i * SIZE)) for i in range(n)]
            await asyncio.sleep(0)  # every task queued its read; the flush runs next turn
            for t in tasks[:cancelled]:
                t.cancel()
            await _settle(tasks)
            assert all(t.cancelled() for t in tasks[:cancelled])
            assert [t.result() for t in tasks[cancelled:]] == [
                data[i * SIZE : (i + 1) * SIZE] for i in range(cancelled, n)
            ]

        asyncio.run(main())
    finally:
        h.close()


@pytest.mark.timeout(60)
def test_a_closed_handles_queued_awaits_take_no_room(stack: Stack, tmp_path: Path) -> None:
    """A handle closed with more reads queued than the room, another handle's reads queued
    behind them: every read of the closed one fails, every read of the open one completes."""
    px, _ = _file(tmp_path, "x")
    py, data = _file(tmp_path, "y")
    x = open_plain_uring(stack, px, writable=False)
    y = open_plain_uring(stack, py, writable=False)
    try:
        assert x.ring is y.ring and x.ring is not None
        n = 3 * x.ring.cq_cap

        async def main() -> None:
            xs = [asyncio.create_task(x.read(SIZE, i * SIZE)) for i in range(n)]
            ys = [asyncio.create_task(y.read(SIZE, i * SIZE)) for i in range(n)]
            await asyncio.sleep(0)
            x.close()  # its queued reads are refused at admission
            await _settle(xs + ys)
            assert all(isinstance(t.exception(), RingClosedError) for t in xs)
            assert [t.result() for t in ys] == [data[i * SIZE : (i + 1) * SIZE] for i in range(n)]

        asyncio.run(main())
    finally:
        y.close()
        x.close()


@pytest.mark.timeout(60)
def test_ops_refused_after_the_trim_leave_no_wait_for_room(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handle closed (by another thread) after the flush trimmed its queue to the room and
    before the admission: its ops filled the room and were refused, nothing went out, so
    nothing is in flight to free room: the flush must go on, not wait for a completion."""
    px, _ = _file(tmp_path, "x")
    py, data = _file(tmp_path, "y")
    x = open_plain_uring(stack, px, writable=False)
    y = open_plain_uring(stack, py, writable=False)
    trim = coalesce.Coalescer._trim_to_room

    def trim_then_close(self: coalesce.Coalescer) -> Any:
        held = trim(self)
        x.close()  # (what a close in another thread does at this point; x has nothing in flight)
        return held

    monkeypatch.setattr(coalesce.Coalescer, "_trim_to_room", trim_then_close)
    try:
        assert x.ring is not None
        n = 3 * x.ring.cq_cap

        async def main() -> None:
            xs = [asyncio.create_task(x.read(SIZE, i * SIZE)) for i in range(n)]
            ys = [asyncio.create_task(y.read(SIZE, i * SIZE)) for i in range(n)]
            await _settle(xs + ys)
            assert all(isinstance(t.exception(), RingClosedError) for t in xs)
            assert [t.result() for t in ys] == [data[i * SIZE : (i + 1) * SIZE] for i in range(n)]

        asyncio.run(main())
    finally:
        monkeypatch.undo()
        y.close()
        x.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dropped", ["cancelled", "closed"])
def test_dropped_awaits_do_not_wait_for_an_unrelated_completion(
    stack: Stack, tmp_path: Path, pipe: tuple[int, int], dropped: str
) -> None:
    """With a read the kernel holds in flight, the room's worth of queued awaits at the head
    of the queue dropped at admission (*dropped*: cancelled, or their handle closed): the
    awaits behind them go out in the same flush, not once the held read completes."""
    px, _ = _file(tmp_path, "x")
    py, data = _file(tmp_path, "y")
    x = open_plain_uring(stack, px, writable=False)
    y = open_plain_uring(stack, py, writable=False)
    r, w = pipe
    try:
        ring = x.ring
        assert ring is not None and y.ring is ring

        async def main() -> None:
            co = coalesce.coalescer_for(ring)
            held = co.add_read(PipeIO(r), InflightTracker("pipe"), 16, 0)
            await asyncio.sleep(0.05)  # flushed: in the kernel until the pipe is written
            assert not held.done() and 0 < ring.cq_room() < ring.cq_cap
            room = ring.cq_room()
            xs = [asyncio.create_task(x.read(SIZE, i * SIZE)) for i in range(room)]
            ys = [asyncio.create_task(y.read(SIZE, i * SIZE)) for i in range(room)]
            await asyncio.sleep(0)  # every task queued its read; the flush runs next turn
            if dropped == "cancelled":
                for t in xs:
                    t.cancel()
            else:
                x.close()
            try:
                await _settle(ys)
            finally:
                os.write(w, b"z" * 16)  # (the held read ends either way)
                assert await asyncio.wait_for(held, 5) == b"z" * 16
            await _settle(xs)
            assert [t.result() for t in ys] == [data[i * SIZE : (i + 1) * SIZE] for i in range(room)]

        asyncio.run(main())
    finally:
        y.close()
        x.close()
