"""A cancelled await does not cancel its I/O on the fallback either (docs/api.md, asyncio).

The fallback's ``wait_async`` awaited its pool futures through ``asyncio.wrap_future``:
cancelling the awaiting task cancelled a pool future not yet started, so a write
still waiting for a pool thread was dropped without a word (session 32), where
io_uring writes it.
"""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from uringstack.stack import open_stack

from .conftest import GatedReads


@pytest.mark.timeout(60)
def test_a_cancelled_write_waiting_for_a_pool_thread_still_lands(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"." * 8192)
    overrides = {"core.backend": "fallback", "core.cores": [0], "fallback.threads": 1}
    with open_stack(overrides=overrides) as stack, stack.open(path) as h:
        busy = h.start_read_many([4096], [bytearray(4096)])  # holds the pool's one thread at the gate

        async def main() -> None:
            task = asyncio.ensure_future(h.write(b"w" * 4096, 0))
            await asyncio.sleep(0)  # submitted: queued behind the gated read
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        gated_fallback_reads.gate.set()
        assert busy.wait() == [4096]
    # the handle's close waited for the write, which ran
    assert path.read_bytes()[:4096] == b"w" * 4096
