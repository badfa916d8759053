"""What a ``uringstack.aio.open`` file holds when something else closes it, on every backend.

Until session 27 the closers that cannot await (``stack.close()``,
``handle.close()``, the default stack at interpreter exit) did not know the
async file: what it held buffered was lost, and an operation in flight across
``stack.close()`` went on to ``lseek``/``fstat`` its old descriptor number,
by then another file's.  And an append's flush left running by a cancelled
caller made the next append's offset negative (its bytes lost).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import uringstack.aio
from uringstack.stack import Stack


@pytest.mark.parametrize("mode", ["wb", "ab", "w"])
def test_stack_close_writes_what_an_async_file_holds(stack: Stack, tmp_path: pathlib.Path, mode: str) -> None:
    path = tmp_path / "f"

    async def main() -> None:
        f = await uringstack.aio.open(path, mode, stack=stack)
        assert await f.write(b"x" * 100 if "b" in mode else "x" * 100) == 100
        stack.close()
        assert f.closed
        await f.close()  # (a no-op now)

    asyncio.run(asyncio.wait_for(main(), 30))
    assert path.read_bytes() == b"x" * 100


def test_a_handle_closed_behind_an_async_file_gets_its_bytes_first(stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"

    async def main() -> None:
        f = await uringstack.aio.open(path, "wb", stack=stack)
        assert await f.write(b"h" * 100) == 100
        f.raw.handle.close()
        assert f.closed
        await f.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert path.read_bytes() == b"h" * 100


def test_an_async_file_left_open_on_the_default_stack_is_written_at_exit(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    script = textwrap.dedent(
        f"""
        import asyncio
        import uringstack.aio
        KEEP = []
        async def main():
            f = await uringstack.aio.open({str(path)!r}, "wb")
            await f.write(b"y" * 100)
            KEEP.append(f)  # open at exit, as a global
        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert path.read_bytes() == b"y" * 100


@pytest.mark.parametrize("mode", ["rb", "ab"])
def test_an_operation_in_flight_across_stack_close_never_touches_a_reused_descriptor(
    stack: Stack, tmp_path: pathlib.Path, mode: str
) -> None:
    path, other = tmp_path / "f", tmp_path / "other"
    path.write_bytes(os.urandom(1 << 20) if mode == "rb" else b"")
    other.write_bytes(b"o" * 1000)

    async def main() -> None:
        f = await uringstack.aio.open(path, mode, stack=stack)
        fd = f.fileno()  # handed out: the descriptor's offset follows the position
        op = f.read(65536) if mode == "rb" else f.write(b"A" * 70000)  # (an append's flush)
        task = asyncio.ensure_future(op)
        for _ in range(3):
            await asyncio.sleep(0)
        stack.close()
        held = []
        ofd = os.open(other, os.O_RDWR)
        while ofd != fd and len(held) < 64:  # the other file takes the old number
            held.append(ofd)
            ofd = os.open(other, os.O_RDWR)
        for extra in held:
            os.close(extra)
        try:
            assert ofd == fd, "the other file did not get the old descriptor number"
            try:
                await asyncio.wait_for(task, 10)
            except ValueError as e:
                assert "closed file" in str(e)
            assert os.lseek(ofd, 0, os.SEEK_CUR) == 0, "the other file's offset was moved"
        finally:
            os.close(ofd)

    asyncio.run(asyncio.wait_for(main(), 30))
    assert other.read_bytes() == b"o" * 1000


@pytest.mark.parametrize("mode", ["ab", "a+b", "a"])
def test_an_append_after_a_cancelled_append_goes_after_it(stack: Stack, tmp_path: pathlib.Path, mode: str) -> None:
    """write(A) fills the buffer and is cancelled (its flush runs on, as documented), then
    write(B) is buffered and write(C) flushes both: all three land, in order.  B and C's
    offset was the file's size minus both (negative): ValueError, and B and C lost."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    a, b, c = "A" * (16 << 20), "B" * 100, "C" * 100000  # (A large: still landing at write(B))

    async def main() -> None:
        f = await uringstack.aio.open(path, mode, stack=stack)
        enc = (lambda s: s.encode()) if "b" in mode else (lambda s: s)
        task = asyncio.ensure_future(f.write(enc(a)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await f.write(enc(b)) == len(b)
        assert await f.tell() == len(a + b)
        assert await f.write(enc(c)) == len(c)
        assert await f.tell() == len(a + b + c)
        await f.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert path.read_bytes() == (a + b + c).encode()


@pytest.mark.parametrize("then", ["closed in another loop", "dropped"])
def test_an_append_flush_still_running_when_its_loop_ends_lands_once(
    stack: Stack, tmp_path: pathlib.Path, then: str
) -> None:
    """write(X) is acknowledged (buffered), write(A) hands X and A to an append task, and the
    loop ends (asyncio.run cancels every task).  X and A must be in the file, once each, and
    closing later raises nothing.  On io_uring they were lost (the queued write dropped), on
    the fallback close() raised a CancelledError nobody asked for."""
    path = tmp_path / "f"
    path.write_bytes(b"")
    files = []

    async def first() -> None:
        f = await uringstack.aio.open(path, "ab", stack=stack)
        files.append(f)
        assert await f.write(b"X" * 100) == 100
        files.append(asyncio.ensure_future(f.write(b"A" * 70000)))  # X and A to an append task
        await asyncio.sleep(0)

    asyncio.run(first())
    files.pop()  # (the cancelled write(A) task)
    if then == "dropped":
        del files[:]  # its finalizer writes what it holds
    else:

        async def second() -> None:
            await asyncio.wait_for(files[0].close(), 10)

        asyncio.run(second())
    data = path.read_bytes()
    assert (len(data), data.count(b"X"), data.count(b"A")) == (70100, 100, 70000)


def test_an_append_flush_cancelled_before_it_ran_gives_its_bytes_back(stack: Stack, tmp_path: pathlib.Path) -> None:
    """The append task cancelled before its first step (as a loop's teardown can do) submitted
    nothing: its bytes go back to the buffer, and the next close() writes them, raising
    nothing.  (The task is reached through ``_writing``: only so is the cancellation
    deterministic.)"""
    path = tmp_path / "f"
    path.write_bytes(b"")

    async def main() -> None:
        f = await uringstack.aio.open(path, "ab", stack=stack)
        assert await f.write(b"X" * 100) == 100
        writer = asyncio.ensure_future(f.write(b"A" * 70000))
        await asyncio.sleep(0)  # writer ran: X and A went to an append task not yet started
        append = f._writing
        assert append is not None and not append.done()
        append.cancel()
        assert await asyncio.wait_for(writer, 10) == 70000
        await asyncio.wait_for(f.close(), 10)

    asyncio.run(main())
    data = path.read_bytes()
    assert (len(data), data.count(b"X"), data.count(b"A")) == (70100, 100, 70000)
