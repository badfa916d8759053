"""``*_many_async`` on leases takes a hot path that skips the checking calls: it must
still refuse what the checked path refuses, with the same errors, before anything is
queued (a negative offset, offsets that do not pair with buffers, a closed handle)."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from tests.conftest import open_plain_uring
from uringstack.errors import RingClosedError
from uringstack.stack import Stack

BLOCK = 4096


@pytest.mark.timeout(60)
def test_lease_batches_refuse_bad_input_like_the_checked_path(plain_uring_stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(8 * BLOCK))
    h = open_plain_uring(plain_uring_stack, path)
    bufs = h.lease_buffers(2, BLOCK)

    async def main() -> list[str]:
        seen: list[str] = []
        assert await h.read_many_async([0, BLOCK], bufs) == [BLOCK, BLOCK]  # the hot path is set up
        for call in (h.read_many_async, h.write_many_async):
            with pytest.raises(ValueError, match=r"offset -4096 \(op 1 of the batch\) is negative"):
                await call([0, -BLOCK], bufs)
            with pytest.raises(ValueError, match="1 offsets but 2 buffers"):
                await call([0], bufs)
            seen.append(call.__name__)
        flushes = h._fast_reads.flushes if h._fast_reads is not None else -1
        await asyncio.sleep(0)
        assert h._fast_reads is None or h._fast_reads.flushes == flushes  # nothing was queued
        h.close()  # the leases keep their pins: still the hot path's buffers
        for call in (h.read_many_async, h.write_many_async):
            with pytest.raises(RingClosedError):
                await call([0, BLOCK], bufs)
        return seen

    assert asyncio.run(asyncio.wait_for(main(), 20.0)) == ["read_many_async", "write_many_async"]
