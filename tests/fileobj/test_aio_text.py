"""``uringstack.aio.open`` in text mode: byte order marks, positions next to a held-back ``'\\r'``,
byte offsets in UTF-16, and the checks the built-in makes.

Each case was found by a differential fuzz against the built-in ``open()``
(``test_aio_text_differential.py``) and failed before its fix: a second byte
order mark in the middle of an appended UTF-16 file, a write at 0 over the
file's mark, ``tell()`` one byte past a ``'\\r'`` the newline decoder held
back (a write after a read went a byte too far), ``UnicodeError`` after
``seek()`` to a byte offset of a UTF-16 file, ``read(0)`` allowed on a
write-only file, and an empty write moving an ``"a+"`` file to its end.
The expected bytes are written out here, not taken from the built-in,
which gets some of these wrong itself (it writes no mark at 0 after a
``seek`` to a cookie that carries decoder flags).
"""

from __future__ import annotations

import asyncio
import io
import pathlib
from typing import Any

import pytest

import uringstack.aio
from uringstack.stack import Stack

MARKED = ["utf-16", "utf-32", "utf-8-sig"]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


@pytest.mark.parametrize("mode", ["a", "a+"])
@pytest.mark.parametrize("encoding", MARKED)
def test_appending_writes_no_second_byte_order_mark(
    tmp_path: pathlib.Path, stack: Stack, encoding: str, mode: str
) -> None:
    path = tmp_path / "t"
    path.write_bytes("first\n".encode(encoding))

    async def main() -> None:
        async with uringstack.aio.open(path, mode, encoding=encoding, stack=stack) as f:
            await f.write("second\n")

    run(main())
    assert path.read_bytes() == "first\nsecond\n".encode(encoding)


@pytest.mark.parametrize("encoding", MARKED)
def test_a_write_at_the_start_writes_the_mark_and_elsewhere_none(
    tmp_path: pathlib.Path, stack: Stack, encoding: str
) -> None:
    path = tmp_path / "t"
    path.write_bytes("abcdef".encode(encoding))

    async def main() -> None:
        async with uringstack.aio.open(path, "r+", encoding=encoding, stack=stack) as f:
            await f.write("XY")  # over the mark and "ab"
            cookie = await f.tell()
            await f.seek(0)
            assert await f.read() == "XYcdef"
            await f.seek(0)
            await f.write("Z")  # at 0 again: the mark again, not "Z" over its first byte
            await f.seek(cookie)
            await f.write("W")  # past the start: no mark

    run(main())
    assert path.read_bytes() == "ZYWdef".encode(encoding)


def test_a_byte_offset_of_a_utf16_file_reads_without_a_mark(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "t"
    path.write_bytes("abcdefgh".encode("utf-16"))  # a 2-byte mark, 2 bytes a character

    async def main() -> None:
        async with uringstack.aio.open(path, "r+", encoding="utf-16", stack=stack) as f:
            await f.seek(10)  # the mark and "abcd"
            assert await f.read(2) == "ef"
            await f.seek(0)
            await f.write("AB")
            assert await f.read() == "cdefgh"  # (a new decoder here looked for a mark, and raised)
            await f.seek(0, 2)
            end = await f.tell()
            await f.write("Z")
            await f.seek(end)
            assert await f.read() == "Z"

    run(main())


@pytest.mark.parametrize("encoding", MARKED)
def test_the_position_after_reading_only_a_mark_is_past_it(tmp_path: pathlib.Path, stack: Stack, encoding: str) -> None:
    path = tmp_path / "t"
    path.write_bytes("".encode(encoding))  # the mark alone
    size = path.stat().st_size

    async def main() -> None:
        async with uringstack.aio.open(path, "r+", encoding=encoding, stack=stack) as f:
            assert await f.read(7) == ""
            assert await f.tell() == size
            assert await f.truncate() == size

    run(main())
    assert path.read_bytes() == "".encode(encoding)


@pytest.mark.parametrize("newline", [None, ""])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_positions_next_to_a_held_back_cr(
    tmp_path: pathlib.Path, stack: Stack, newline: str | None, encoding: str
) -> None:
    """The newline decoder holds a ``'\\r'`` back until it sees whether ``'\\n'`` follows.

    After each of the first *n* lines: ``tell()`` then ``read()``, ``seek()``
    back, the same ``read()``; ``seek()`` back, a one-character write lands
    right after the *n* lines."""
    path = tmp_path / "t"
    lines = ["ab\r", "\r", "cd\r\n", "ef\r", "g"]  # as the file holds them; newline=None reads "\n" for each end
    text = "".join(lines)

    async def main() -> None:
        for n in range(1, len(lines)):
            path.write_bytes(text.encode(encoding))
            async with uringstack.aio.open(path, "r+", encoding=encoding, newline=newline, stack=stack) as f:
                for _ in range(n):
                    await f.readline()
                cookie = await f.tell()
                rest = await f.read()
                await f.seek(cookie)
                assert await f.read() == rest, f"after {n} lines"
                await f.seek(cookie)
                await f.write("#")
            cut = len("".join(lines[:n]))
            assert path.read_bytes().decode(encoding) == text[:cut] + "#" + text[cut + 1 :], f"after {n} lines"

    run(main())


def test_a_write_after_a_read_lands_after_what_was_returned(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"line one\rline two\r\nthree")

    async def main() -> None:
        async with uringstack.aio.open(path, "r+", encoding="ascii", newline="", stack=stack) as f:
            assert await f.readline() == "line one\r"  # "\r" alone: the decoder read "l" to know
            await f.write("L")
            assert await f.read() == "ine two\r\nthree"

    run(main())
    assert path.read_bytes() == b"line one\rLine two\r\nthree"


def test_read_nothing_from_a_write_only_text_file_raises(tmp_path: pathlib.Path, stack: Stack) -> None:
    async def main() -> None:
        async with uringstack.aio.open(tmp_path / "t", "w", encoding="utf-8", stack=stack) as f:
            for call in (f.read(0), f.read(1), f.readline(0)):
                with pytest.raises(io.UnsupportedOperation, match="not readable"):
                    await call
        with pytest.raises(ValueError, match="closed file"):
            await f.read(0)

    run(main())


@pytest.mark.parametrize("mode", ["a+b", "a+"])
def test_an_empty_append_write_leaves_the_position(tmp_path: pathlib.Path, stack: Stack, mode: str) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"0123456789")

    async def main() -> None:
        kw = {} if "b" in mode else {"encoding": "ascii"}
        async with uringstack.aio.open(path, mode, stack=stack, **kw) as f:
            await f.seek(4)
            empty: Any = b"" if "b" in mode else ""
            assert await f.write(empty) == 0
            assert await f.tell() == 4
            assert await f.read() == (b"456789" if "b" in mode else "456789")

    run(main())
