"""An awaited batch leaves no reference cycle behind: refcounting frees it at once.

The batch holds its done-callbacks; a callback that captured the batch (to read
its results) made every flush of the coalescer, and every ``wait_batch``, a
cycle of the batch, its closures, the futures and their lists that only the
cyclic garbage collector could free: about 0.5 us per op of collections on the
asyncio batch path.
"""

from __future__ import annotations

import asyncio
import gc
import pathlib

import pytest

from tests.conftest import open_plain_uring
from uringstack.ring import Batch
from uringstack.stack import Stack

BLOCK = 4096


@pytest.mark.timeout(60)
def test_awaited_batches_are_freed_without_the_cycle_collector(
    plain_uring_stack: Stack, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * (16 * BLOCK // 256))
    with open_plain_uring(plain_uring_stack, path) as h:
        bufs = h.lease_buffers(8, BLOCK)

        async def main() -> list[str]:
            await h.read(BLOCK, 0)  # bridge and coalescer set up outside the window
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for rnd in range(20):
                    await asyncio.gather(*(h.read(BLOCK, ((rnd + i) % 16) * BLOCK) for i in range(8)))
                    await asyncio.gather(
                        h.read_many_async([i * BLOCK for i in range(4)], bufs[:4]),
                        h.read_many_async([(4 + i) * BLOCK for i in range(4)], bufs[4:]),
                    )
                    await h.write(bufs[0], 15 * BLOCK)
                    await h.fdatasync_async()  # a batch awaited through wait_batch
                h.release_buffers(bufs)
                h.close()  # its tracker lets go of the flushes it tracked
                gc.collect()
                return sorted({type(o).__name__ for o in gc.garbage if isinstance(o, (Batch, asyncio.Future))})
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()

        found = asyncio.run(asyncio.wait_for(main(), 20.0))
    assert found == []  # before: every flush and wait_batch left a Batch and its futures in a cycle
