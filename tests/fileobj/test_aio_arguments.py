"""A bad argument to an aio file's method fails as the built-in file's does (aiofiles runs that one).

Every method taking an argument, 14 bad (or borderline) arguments, binary files
buffered and not, text files, open and closed: the exception's type, the
position after it and the file's bytes are the built-in's.  ``io`` converts an
argument before it looks at the file, so a call that is wrong twice raises the
argument's error; ``io.BufferedReader`` has no ``write`` (and
``io.BufferedWriter`` no ``read``), which it refuses whatever the argument.
Before, ``readinto`` into a read-only buffer and ``readlines`` with a bad hint
raised only after they had read (the bytes and lines were lost), and
``readline(None)``/``readlines(None)`` were refused.
"""

from __future__ import annotations

import array
import asyncio
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

import uringstack.aio
from uringstack.stack import Stack

CONTENT = b"hello\nworld\n" * 10
ARGUMENTS = [None, 1.5, "x", b"x", -1, -2, 1 << 63, 1 << 64, [1], bytearray(b"ab"), memoryview(b"abcd")[::2],
             array.array("i", [1]), True, 3]  # fmt: skip
METHODS = ["read", "read1", "readinto", "readline", "readlines", "write", "writelines", "seek", "seek whence",
           "truncate", "peek"]  # fmt: skip
# io.TextIOWrapper.seek takes a float cookie (1.5: "position" 1.5) and leaves lseek to refuse
# 2**63; cookies no tell() returned, which the aio file refuses or reads as their bits say
BUILTIN_QUIRKS = [("text", "seek", ARGUMENTS[1]), ("text", "seek", ARGUMENTS[6]), ("text", "seek", ARGUMENTS[7])]


def _call(f: Any, method: str, arg: Any) -> Any:
    if method == "seek whence":
        return f.seek(0, arg)
    return getattr(f, method)(arg)


def _builtin(path: pathlib.Path, mode: str, buffering: int, closed: bool, method: str, arg: Any) -> tuple[Any, ...]:
    path.write_bytes(CONTENT)
    with open(path, mode, buffering=buffering) as f:
        if closed:
            f.close()
        if not hasattr(f, method.split()[0]):
            return ("no such method",)
        try:
            _call(f, method, arg)
            outcome = "returned"
        except Exception as exc:
            outcome = type(exc).__name__
        try:
            at = None if closed else f.tell()
        except OSError:  # "telling position disabled by next() call": the built-in's own fault
            at = "unknown"
    return outcome, at, path.read_bytes()


async def _ours(path: pathlib.Path, mode: str, buffering: int, closed: bool, method: str, arg: Any, stack: Stack
                ) -> tuple[Any, ...]:  # fmt: skip
    path.write_bytes(CONTENT)
    f = await uringstack.aio.open(path, mode, buffering=buffering, stack=stack)
    try:
        if closed:
            await f.close()
        try:
            await _call(f, method, arg)
            outcome = "returned"
        except Exception as exc:
            outcome = type(exc).__name__
        at = None if closed else await f.tell()
    finally:
        await f.close()
    return outcome, at, path.read_bytes()


FILES = [("rb", 0), ("wb", 0), ("r+b", 0), ("ab", 0), ("rb", -1), ("wb", -1), ("r+b", -1), ("ab", -1),
         ("r", -1), ("w", -1), ("r+", -1)]  # fmt: skip


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
@pytest.mark.parametrize(("mode", "buffering"), FILES, ids=[f"{m}-{b}" for m, b in FILES])
def test_a_bad_argument_fails_as_the_builtin_file_fails(
    tmp_path: pathlib.Path, stack: Stack, mode: str, buffering: int, closed: bool
) -> None:
    path = tmp_path / "f"
    kind = "binary" if "b" in mode else "text"
    checked = 0
    for method in METHODS:
        for arg in ARGUMENTS:
            want = _builtin(path, mode, buffering, closed, method, arg)
            quirk = any(k == kind and m == method and a is arg for k, m, a in BUILTIN_QUIRKS)
            if want == ("no such method",) or quirk:
                continue
            got = asyncio.run(_ours(path, mode, buffering, closed, method, arg, stack))
            if want[1] == "unknown":
                got = (got[0], "unknown", got[2])
            assert got == want, f"{method}({arg!r})"
            checked += 1
    assert checked > 60


def test_a_read_only_buffer_loses_no_bytes(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(CONTENT)

    async def main() -> tuple[bytes, bytes]:
        async with uringstack.aio.open(path, "rb", stack=stack) as f:
            with pytest.raises(TypeError, match="read-write bytes-like object"):
                await f.readinto(b"12345")
            with pytest.raises(TypeError):
                await f.readlines("x")  # type: ignore[arg-type]
            return await f.read(6), await f.readline()

    assert asyncio.run(main()) == (b"hello\n", b"world\n")  # nothing was consumed by the failures


def test_none_is_no_limit_where_the_builtin_takes_it(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(CONTENT)
    calls: list[Callable[[Any], Any]] = [
        lambda f: f.read(None),
        lambda f: f.readline(None),
        lambda f: f.readlines(None),
    ]

    async def main() -> list[Any]:
        out = []
        for call in calls:
            async with uringstack.aio.open(path, "rb", stack=stack) as f:
                out.append(await call(f))
        return out

    with open(path, "rb") as f:
        assert asyncio.run(main()) == [CONTENT, b"hello\n", f.readlines()]


def test_tell_after_seeking_to_a_cookie_with_a_held_back_cr_at_byte_0(tmp_path: pathlib.Path, stack: Stack) -> None:
    # 2**64: byte 0 with the newline decoder's "'\\r' held back" flag, a cookie no tell()
    # returns (no '\\r' comes before byte 0); the built-in keeps it as given, and so must
    # tell() (it was -1: the flag's '\\r' taken off a position with no byte before it)
    path = tmp_path / "f"
    path.write_bytes(CONTENT)

    async def main() -> tuple[int, str, int]:
        async with uringstack.aio.open(path, "r", stack=stack) as f:
            at = await f.seek(1 << 64)
            assert at == 1 << 64
            return await f.tell(), await f.read(3), await f.tell()

    with open(path) as f:
        f.seek(1 << 64)
        want = (f.tell(), f.read(3), f.tell())
    assert asyncio.run(main()) == want == (1 << 64, "\nhe", 2)
