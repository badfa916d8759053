"""The read side of ``shutil.copyfileobj`` through ``uringstack.open`` (issue 16).

copyfileobj reads ``read(65536)``; ``uringstack.open``'s default read buffer is
64 KiB, so ``io.BufferedReader`` reads each chunk straight into the ``bytes``
object it returns (whole multiples of its buffer bypass it), one
``FileIO.readinto`` of the caller's memory and no copy out of an internal buffer.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import Any

import pytest

import uringstack
from uringstack.fileobj.openfile import STREAM_BUFFER_SIZE, UPDATE_BUFFER_SIZE
from uringstack.ring.native import ffi
from uringstack.stack import Stack

CHUNK = 65536  # shutil.COPY_BUFSIZE on Linux


def _address(b: Any) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer("char[]", b)))


def _spy_raw_readinto(f: Any, spy: Any) -> None:
    """Route *f*'s raw ``readinto`` calls through *spy(real, b)*: the raw file's own
    ``readinto`` (its C page-cache step, an instance attribute, or the class's method)."""
    raw = f.raw
    real = raw.readinto
    vars(raw)["readinto"] = lambda b: spy(real, b)


def test_copyfileobj_chunk_is_a_whole_buffer() -> None:
    assert shutil.COPY_BUFSIZE == CHUNK
    assert CHUNK % STREAM_BUFFER_SIZE == 0


def test_read_of_64k_is_read_into_the_bytes_returned(
    tmp_path: pathlib.Path, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "src"
    data = os.urandom(5 * CHUNK + 1234)
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []  # (length, address) of every raw readinto

    def spy(readinto: Any, b: Any) -> int | None:
        seen.append((memoryview(b).nbytes, _address(b)))
        n: int | None = readinto(b)
        return n

    with uringstack.open(path, "rb", stack=stack) as f:
        _spy_raw_readinto(f, spy)
        chunks = [f.read(CHUNK) for _ in range(5)]  # kept alive: their addresses stay distinct
        assert len(seen) == 5
        for (length, address), chunk in zip(seen, chunks, strict=True):
            assert length == CHUNK  # not the buffer's size
            assert address == _address(chunk)  # the caller's object, not the internal buffer
        seen.clear()
        rest = f.read(CHUNK)
        assert rest == data[5 * CHUNK :]
        assert f.read(CHUNK) == b""
    assert b"".join(chunks) == data[: 5 * CHUNK]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 17])
def test_copyfileobj_between_uringstack_files(tmp_path: pathlib.Path, stack: Stack, size: int) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(size)
    src.write_bytes(data)
    with uringstack.open(src, "rb", stack=stack) as fi, uringstack.open(dst, "wb", stack=stack) as fo:
        shutil.copyfileobj(fi, fo)
    assert dst.read_bytes() == data


def test_small_reads_and_lines_after_whole_chunks(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Reads that bypass the buffer and reads served from it mix at the right offsets."""
    path = tmp_path / "src"
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(6000))
    path.write_bytes(data)
    with uringstack.open(path, "rb", stack=stack) as f, open(path, "rb") as ref:
        for n in (100, CHUNK, 7, 2 * CHUNK, -1):
            if n == -1:
                assert f.readline() == ref.readline()
                assert f.read(CHUNK) == ref.read(CHUNK)
            else:
                assert f.read(n) == ref.read(n)
            assert f.tell() == ref.tell()
        f.seek(12345)
        ref.seek(12345)
        assert f.read(CHUNK + 1) == ref.read(CHUNK + 1)
        assert f.read() == ref.read()


@pytest.mark.parametrize(("mode", "fill"), [("rb", 64 * 1024), ("r+b", 128 * 1024)])
def test_default_buffer_fill(
    tmp_path: pathlib.Path, stack: Stack, monkeypatch: pytest.MonkeyPatch, mode: str, fill: int
) -> None:
    """A small read fills the default buffer: 64 KiB for reading, 128 KiB for ``+`` modes
    (their writes are buffered too, and keep the size they had)."""
    path = tmp_path / "f"
    data = os.urandom(300_000)
    path.write_bytes(data)
    lengths: list[int] = []

    def spy(readinto: Any, b: Any) -> int | None:
        lengths.append(memoryview(b).nbytes)
        n: int | None = readinto(b)
        return n

    with uringstack.open(path, mode, stack=stack) as f:
        _spy_raw_readinto(f, spy)
        assert f.read(100) == data[:100]
        assert lengths == [fill]
    assert fill in (STREAM_BUFFER_SIZE, UPDATE_BUFFER_SIZE)
