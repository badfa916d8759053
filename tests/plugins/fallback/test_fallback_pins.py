"""fallback: an op's buffer is free again as soon as its caller is woken.

The pool's thread holds its work item until it is done with it, after the
batch woke the caller; the batch lets go of an op's arguments before it can end
(``_Batch.run``), so the op's buffer export is gone by then.  A
pool thread preempted between the two (a busy machine) made a caller's
``mmap.close()`` fail with ``BufferError`` right after its read returned."""

from __future__ import annotations

import asyncio
import mmap
import pathlib
import time
from typing import Any

import pytest

from uringstack.plugins.fallback import backend as fallback_backend
from uringstack.stack import open_stack


@pytest.fixture
def lingering_pool_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pool thread lingers 0.2 s inside the op that ended its batch, after the batch woke
    its caller (what a preempted thread does): whatever that op's frame still holds stays alive."""
    finish = fallback_backend._Batch._finish

    def finish_then_linger(self: Any) -> None:
        finish(self)
        time.sleep(0.2)

    monkeypatch.setattr(fallback_backend._Batch, "_finish", finish_then_linger)


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


def _grow_once_free(buf: bytearray, by: int) -> None:
    """Grow *buf* as soon as its op's export is gone, blocking the loop meanwhile (so the
    awaiting task cannot resume in between: the window a busy loop leaves)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            buf.extend(b"Z" * by)
            return
        except BufferError:
            assert time.monotonic() < deadline, "the op never let go of its buffer"
            time.sleep(0.001)


@pytest.mark.parametrize("op", ["write", "read_into_async", "write_many_async"])
def test_a_buffer_grown_after_its_op_ran_is_judged_by_what_was_submitted(tmp_path: pathlib.Path, op: str) -> None:
    """Until session 32 a 4 KiB write whose bytearray grew by 8 KiB before its task resumed
    had the 8 KiB written too (12,288 bytes: the op was judged "short" against the new
    size and its "rest" completed); a read read on into the grown part."""
    path = tmp_path / "f"
    path.write_bytes(b"d" * 16384 if op == "read_into_async" else b"")
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [0]}) as stack, stack.open(path) as h:
        assert h.backend == "fallback"
        buf = bytearray(b"w" * 4096)

        async def main() -> int:
            if op == "write":
                task = asyncio.ensure_future(h.write(buf, 0))
            elif op == "write_many_async":
                task = asyncio.ensure_future(h.write_many_async([0], [buf]))
            else:
                task = asyncio.ensure_future(h.read_into_async(buf, 0))
            await asyncio.sleep(0)  # the task submits its op
            _grow_once_free(buf, 8192)
            result = await task
            return result if isinstance(result, int) else result[0]

        assert asyncio.run(main()) == 4096
    if op == "read_into_async":
        assert bytes(buf) == b"d" * 4096 + b"Z" * 8192
    else:
        assert path.read_bytes() == b"w" * 4096


def test_a_short_op_whose_buffer_was_resized_raises(tmp_path: pathlib.Path) -> None:
    """A short read (here at the end of the file) cannot be completed into a buffer that is no
    longer the one it was given: ``BufferError``, never a read on into the new bytes."""
    path = tmp_path / "f"
    path.write_bytes(b"d" * 1000)
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [0]}) as stack, stack.open(path) as h:
        buf = bytearray(4096)

        async def main() -> None:
            task = asyncio.ensure_future(h.read_into_async(buf, 0))
            await asyncio.sleep(0)
            _grow_once_free(buf, 4096)
            with pytest.raises(BufferError, match="resized after the op moved 1000 of its 4096 bytes"):
                await task

        asyncio.run(main())
