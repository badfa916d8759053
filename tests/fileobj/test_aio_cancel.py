"""Cancelling an awaited ``uringstack.aio`` file operation loses no byte written.

A task is cancelled at every loop step of a ``flush()``, ``close()`` or a
``write()`` that fills the buffer, in turn (``wait_for``'s timeout, a task
group and ``Task.cancel`` all cancel this way).  aiofiles runs each call in a
thread that a cancelled await does not stop, so its writes always land; here a
write queued for the loop's next submission is dropped when its await is
cancelled.  Before these tests the buffer was emptied before that await: a
cancelled ``flush()`` or ``close()`` lost the bytes of writes that had
returned (a 0-byte file instead of 1,000 bytes).
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import warnings
from typing import Any

import pytest

import uringstack.aio
from uringstack.stack import Stack

_STEPS = 400  # most loop steps before the cancellation; each operation ends within fewer


async def _closed_soon(f: Any) -> None:
    """A close() cancelled while its write ran closes the file once the write lands."""
    for _ in range(500):
        if f.closed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the file was never closed")


def _writing(f: Any) -> Any:
    """The binary file's write in flight (a text file's buffer's)."""
    return getattr(f, "buffer", f)._writing


async def _cancelled_after(steps: int, coro: Any) -> bool:
    """Run *coro* as a task, cancel it after *steps* loop steps; True if the cancel took."""
    task = asyncio.ensure_future(coro)
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


@pytest.mark.parametrize("what", ["flush", "close", "write"])
@pytest.mark.parametrize("mode", ["wb", "ab", "w"])
def test_a_cancelled_operation_loses_no_byte_written(
    tmp_path: pathlib.Path, stack: Stack, what: str, mode: str
) -> None:
    text = "b" not in mode
    chunk: Any = "x" * 1000 if text else b"x" * 1000
    last: Any = "y" * 9000 if text else b"y" * 9000  # fills the 8 KiB buffer: write() flushes

    async def one(steps: int) -> bool:
        path = tmp_path / f"{what}-{mode}-{steps}"
        f = await uringstack.aio.open(path, mode, stack=stack, buffering=8192)
        await f.write(chunk)
        op = {"flush": f.flush, "close": f.close, "write": lambda: f.write(last)}[what]()
        cancelled = await _cancelled_after(steps, op)
        if what == "close":
            if cancelled and not f.closed and _writing(f) is None:
                await f.close()  # cancelled before it began
            await _closed_soon(f)
        else:
            await f.close()
        data = path.read_bytes()
        want = (chunk + last if what == "write" else chunk).encode() if text else None
        whole = want if text else (chunk + last if what == "write" else chunk)
        if what == "write":  # the cancelled write: all of it or none of it
            assert data in (whole, whole[: len(chunk)]), f"{steps} steps: {len(data)} bytes"
        else:
            assert data == whole, f"{steps} steps: {len(data)} bytes, not the {len(whole)} written"
        return cancelled

    async def main() -> None:
        # every step count until the operation ends before the cancel (the fallback's
        # write runs in a thread: more steps)
        outcomes = []
        for steps in range(_STEPS):
            outcomes.append(await one(steps))
            if not outcomes[-1]:
                break
        assert any(outcomes), "no cancellation landed: the test tested nothing"
        assert not outcomes[-1], f"still cancelled after {_STEPS} steps: try more"

    asyncio.run(main())


def test_a_read_after_a_cancelled_flush_sees_the_bytes(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"." * 4096)

    async def main() -> None:
        for steps in range(12):
            async with uringstack.aio.open(path, "r+b", stack=stack) as f:
                await f.write(b"%04d" % steps)
                await _cancelled_after(steps, f.flush())
                await f.seek(0)
                assert await f.read(4) == b"%04d" % steps

    asyncio.run(main())


def test_a_file_dropped_without_close_writes_its_buffer(tmp_path: pathlib.Path, stack: Stack) -> None:
    """As the built-in file's finalizer does (aiofiles' wrapped file has it), with a ResourceWarning."""
    path = tmp_path / "f"

    async def main() -> None:
        f = await uringstack.aio.open(path, "wb", stack=stack)
        await f.write(b"kept")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del f
            gc.collect()
        assert any(issubclass(w.category, ResourceWarning) for w in caught)

    asyncio.run(main())
    assert path.read_bytes() == b"kept"
    assert os.path.getsize(path) == 4


def test_a_seek_after_a_cancelled_append_keeps_its_position(tmp_path: pathlib.Path, stack: Stack) -> None:
    """The append's write, still in flight, moves the position to the end when it lands: a
    seek must wait for it (the fast path skipped the wait), or the seek is undone."""
    path = tmp_path / "f"
    path.write_bytes(b"." * 100)

    async def main() -> None:
        cancelled = 0
        for steps in range(_STEPS):
            f = await uringstack.aio.open(path, "a+b", stack=stack)
            await f.write(b"x" * 10)
            took = await _cancelled_after(steps, f.flush())
            assert await f.seek(5) == 5
            assert await f.tell() == 5, f"{steps} steps: the append's landing moved the position"
            assert await f.read(3) == b"..."
            await f.close()
            cancelled += took
            if not took:
                break
        assert cancelled, "no cancellation landed: the test tested nothing"

    asyncio.run(main())


def test_a_cancelled_text_write_leaves_a_stateful_encoder_as_it_was(tmp_path: pathlib.Path, stack: Stack) -> None:
    """``write("abc")`` cancelled while it waited for an append in flight took none of its bytes,
    but its encoding had moved iso2022_jp's encoder back to ASCII: the next write's bytes then
    lacked the shift sequence and the file read '日本��' (session 32)."""
    path = tmp_path / "f.txt"

    async def main() -> None:
        cancelled = 0
        for steps in range(_STEPS):
            path.unlink(missing_ok=True)
            f = await uringstack.aio.open(path, "a", encoding="iso2022_jp", stack=stack)
            await f.write("日本")
            await _cancelled_after(1, f.flush())  # started, then cancelled: its append write goes on
            took = await _cancelled_after(steps, f.write("abc"))
            await f.write("xyz")
            await f.close()
            text = path.read_bytes().decode("iso2022_jp")
            assert text in ("日本xyz", "日本abcxyz"), f"{steps} steps: {path.read_bytes()!r}"
            cancelled += took
            if not took:
                break
        assert cancelled, "no cancellation landed: the test tested nothing"

    asyncio.run(main())
