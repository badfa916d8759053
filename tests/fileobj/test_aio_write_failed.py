"""``uringstack.aio`` writes that fail (the file size limit): the built-in file's outcome, byte for byte.

aiofiles runs the built-in file, so the built-in, driven through the same
steps, is the reference: each step's result or errno, the position after
it, and the file's bytes at the end.  Found by a differential fuzz under
``RLIMIT_FSIZE``; before session 25:

- an unbuffered write that failed left the position past its bytes (the
  next write left a gap), and one cut short raised instead of returning
  the part that reached the file;
- a buffered file dropped what a failed flush had not written, so after
  the disk had room again ``close()`` succeeded without those bytes (the
  built-in keeps them and writes them then), and the position still
  counted them;
- a write whose flush failed kept its own bytes buffered although it
  raised (the built-in does not take them): a caller writing them again
  had them twice.
"""

from __future__ import annotations

import asyncio
import errno
import pathlib
import resource
import signal
from collections.abc import Iterator
from typing import Any

import pytest

import uringstack.aio
from uringstack.stack import Stack

HEAD = b"h" * 300

# (mode, buffering, steps): ("limit", n) / ("limit", None), ("write", bytes), ("seek", n),
# ("flush",), ("tell",); the file closes at the end
CASES: dict[str, tuple[str, int, list[tuple[Any, ...]]]] = {
    "unbuffered-cut-short": ("r+b", 0, [("seek", 250), ("limit", 400), ("write", b"x" * 1000), ("write", b"y")]),
    "unbuffered-append-cut-short": ("ab", 0, [("limit", 400), ("write", b"x" * 1000), ("write", b"y")]),
    "unbuffered-nothing-written": (
        "r+b",
        0,
        [("seek", 1000), ("limit", 500), ("write", b"z" * 10), ("limit", None), ("write", b"w" * 5)],
    ),
    # an "a+" file read from its middle: a failed append leaves the position there (write(2)
    # moves it only when it wrote), then the next append goes to the end
    "unbuffered-append-nothing-written": (
        "a+b",
        0,
        [("seek", 10), ("limit", 300), ("write", b"z" * 10), ("tell",), ("limit", None), ("write", b"w" * 5)],
    ),
    "buffered-flush-kept": (
        "r+b",
        8192,
        [("seek", 100), ("write", b"a" * 5000), ("limit", 1000), ("flush",), ("limit", None)],
    ),
    "buffered-append-flush-kept": (
        "ab",
        8192,
        [("write", bytes(range(256)) * 20), ("limit", 1300), ("flush",), ("limit", None), ("flush",)],
    ),
    "buffered-write-not-taken": (
        "r+b",
        100,
        [("limit", 200), ("seek", 500), ("write", b"a" * 60), ("write", b"b" * 60), ("limit", None)],
    ),
    "buffered-rest-fits-the-buffer": (
        "w+b",
        8192,
        [("limit", 5000), ("write", b"m" * 10000), ("limit", None), ("write", b"d")],
    ),
    "buffered-rest-too-large": ("w+b", 8192, [("limit", 5000), ("write", b"m" * 30000), ("limit", None)]),
}


@pytest.fixture
def limit_guard() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _limit(n: int | None) -> None:
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY if n is None else n, hard))


async def _step_async(f: Any, step: tuple[Any, ...]) -> Any:
    kind = step[0]
    try:
        if kind == "write":
            return ("wrote", await f.write(step[1]), await f.tell())
        if kind == "seek":
            return ("seek", await f.seek(step[1]))
        if kind == "flush":
            await f.flush()
            return ("flushed", await f.tell())
        if kind == "tell":
            return ("tell", await f.tell())
    except OSError as exc:
        return ("OSError", exc.errno)
    raise AssertionError(step)


def _step_sync(f: Any, step: tuple[Any, ...]) -> Any:
    kind = step[0]
    try:
        if kind == "write":
            return ("wrote", f.write(step[1]), f.tell())
        if kind == "seek":
            return ("seek", f.seek(step[1]))
        if kind == "flush":
            f.flush()
            return ("flushed", f.tell())
        if kind == "tell":
            return ("tell", f.tell())
    except OSError as exc:
        return ("OSError", exc.errno)
    raise AssertionError(step)


def _builtin(path: pathlib.Path, mode: str, buffering: int, steps: list[tuple[Any, ...]]) -> tuple[list[Any], bytes]:
    path.write_bytes(HEAD)
    log: list[Any] = []
    f = open(path, mode, buffering=buffering)  # noqa: SIM115 (closed below, through failures)
    for step in steps:
        if step[0] == "limit":
            _limit(step[1])
        else:
            log.append(_step_sync(f, step))
    try:
        f.close()
        log.append("closed")
    except OSError as exc:
        log.append(("close", exc.errno))
    _limit(None)
    return log, path.read_bytes()


def _ours(
    path: pathlib.Path, mode: str, buffering: int, steps: list[tuple[Any, ...]], stack: Stack
) -> tuple[list[Any], bytes]:
    path.write_bytes(HEAD)

    async def main() -> list[Any]:
        log: list[Any] = []
        f = await uringstack.aio.open(path, mode, buffering=buffering, stack=stack)
        for step in steps:
            if step[0] == "limit":
                _limit(step[1])
            else:
                log.append(await _step_async(f, step))
        try:
            await f.close()
            log.append("closed")
        except OSError as exc:
            log.append(("close", exc.errno))
        return log

    try:
        log = asyncio.run(main())
    finally:
        _limit(None)
    return log, path.read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_failed_write_ends_as_the_built_in_files(
    stack: Stack, tmp_path: pathlib.Path, limit_guard: None, case: str
) -> None:
    mode, buffering, steps = CASES[case]
    expected = _builtin(tmp_path / "builtin", mode, buffering, steps)
    if case != "buffered-rest-fits-the-buffer":  # (there the failure is the built-in's to hide)
        assert ("OSError", errno.EFBIG) in expected[0] or ("close", errno.EFBIG) in expected[0]
    assert _ours(tmp_path / "ours", mode, buffering, steps, stack) == expected
