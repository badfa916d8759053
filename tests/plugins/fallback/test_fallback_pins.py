"""fallback: an op's buffer is free again as soon as its caller is woken.

The pool's work item holds its call's arguments until its thread is done with
it, after the future woke the caller; the backend empties its argument list
before returning (``_spread``), so the op's buffer export is gone by then.  A
pool thread preempted between the two (a busy machine) made a caller's
``mmap.close()`` fail with ``BufferError`` right after its read returned."""

from __future__ import annotations

import asyncio
import mmap
import pathlib
import time
from concurrent.futures import thread as futures_thread
from typing import Any

import pytest

from uringstack.stack import open_stack


@pytest.fixture
def lingering_pool_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pool thread keeps its work item 0.2 s after setting the future's result."""
    run = futures_thread._WorkItem.run

    def run_then_linger(self: Any) -> None:
        run(self)
        time.sleep(0.2)  # (self, and so its args, alive: what a preempted thread does)

    monkeypatch.setattr(futures_thread._WorkItem, "run", run_then_linger)


def test_a_buffer_can_be_closed_when_its_read_returned(tmp_path: pathlib.Path, lingering_pool_threads: None) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 4096 + b"b" * 4096)
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [0]}) as stack, stack.open(path) as h:
        assert h.backend == "fallback"
        maps = [mmap.mmap(-1, 4096), mmap.mmap(-1, 4096)]
        assert h.read_many([0, 4096], maps) == [4096, 4096]  # two ops: the pool runs them
        assert [m[:1] for m in maps] == [b"a", b"b"]
        for m in maps:
            m.close()  # BufferError while an op still held its export

        async def main() -> None:
            m = mmap.mmap(-1, 4096)
            assert await h.read_many_async([4096, 0], [m, bytearray(4096)]) == [4096, 4096]
            m.close()

        asyncio.run(main())
