"""A write that reaches the file only in part (the file size limit, a full disk): as ``io.FileIO``.

``write(2)`` returns the bytes it wrote when it cannot write them all, and
fails only when it wrote none.  ``uringstack.FileIO.write`` completed the
short write, and when that failed raised with the position before the write
although the first part was in the file.  Raised, the part was written
twice by ``io.BufferedWriter`` (which keeps a failed write's bytes): on an
``O_APPEND`` file, appended a second time; and a write held for a gathered
write (``bytes`` of ``HOLD_MIN`` or more) left the position before the part,
so the next write landed on it.

The limit is ``RLIMIT_FSIZE`` (``EFBIG`` past it, with ``SIGXFSZ`` ignored),
the same for the built-in file and ours, on each backend.
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

import uringstack
from uringstack.fileobj.openfile import HOLD_MIN
from uringstack.stack import Stack

from .conftest import open_direct_or_skip

HEAD = b"h" * 300


def _both(tmp_path: pathlib.Path, stack: Stack) -> list[tuple[pathlib.Path, Callable[..., Any]]]:
    def ours(path: pathlib.Path, mode: str, **kw: Any) -> Any:
        return uringstack.open(path, mode, stack=stack, **kw)

    out = []
    for name, opener in (("builtin", open), ("uringstack", ours)):
        path = tmp_path / name
        path.write_bytes(HEAD)
        out.append((path, opener))
    return out


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OSError as exc:
        return ("OSError", exc.errno)


@pytest.mark.parametrize("mode", ["r+b", "ab", "a+b"])
def test_a_raw_write_cut_short_returns_what_reached_the_file(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None], mode: str
) -> None:
    seen = []
    for path, opener in _both(tmp_path, stack):
        with opener(path, mode, buffering=0) as f:
            f.seek(250)
            size_limit(400)
            try:
                steps = [_outcome(lambda: f.write(b"x" * 1000)), f.tell(), _outcome(lambda: f.write(b"y" * 10))]
                steps.append(f.tell())
            finally:
                size_limit(None)
        seen.append((steps, path.read_bytes()))
    assert seen[1] == seen[0]
    steps, data = seen[0]
    assert steps[0] == (150 if mode == "r+b" else 100) and steps[2] == ("OSError", errno.EFBIG)
    assert len(data) == 400


def test_an_unaligned_direct_raw_write_cut_short_returns_what_reached_the_file(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]
) -> None:
    """O_DIRECT's unaligned write goes through a buffered descriptor, on the raw file's other path."""
    path = tmp_path / "f"
    path.write_bytes(HEAD)
    with open_direct_or_skip(path, "r+b", stack, buffering=0) as f:
        f.seek(250)
        size_limit(400)
        try:
            assert f.write(b"x" * 1000) == 150
            assert f.tell() == 400
            with pytest.raises(OSError) as failed:
                f.write(b"y")
        finally:
            size_limit(None)
        assert failed.value.errno == errno.EFBIG and f.tell() == 400
    assert path.read_bytes() == HEAD[:250] + b"x" * 150


def test_a_buffered_append_cut_short_is_not_appended_twice(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]
) -> None:
    record = bytes(range(256)) * 20  # 5120 bytes, held in the writer's buffer until the flush
    for path, opener in _both(tmp_path, stack):
        with opener(path, "ab", buffering=8192) as f:
            assert f.write(record) == len(record)
            size_limit(len(HEAD) + 1000)
            try:
                with pytest.raises(OSError) as failed:
                    f.flush()
                assert failed.value.errno == errno.EFBIG
            finally:
                size_limit(None)
            f.flush()  # the disk has room again: the rest of the record goes out
        assert path.read_bytes() == HEAD + record, path.name


def test_a_held_write_cut_short_leaves_the_position_after_what_reached_the_file(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]
) -> None:
    big = b"b" * (2 * HOLD_MIN)  # held by uringstack.FileIO for a gathered write
    limit = len(HEAD) + HOLD_MIN
    seen = []
    for path, opener in _both(tmp_path, stack):
        with opener(path, "wb") as f:  # (a write-only file: only its raw file holds writes)
            f.write(HEAD)
            size_limit(limit)
            try:
                # the built-in raises here, ours where the held bytes are written: at tell()
                failed = [_outcome(lambda: f.write(big)), _outcome(f.tell)]
            finally:
                size_limit(None)
            assert ("OSError", errno.EFBIG) in failed
            f.write(b"after")
            position = f.tell()
        seen.append((position, path.read_bytes()))
    assert seen[1] == seen[0]
    assert seen[0] == (limit + 5, HEAD + big[:HOLD_MIN] + b"after")


def test_a_write_failing_with_nothing_written_raises_and_leaves_the_position(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]
) -> None:
    for path, opener in _both(tmp_path, stack):
        with opener(path, "r+b", buffering=0) as f:
            f.seek(1000)
            size_limit(500)
            try:
                with pytest.raises(OSError) as failed:
                    f.write(b"z" * 10)
            finally:
                size_limit(None)
            assert failed.value.errno == errno.EFBIG
            assert f.tell() == 1000
        assert path.read_bytes() == HEAD, path.name


@pytest.mark.parametrize("mode", ["ab", "a+b"])
def test_an_append_failing_with_nothing_written_leaves_the_position(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None], mode: str
) -> None:
    """``write(2)`` on an ``O_APPEND`` descriptor moves the position only when it wrote: a failed
    append leaves it where it was (an ``a+`` file read from its middle), as the built-in's."""
    seen = []
    for path, opener in _both(tmp_path, stack):
        with opener(path, mode, buffering=0) as f:
            f.seek(10)
            size_limit(len(HEAD))
            try:
                failed = _outcome(lambda: f.write(b"z" * 10))
                steps = [failed, f.tell()]
            finally:
                size_limit(None)
            steps.append(f.write(b"after"))  # room again: appended, the position at the end
            steps.append(f.tell())
        seen.append((steps, path.read_bytes()))
    assert seen[1] == seen[0]
    assert seen[0] == ([("OSError", errno.EFBIG), 10, 5, len(HEAD) + 5], HEAD + b"after")


def test_a_direct_append_failing_with_nothing_written_leaves_the_position(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]
) -> None:
    """The same through O_DIRECT's write path (the raw file's other one); the built-in has no O_DIRECT."""
    path = tmp_path / "f"
    path.write_bytes(HEAD)
    with open_direct_or_skip(path, "a+b", stack, buffering=0) as f:
        f.seek(10)
        size_limit(len(HEAD))
        try:
            with pytest.raises(OSError) as failed:
                f.write(b"z" * 4096)
            assert failed.value.errno == errno.EFBIG and f.tell() == 10
        finally:
            size_limit(None)
        assert f.write(b"w" * 4096) == 4096 and f.tell() == len(HEAD) + 4096
    assert path.read_bytes() == HEAD + b"w" * 4096


def test_the_handle_s_write_errors_count_the_part_written(
    stack: Stack, tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]
) -> None:
    """The handle's own calls: ``transferred`` on the error counts the bytes that reached the file."""
    path = tmp_path / "f"
    path.write_bytes(HEAD)
    with stack.open(path) as h:
        size_limit(1000)
        try:
            with pytest.raises(uringstack.UringIOError) as one:
                h.write_from(b"a" * 1000, 500)
            with pytest.raises(uringstack.UringIOError) as gathered:
                h.writev_from([b"b" * 300, bytearray(b"c" * 600), memoryview(b"d" * 10)], 200)
            with pytest.raises(uringstack.UringIOError) as none:
                h.write_from(b"e" * 10, 2000)
        finally:
            size_limit(None)
    assert (one.value.errno, one.value.transferred) == (errno.EFBIG, 500)
    assert (gathered.value.errno, gathered.value.transferred) == (errno.EFBIG, 800)
    assert (none.value.errno, none.value.transferred) == (errno.EFBIG, 0)
    assert path.read_bytes() == HEAD[:200] + b"b" * 300 + b"c" * 500


def test_io_fileio_agrees(tmp_path: pathlib.Path, size_limit: Callable[[int | None], None]) -> None:
    """What the tests above hold ours to: ``io.FileIO`` returns a short count, then raises."""
    path = tmp_path / "f"
    path.write_bytes(HEAD)
    with io.FileIO(path, "r+") as f:
        f.seek(250)
        size_limit(400)
        try:
            assert f.write(b"x" * 1000) == 150
            with pytest.raises(OSError):
                f.write(b"y")
        finally:
            size_limit(None)
    assert os.path.getsize(path) == 400
