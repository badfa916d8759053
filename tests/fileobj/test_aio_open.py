"""uringstack.aio.open: aiofiles' interface, I/O awaited on the stack (no executor)."""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import random
from typing import Any

import pytest

import uringstack
import uringstack.aio
from uringstack.stack import Stack


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def _no_executor(loop: asyncio.AbstractEventLoop) -> None:
    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError("file I/O went to a thread pool")

    loop.run_in_executor = refuse  # type: ignore[method-assign]


def test_binary_round_trip_without_a_thread_pool(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom(1 << 20)

    async def main() -> None:
        if stack.config.core.backend != "fallback":  # the fallback backend is a thread pool by design
            _no_executor(asyncio.get_running_loop())
        async with uringstack.aio.open(path, "wb", stack=stack) as f:
            for i in range(0, len(data), 10_000):
                await f.write(data[i : i + 10_000])
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            assert await f.read(5) == data[:5]
            assert await f.tell() == 5
            await f.seek(1000)
            assert await f.read() == data[1000:]
            assert await f.read() == b""
        f2 = await uringstack.aio.open(path, "r+b", stack=stack)
        await f2.seek(10)
        await f2.write(b"XY")
        await f2.flush()
        assert path.read_bytes()[10:12] == b"XY"
        await f2.close()
        assert f2.closed

    run(main())


def test_lines_and_iteration(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    lines = [f"line {i} é\n" for i in range(5000)]
    path.write_text("".join(lines), encoding="utf-8")

    async def main() -> None:
        async with uringstack.aio.open(path, encoding="utf-8", stack=stack) as f:
            got = [line async for line in f]
        assert got == lines
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            assert await f.readline() == lines[0].encode()
            assert await f.readlines() == [x.encode() for x in lines[1:]]

    run(main())


@pytest.mark.parametrize("newline", [None, "", "\n", "\r\n"])
def test_text_tell_and_seek_round_trip(newline: str | None, tmp_path: pathlib.Path, stack: Stack) -> None:
    """tell() inside decoded text is a cookie seek() returns to (multibyte chars, CRLF)."""
    path = tmp_path / "t"
    text = "".join(f"€ligne {i}\r\nsuite ☃ {i}\n" for i in range(4000))
    path.write_bytes(text.encode("utf-8"))

    async def main() -> None:
        async with uringstack.aio.open(path, encoding="utf-8", newline=newline, stack=stack) as f:
            with open(path, encoding="utf-8", newline=newline) as ref:
                rnd = random.Random(3)
                for _ in range(60):
                    if rnd.random() < 0.5:
                        assert await f.readline() == ref.readline()
                    else:
                        n = rnd.randrange(1, 20_000)
                        assert await f.read(n) == ref.read(n)
                    cookie, ref_cookie = await f.tell(), ref.tell()
                    assert await f.read(50) == ref.read(50)
                    await f.seek(cookie)
                    ref.seek(ref_cookie)

    run(main())


def test_open_errors_are_the_builtins(tmp_path: pathlib.Path, stack: Stack) -> None:
    async def main() -> None:
        for target, mode in [(tmp_path / "missing", "r"), (tmp_path, "r"), (tmp_path / "x", "rw")]:
            try:
                open(target, mode).close()
            except (OSError, ValueError) as exc:
                expected = exc
            with pytest.raises(type(expected)) as got:
                await uringstack.aio.open(target, mode, stack=stack)
            assert getattr(got.value, "errno", None) == getattr(expected, "errno", None)
        (tmp_path / "w").write_bytes(b"")
        async with uringstack.aio.open(tmp_path / "w", "wb", stack=stack) as f:
            with pytest.raises(OSError) as unsupported:
                await f.read()
            assert unsupported.value.errno is None  # io.UnsupportedOperation, as the built-in
        with pytest.raises(ValueError, match="I/O operation on closed file"):
            await f.write(b"x")

    run(main())


def test_32_tasks_of_random_reads(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    data = os.urandom(4 << 20)
    path.write_bytes(data)

    async def reader(seed: int) -> None:
        rnd = random.Random(seed)
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            for _ in range(50):
                off = rnd.randrange(0, len(data) // 4096) * 4096
                await f.seek(off)
                assert await f.read(4096) == data[off : off + 4096]

    async def main() -> None:
        await asyncio.gather(*(reader(i) for i in range(32)))

    run(main())


def test_a_failed_write_surfaces_at_flush(tmp_path: pathlib.Path, stack: Stack) -> None:
    from uringstack.errors import UringIOError

    async def main() -> None:
        f = await uringstack.aio.open(tmp_path / "f", "wb", stack=stack)

        async def fail(buf: Any, off: int) -> int:
            raise UringIOError(errno.ENOSPC, "write", str(tmp_path / "f"))

        f.raw.handle.write = fail  # type: ignore[union-attr]
        await f.write(b"x" * 100)  # buffered
        with pytest.raises(OSError) as info:
            await f.flush()
        assert info.value.errno == errno.ENOSPC
        # the bytes stay buffered (as io.BufferedWriter's): close() tries them again, raises
        # that failure, and closes the file all the same
        with pytest.raises(OSError) as again:
            await f.close()
        assert again.value.errno == errno.ENOSPC
        assert f.closed

    run(main())


def test_os_helpers(tmp_path: pathlib.Path) -> None:
    from uringstack.fileobj import aio_os

    async def main() -> None:
        p = tmp_path / "a"
        p.write_bytes(b"12345")
        assert (await aio_os.stat(p)).st_size == 5
        assert await aio_os.path.getsize(p) == 5
        await aio_os.rename(p, tmp_path / "b")
        assert await aio_os.path.exists(tmp_path / "b")
        await aio_os.remove(tmp_path / "b")
        assert not await aio_os.path.exists(tmp_path / "b")

    run(main())


def test_detach_writes_the_buffered_bytes_where_they_belong(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"

    async def main() -> None:
        f = await uringstack.aio.open(path, "wb", stack=stack)
        await f.write(b"abc")  # buffered
        raw = f.detach()
        assert os.lseek(raw.fileno(), 0, os.SEEK_CUR) == 3
        raw.close()

    run(main())
    assert path.read_bytes() == b"abc"


def test_the_descriptor_offset_is_the_position_wherever_it_is_visible(tmp_path: pathlib.Path, stack: Stack) -> None:
    """fileno() users, callers who passed a descriptor and raw's users see the position, as with the built-in."""
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 64)

    async def main() -> None:
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            await f.seek(300)
            assert await f.read(10) == path.read_bytes()[300:310]
            fd = f.fileno()
            assert os.lseek(fd, 0, os.SEEK_CUR) == 310
            await f.seek(1000)
            assert os.lseek(fd, 0, os.SEEK_CUR) == 1000
            await f.read(5)
            assert os.lseek(fd, 0, os.SEEK_CUR) == 1005
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            await f.seek(4000)
            await f.read(1)
            assert f.raw.tell() == 4001
        fd = os.open(path, os.O_RDONLY)
        try:
            async with uringstack.aio.open(fd, "rb", closefd=False, stack=stack) as f:
                await f.seek(50)
                assert os.lseek(fd, 0, os.SEEK_CUR) == 50
                await f.read(7)
                assert os.lseek(fd, 0, os.SEEK_CUR) == 57
        finally:
            os.close(fd)

    run(main())


def test_every_read_and_seek_checks_the_file(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Closed, detached, write-only, stack closed: each refused as the built-in refuses it."""
    import io

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)

    async def main() -> None:
        f = await uringstack.aio.open(path, "rb", stack=stack)
        await f.read(10)
        await f.close()
        for op in (f.read(4096), f.read(), f.seek(0), f.tell(), f.readline()):
            with pytest.raises(ValueError, match="I/O operation on closed file"):
                await op
        f = await uringstack.aio.open(path, "rb", stack=stack)
        f.detach().close()
        for op in (f.read(4096), f.seek(0)):
            with pytest.raises(ValueError, match="detached"):
                await op
        async with uringstack.aio.open(path, "ab", stack=stack) as w:
            with pytest.raises(io.UnsupportedOperation):
                await w.read(4096)
        own = uringstack.open_stack(overrides={"core.backend": stack.config.core.backend})
        f = await uringstack.aio.open(path, "rb", stack=own)
        await f.seek(4096)
        own.close()
        for op in (f.read(4096), f.seek(0)):
            with pytest.raises(ValueError, match="I/O operation on closed file"):
                await op

    run(main())


@pytest.mark.usefixtures("reads_through_ring")  # (a cached first read would not wait: nothing would queue)
def test_calls_on_one_file_keep_their_order_when_a_waiting_one_is_cancelled(
    tmp_path: pathlib.Path, stack: Stack
) -> None:
    path = tmp_path / "f"
    data = os.urandom(64 << 10)
    path.write_bytes(data)

    async def main() -> None:
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            first = asyncio.ensure_future(f.read(4096))
            jump = asyncio.ensure_future(f.seek(100))
            rest = asyncio.ensure_future(f.read(10))
            await asyncio.sleep(0)  # all three called: the seek and the last read wait their turn
            jump.cancel()
            assert await first == data[:4096]
            assert await rest == data[4096:4106]
            assert jump.cancelled()
            assert await f.tell() == 4106

    run(main())


def test_a_turn_handed_to_a_cancelled_waiter_passes_on() -> None:
    from uringstack.aio import _Turns

    async def main() -> None:
        turns = _Turns()
        turns.busy = True  # held by this task
        late = asyncio.ensure_future(turns.wait())
        last = asyncio.ensure_future(turns.wait())
        await asyncio.sleep(0)
        turns.release()  # the turn is late's now ...
        late.cancel()  # ... but late is cancelled before it runs
        await asyncio.wait_for(last, timeout=5)  # the turn reached last: no deadlock
        assert late.cancelled() and turns.busy
        turns.release()
        assert not turns.busy

    run(main())
