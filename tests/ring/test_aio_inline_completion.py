"""An awaited batch whose completions its own submission posted is reaped at once.

A submission that does not wait leaves what completed inside it (a page-cache
hit does) in the completion queue.  ``wait_batch`` reaps those before it sets
up a future, a done-callback and a posted wake-up: such a batch costs one
yield to the loop, no bridge round trip.
"""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from tests.conftest import open_plain_uring
from uringstack.ring import Ring, aio
from uringstack.stack import Stack

BLOCK = 4096
ROUNDS = 50


@pytest.mark.timeout(60)
def test_a_batch_completed_inside_its_submission_needs_no_bridge(
    plain_uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hot"
    data = bytes(range(256)) * (16 * BLOCK // 256)
    path.write_bytes(data)
    path.read_bytes()  # in the page cache: io_uring completes these reads inside the submission
    bridged: list[int] = []
    real_bridge_for = aio.bridge_for

    def counting_bridge_for(ring: Ring) -> aio.Bridge:
        bridged.append(1)
        return real_bridge_for(ring)

    monkeypatch.setattr(aio, "bridge_for", counting_bridge_for)
    with open_plain_uring(plain_uring_stack, path) as h:
        bufs = h.lease_buffers(4, BLOCK)
        prepared = h.prepare_reads(bufs)
        done = [0]
        seen_by_other: list[int] = []

        async def reader() -> None:
            for rnd in range(ROUNDS):
                offsets = [((rnd + i) % 16) * BLOCK for i in range(4)]
                assert await prepared.run_async(offsets) == [BLOCK] * 4
                for off, buf in zip(offsets, bufs, strict=True):
                    assert bytes(buf) == data[off : off + BLOCK]
                done[0] += 1

        async def other() -> None:
            seen_by_other.append(done[0])

        async def main() -> None:
            await asyncio.gather(reader(), other())

        asyncio.run(asyncio.wait_for(main(), 20.0))
        prepared.close()
        h.release_buffers(bufs)
    assert done[0] == ROUNDS
    # Before: every batch went through the bridge (50 of 50), its completions still unreaped.
    assert len(bridged) < ROUNDS // 2, f"{len(bridged)} of {ROUNDS} batches waited through the bridge"
    # The reaped batch still yields: the other task ran long before the reader was done.
    assert seen_by_other and seen_by_other[0] < 10, seen_by_other
