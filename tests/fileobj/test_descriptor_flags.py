"""A descriptor given to ``uringstack.open(fd, mode)`` whose flags the mode does not say.

``os.fdopen(fd, "r+b")`` of a descriptor opened with ``O_APPEND`` is ordinary
use; the kernel, not the mode, decides where its writes land.  The file object
took the mode's word for it: ``tell()`` after a write said 3 where the file
had grown to 1,003 bytes, and under O_DIRECT a second descriptor opened for an
unaligned write (``FileIO._buffered``) lacked ``O_APPEND``, so it wrote over
offset 0, and the next aligned write failed with EINVAL.  That descriptor lacked
the caller's ``O_SYNC`` too.  Mode ``"a"`` over a descriptor *without*
``O_APPEND`` wrote at the end where the built-in writes at the position.  And
``uringstack.aio.open`` over an O_DIRECT descriptor failed every unaligned op
and its ``close()``; it refuses it at open now."""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import io
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

import uringstack
import uringstack.aio
from tests.requires import open_direct, skip_without
from uringstack.stack import Stack


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _fds_on(path: pathlib.Path) -> dict[int, int]:
    """Every descriptor of this process on *path*, with its status flags."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                found[int(name)] = _flags(int(name))
        except OSError:
            pass  # (listdir's own descriptor, gone)
    return found


def _run(opener: Callable[..., Any], fd: int, mode: str, steps: list[Callable[[Any], Any]]) -> list[Any]:
    f = opener(fd, mode, buffering=0)
    out = []
    for step in steps:
        try:
            out.append(step(f))
        except OSError as exc:
            out.append(f"{type(exc).__name__} errno {exc.errno}")
    f.close()
    return out


APPEND_STEPS: list[Callable[[Any], Any]] = [
    lambda f: f.write(b"abc"),
    lambda f: f.tell(),
    lambda f: f.seek(512),
    lambda f: f.write(b"Z" * 512),
    lambda f: f.tell(),
]


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "o_direct"])
def test_an_o_append_descriptor_opened_without_a_appends_as_the_builtin(
    tmp_path: pathlib.Path, stack: Stack, direct: bool
) -> None:
    path = tmp_path / "f"
    results = {}
    appending: list[bool] = []
    for name in ("builtin", "uringstack"):
        path.write_bytes(b"." * 1000)
        if name == "builtin":
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            results[name] = _run(builtins.open, fd, "r+b", APPEND_STEPS)
        else:
            flags = os.O_RDWR | os.O_APPEND
            fd = open_direct(path, flags) if direct else os.open(path, flags)
            steps = [*APPEND_STEPS, lambda f: appending.extend(bool(fl & os.O_APPEND) for fl in _fds_on(path).values())]
            results[name] = _run(lambda *a, **k: uringstack.open(*a, stack=stack, **k), fd, "r+b", steps)[:-1]
        results[name + " file"] = path.read_bytes()
    assert results["uringstack"] == results["builtin"] == [3, 1003, 512, 512, 1515]
    if direct:
        # the descriptor of the unaligned writes keeps O_APPEND too: its writes land at the
        # end even where another writer moved it after this one looked it up (the three: the
        # caller's, the handle's duplicate of it, the unaligned writes' own)
        assert appending == [True, True, True], appending
    assert results["uringstack file"] == results["builtin file"] == b"." * 1000 + b"abc" + b"Z" * 512


def test_mode_a_over_a_descriptor_without_o_append_writes_at_the_position(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    steps: list[Callable[[Any], Any]] = [
        lambda f: f.tell(),
        lambda f: f.seek(10),
        lambda f: f.write(b"abc"),
        lambda f: f.tell(),
    ]
    results = {}
    for name, opener in (
        ("builtin", builtins.open),
        ("uringstack", lambda *a, **k: uringstack.open(*a, stack=stack, **k)),
    ):
        path.write_bytes(b"." * 1000)
        results[name] = _run(opener, os.open(path, os.O_RDWR), "a+b", steps)
        results[name + " file"] = path.read_bytes()
    assert results["uringstack"] == results["builtin"] == [1000, 10, 3, 13]  # at the end at open, as io.FileIO
    assert results["uringstack file"] == results["builtin file"] == b"." * 10 + b"abc" + b"." * 987
    with uringstack.open(os.open(path, os.O_RDWR), "a+b", buffering=0, stack=stack) as f:
        assert f.mode == "ab+"  # (the mode string stays the mode's, as io.FileIO's)


@pytest.mark.parametrize("sync", ["O_SYNC", "O_DSYNC"])
def test_a_second_descriptor_keeps_the_callers_sync_flag(tmp_path: pathlib.Path, stack: Stack, sync: str) -> None:
    """An unaligned write under O_DIRECT goes through a second descriptor of the file: it
    must be as durable as the caller's (without the flag, write() returned before the data
    was on stable storage).  Likewise the O_DIRECT descriptor ``direct=True`` opens for a
    caller's buffered one."""
    flag = getattr(os, sync)
    path = tmp_path / "f"
    path.write_bytes(b"." * 8192)
    before = set(_fds_on(path))
    with uringstack.open(open_direct(path, os.O_RDWR | flag), "r+b", buffering=0, stack=stack) as f:
        assert f.write(b"abc") == 3  # unaligned: the second descriptor
        mine = {fd: flags for fd, flags in _fds_on(path).items() if fd not in before}
        assert len(mine) == 3, mine  # the caller's, the handle's duplicate of it, the second
        for fd, flags in mine.items():
            assert flags & flag == flag, f"descriptor {fd} lost {sync}"
    with uringstack.open(os.open(path, os.O_RDWR | flag), "r+b", buffering=0, direct=True, stack=stack) as f:
        mine = {fd: flags for fd, flags in _fds_on(path).items() if fd not in before}
        assert len(mine) == 2, mine  # the caller's, the handle's O_DIRECT one (its reopen, duplicated)
        for fd, flags in mine.items():
            assert flags & flag == flag, f"descriptor {fd} lost {sync}"
    assert path.read_bytes() == b"abc" + b"." * 8189


def test_an_o_tmpfile_descriptor_gets_a_second_descriptor_of_the_same_file(
    tmp_path: pathlib.Path, stack: Stack
) -> None:
    """The second descriptor is opened without ``O_TMPFILE``, which would make another file."""
    try:
        fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR | os.O_DIRECT)
    except OSError as exc:
        skip_without(f"the tmp directory {tmp_path} refuses O_TMPFILE with O_DIRECT ({exc})")
    with uringstack.open(fd, "r+b", buffering=0, stack=stack) as f:
        assert f.write(b"abc") == 3
        assert f.write(b"Z" * 4093) == 4093
        f.seek(0)
        assert f.read(5000) == b"abc" + b"Z" * 4093


def test_aio_open_refuses_an_o_direct_descriptor(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 500)
    os.close(open_direct(path, os.O_RDONLY))  # (skips where O_DIRECT is refused)

    async def main() -> None:
        with pytest.raises(io.UnsupportedOperation, match="O_DIRECT"):
            await uringstack.aio.open(path, "r+b", stack=stack, opener=lambda p, fl: os.open(p, fl | os.O_DIRECT))

    asyncio.run(main())
    assert not _fds_on(path), "the refused open left its descriptor open"


@pytest.mark.parametrize(
    ("flags", "mode", "want", "content"),
    [
        (os.O_RDWR | os.O_APPEND, "r+b", [3, 1003, 3, 1006], b"." * 1000 + b"abcdef"),
        (os.O_RDWR, "a+b", [3, 13, 3, 16], b"." * 10 + b"abcdef" + b"." * 984),
    ],
    ids=["o_append-fd-r+b", "plain-fd-a+b"],
)
def test_aio_files_write_where_the_descriptor_says(
    tmp_path: pathlib.Path, stack: Stack, flags: int, mode: str, want: list[int], content: bytes
) -> None:
    """The async file's position follows the descriptor's O_APPEND, as the built-in's (and the
    sync file's, above) does: it followed the mode."""
    path = tmp_path / "f"
    path.write_bytes(b"." * 1000)

    async def main() -> list[int]:
        f = await uringstack.aio.open(os.open(path, flags), mode, stack=stack)
        try:
            await f.seek(10)
            return [await f.write(b"abc"), await f.tell(), await f.write(b"def"), await f.tell()]
        finally:
            await f.close()

    assert asyncio.run(main()) == want
    assert path.read_bytes() == content
    path.write_bytes(b"." * 1000)
    # the built-in's raw file, for the record (its buffered layer over an O_APPEND descriptor
    # opened "r+b" counts the position itself, not knowing where the kernel put the bytes:
    # tell() says 13 until a flush, then 1006)
    with builtins.open(os.open(path, flags), mode, buffering=0) as g:
        g.seek(10)
        assert [g.write(b"abc"), g.tell(), g.write(b"def"), g.tell()] == want
    assert path.read_bytes() == content


def test_a_file_opened_by_name_holds_one_descriptor(tmp_path: pathlib.Path, stack: Stack) -> None:
    """As the built-in's: the handle serves a duplicate of the descriptor ``FileIO`` opened
    (``Stack.open(adopt_fd=)``), which then becomes the file's ``fileno()``, the first closed."""
    path = tmp_path / "f"
    path.write_bytes(b"." * 8192)
    before = set(_fds_on(path))
    with uringstack.open(path, "rb", buffering=0, stack=stack) as f:
        assert f.handle is not None
        assert set(_fds_on(path)) - before == {f.fileno()} == {f.handle.fd}
        assert f.read(3) == b"..."
    assert set(_fds_on(path)) == before
