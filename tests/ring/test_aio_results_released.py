"""A delivered flush lets go of its futures, and so of the bytes it read; the handle's
tracker lets go of the delivered flush.

The batch of a flush stays referenced after delivery (each handle's tracker
keeps the flush's pending until it prunes finished ones, every 64 flushes or
more; a pooled column set keeps its last batch), and through its done-callback
it held the futures of every await and their results.  A 32-task read loop so
kept ~8 MiB of already consumed ``bytes`` alive, and malloc grew and trimmed
its heap by turns: a fresh page, so a page fault, for most reads (~40% of the
CPU of ``await f.read(4096, off)`` measured).
"""

from __future__ import annotations

import asyncio
import gc
import pathlib
import sys

import pytest

from tests.conftest import open_plain_uring
from uringstack.ring.coalesce import FlushPending
from uringstack.stack import Stack

# These tests are about the ring's batches: cached reads go through them too (no inline copy).
pytestmark = pytest.mark.usefixtures("reads_through_ring")

BLOCK = 4096
TASKS = 32
ROUNDS = 40


def _flush_pendings() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, FlushPending))


def _finished_futures() -> int:
    # (Tasks are futures too: the finished ones gather still holds are not the coalescer's.)
    futures = [o for o in gc.get_objects() if isinstance(o, asyncio.Future) and not isinstance(o, asyncio.Task)]
    return sum(1 for f in futures if f.done())


@pytest.mark.timeout(60)
def test_read_results_are_held_only_by_their_callers(plain_uring_stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * (64 * BLOCK // 256))
    with open_plain_uring(plain_uring_stack, path, writable=False) as h:
        bufs = h.lease_buffers(4, BLOCK)

        flushes: list[int] = []

        async def main() -> tuple[list[int], int, int]:
            refs: list[int] = []

            async def one(i: int) -> None:
                prev = b""
                for r in range(ROUNDS):
                    data = await h.read(BLOCK, ((i + r) % 64) * BLOCK)
                    assert data[:1] == bytes([0])
                    if r:
                        # The previous result, its flush long delivered: only ``prev`` and the call's argument.
                        refs.append(sys.getrefcount(prev))
                    prev = data

            await asyncio.gather(*(one(i) for i in range(TASKS)))
            after_reads = _finished_futures()
            flushes.append(_flush_pendings())
            for r in range(ROUNDS):
                res = await h.read_many_async([((r + k) % 64) * BLOCK for k in range(4)], bufs)
                assert res == [BLOCK] * 4
            flushes.append(_flush_pendings())
            return refs, after_reads, _finished_futures()

        gc.collect()
        refs, after_reads, after_batches = asyncio.run(asyncio.wait_for(main(), 30.0))
        h.release_buffers(bufs)
    assert set(refs) == {2}  # before: 3, the delivered future held each result too
    # Before: every future of the last flushes the tracker had not pruned yet (up to
    # 64 flushes of 32) was alive with its result.  (A few are asyncio.s own: gather.)
    assert after_reads < TASKS
    assert after_batches < TASKS
    # Before: the handle's tracker kept every delivered flush (its pending, batch and
    # closures) until its next prune, every 64 flushes or more.
    assert max(flushes) <= 1, flushes
