"""asyncio on an IOPOLL ring with more ops than its CQ holds: nothing waits for an eventfd.

The asyncio coalescer (``uringstack.ring.coalesce``) sends single awaits out
with ``wait_room=False``: when the ring has no CQ room (``Ring.cq_cap``) it
keeps the rest queued and flushes them again on the next reap, which the
ring's eventfd drives.  On an IOPOLL ring no eventfd would ever fire (the
device raises no interrupt: completions are posted only while someone polls),
so the coalescer must never serve a polled handle.  It does not: handles
coalesce only on the plain io_uring backend (``type(io) is UringFileIO``), and
a polled handle's awaits go through its pending's ``wait_async``, which the
ring's poller task (``uringstack.ring.polling``) completes; a submission that
meets a full polled ring waits for room by polling, which completes the ops
itself.  This test fills a 4-entry IOPOLL ring (CQ 8) with many more awaits of
every asyncio form than it holds, bounded by ``asyncio.wait_for``: a path that
waited on the eventfd would fail here in seconds instead of hanging.
Runs inside ../shared/nvme-vm (scripts/test-nvme.sh) on /dev/nvme0n1.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from uringstack import open_stack
from uringstack.ring import coalesce
from uringstack.ring.buffers import aligned_buffer

from .conftest import BLK

pytestmark = pytest.mark.nvme

BS = 4096
N = 48  # awaits per form: several times the 4-entry ring's CQ (8)


@pytest.mark.timeout(120)
def test_asyncio_past_a_full_iopoll_ring_never_waits_for_an_eventfd(monkeypatch: pytest.MonkeyPatch) -> None:
    flushes: list[int] = []
    real_flush = coalesce.Coalescer.flush

    def flush(self: coalesce.Coalescer) -> None:
        flushes.append(1)
        real_flush(self)

    monkeypatch.setattr(coalesce.Coalescer, "flush", flush)
    rng = random.Random(11)
    with open_stack(overrides={"core.cores": [0], "iopoll.mode": "on", "iopoll.entries": 4}) as stack:
        ring = stack.workers[0].rings["iopoll"]
        assert ring.cq_entries == 8
        with stack.open(BLK, direct=True) as h:
            assert h.backend == "iopoll" and h.ring is ring
            offsets = [BS * u for u in rng.sample(range(4096), 3 * N)]
            data = [os.urandom(BS) for _ in offsets]

            async def main() -> tuple[list[int], list[list[int]], list[bytes], list[int], list[list[int]]]:
                bufs = []
                for d in data:
                    b = aligned_buffer(BS)
                    b[:] = d
                    bufs.append(b)
                w1, wn, b1, bn = offsets[:N], offsets[N:], bufs[:N], bufs[N:]
                wrote = await asyncio.wait_for(
                    asyncio.gather(*(h.write(b, o) for b, o in zip(b1, w1, strict=True))), 30
                )
                wrote_many = await asyncio.wait_for(
                    asyncio.gather(*(h.write_many_async(wn[i : i + 4], bn[i : i + 4]) for i in range(0, len(wn), 4))),
                    30,
                )
                reads = await asyncio.wait_for(asyncio.gather(*(h.read(BS, o) for o in offsets)), 30)
                back = [aligned_buffer(BS) for _ in offsets]
                into = await asyncio.wait_for(
                    asyncio.gather(*(h.read_into_async(b, o) for b, o in zip(back, offsets, strict=True))), 30
                )
                # one read_many larger than the whole cap
                many = await asyncio.wait_for(h.read_many_async(offsets, [aligned_buffer(BS) for _ in offsets]), 30)
                assert [bytes(b) for b in back] == data
                return wrote, wrote_many, reads, into, [many]

            wrote, wrote_many, reads, into, many = asyncio.run(main())
            assert wrote == [BS] * N
            assert wrote_many == [[BS] * 4] * (2 * N // 4)
            assert reads == data
            assert into == [BS] * (3 * N)
            assert many == [[BS] * (3 * N)]
            assert ring.inflight == 0
    assert flushes == [], "a polled handle's awaits went through the eventfd-driven coalescer"
