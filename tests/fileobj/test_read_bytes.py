"""``uringstack.FileIO.read(n)`` and ``readall()`` read into the ``bytes`` they return.

As ``io.FileIO`` does: a full read hands back the object the data was read
into, with no second copy through a ``bytearray`` (whose copy doubled the
memory and the bytes moved by ``f.read()`` of a whole file).  Memory is
measured with ``tracemalloc`` (allocations, not speed)."""

from __future__ import annotations

import os
import pathlib
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import uringstack
from uringstack.stack import Stack

SIZE = 8 << 20


def _peak(fn: Callable[[], bytes]) -> tuple[bytes, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.fixture
def data_file(tmp_path: pathlib.Path) -> tuple[pathlib.Path, bytes]:
    path = tmp_path / "f"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, data


def test_readall_allocates_the_file_once(data_file: tuple[pathlib.Path, bytes], stack: Stack) -> None:
    path, data = data_file
    with uringstack.FileIO(path, "r", stack=stack) as f:
        got, peak = _peak(f.readall)
        assert got == data and type(got) is bytes and f.tell() == SIZE
    assert peak < SIZE * 3 // 2, f"readall() of {SIZE} bytes allocated {peak} at its peak"


def test_read_n_allocates_its_result_once(data_file: tuple[pathlib.Path, bytes], stack: Stack) -> None:
    path, data = data_file
    with uringstack.FileIO(path, "r", stack=stack) as f:
        got, peak = _peak(lambda: f.read(SIZE))
        assert got == data and type(got) is bytes and f.tell() == SIZE
    assert peak < SIZE * 3 // 2, f"read({SIZE}) allocated {peak} at its peak"


def test_buffered_read_all_through_open(data_file: tuple[pathlib.Path, bytes], stack: Stack) -> None:
    path, data = data_file
    with uringstack.open(path, "rb", stack=stack) as f:
        # (nothing buffered yet: io.BufferedReader returns raw.readall()'s object as is)
        got, peak = _peak(f.read)
        assert got == data
    assert peak < SIZE * 3 // 2


def test_short_reads_positions_and_independent_results(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdefgh")
    zero = bytes(1)
    with uringstack.FileIO(path, "r+", stack=stack) as f:
        assert f.read(0) == b"" and f.tell() == 0
        assert f.read(1) == b"a" and f.tell() == 1
        assert zero == b"\0" and bytes(1) == b"\0"  # no shared small object was written into
        first = f.read(3)
        assert first == b"bcd" and f.tell() == 4
        assert f.read(100) == b"efgh" and f.tell() == 8  # short: the bytes read, nothing more
        assert f.read(100) == b"" and f.readall() == b""
        f.seek(1)
        again = f.read(3)
        assert again == first and again is not first and hash(again) == hash(b"bcd")
        f.seek(2)
        assert f.readall() == b"cdefgh" and f.tell() == 8
        # a file longer than fstat said when readall started: read until a read returns 0
        f.seek(0)
        os.pwrite(f.fileno(), b"ijkl", 8)
        assert f.readall() == b"abcdefghijkl" and f.tell() == 12


def test_readall_of_an_empty_then_grown_file(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    with uringstack.FileIO(path, "r", stack=stack) as f:
        assert f.readall() == b""
        with open(path, "ab") as w:
            w.write(b"xy" * 70000)
        assert f.readall() == b"xy" * 70000 and f.tell() == 140000


@pytest.mark.parametrize("buffering", [0, -1])
def test_direct_read_into_the_returned_bytes(tmp_path: pathlib.Path, stack: Stack, buffering: int) -> None:
    """Under O_DIRECT (read-ahead on with buffering) the aligned reads are copied into the bytes returned."""
    path = tmp_path / "f"
    data = os.urandom(3 * 4096 + 123)
    path.write_bytes(data)
    f: Any = uringstack.open(path, "rb", buffering=buffering, direct=True, stack=stack)
    with f:
        raw = f if buffering == 0 else f.raw
        assert raw.handle is not None and raw.handle.direct
        assert raw.read(5000) == data[:5000] and raw.tell() == 5000
        assert raw.readall() == data[5000:] and raw.tell() == len(data)
        f.seek(0)
        assert f.read() == data
