"""The io_uring backend's reused columns for ``write_durable`` (its hot path: a log's every flush).

Each durable write reuses a prepared set of columns; only address, length and
offset are rewritten.  A set whose batch is still in flight must never be
reused (the kernel may not have read the SQEs' source yet, and the ring
refuses it), and a handle that moved to a fixed-file slot after the set was
built must be addressed by that slot.
"""

from __future__ import annotations

import mmap
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack.ring import Batch
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op, SqeFlag
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO


@pytest.fixture
def stack() -> Iterator[Stack]:
    # fixedbuf off: the test registers its own file table (the plugin would hold the only one)
    s = open_stack(overrides={"core.cores": [0], "core.backend": "uring", "fixedbuf.mode": "off"})
    yield s
    s.close()


@pytest.fixture
def handle(stack: Stack, tmp_path: pathlib.Path) -> Iterator[FileHandle]:
    with stack.open(tmp_path / "f", create=True) as h:
        assert h.backend == "uring"
        yield h


def _uring(handle: FileHandle) -> UringFileIO:
    io = handle.io
    assert isinstance(io, UringFileIO)
    return io


@pytest.mark.parametrize("sync", ["dsync", "fdatasync"])
def test_overlapping_durable_writes_get_their_own_columns(handle: FileHandle, sync: Any) -> None:
    io = _uring(handle)
    handle.write_durable(b"x" * 4096, 0, sync=sync)  # leaves one idle set in the cache
    a, b = mmap.mmap(-1, 4096), mmap.mmap(-1, 4096)
    a[:] = b"a" * 4096
    b[:] = b"b" * 4096
    first = io.start_write_durable(0, a, sync)  # not reaped: its set stays in flight
    second = io.start_write_durable(4096, b, sync)
    assert first.batch._arrays is not second.batch._arrays, "an in-flight column set was reused"
    assert first.wait()[0] == 4096 and second.wait()[0] == 4096
    with open(handle.path, "rb") as f:
        assert f.read() == b"a" * 4096 + b"b" * 4096
    # both sets are idle again: the next writes reuse them instead of building new ones
    cached = {id(dc.cols) for dc in io._durable[sync]}
    handle.write_durable(a, 0, sync=sync)
    assert {id(dc.cols) for dc in io._durable[sync]} == cached


@pytest.mark.parametrize("sync", ["dsync", "fdatasync"])
def test_durable_write_follows_a_new_fixed_file_slot(
    handle: FileHandle, sync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = _uring(handle)
    ring = io.ring
    seen: list[tuple[list[int], list[int], list[int]]] = []
    original = ring.submit_columns

    def submit_columns(cols: BatchColumns, n: int | None = None, keep: Any = (), *, wait: bool = False) -> Batch:
        k = cols.n if n is None else n
        cols.n = k
        seen.append((cols.get("opcodes"), cols.get("fds"), cols.get("sqe_flags")))
        return original(cols, n, keep, wait=wait)

    monkeypatch.setattr(ring, "submit_columns", submit_columns)
    handle.write_durable(b"1" * 4096, 0, sync=sync)  # columns built for the plain fd
    ring.register_files([io.fd])
    try:
        handle.fixed_index = 0
        handle.write_durable(b"2" * 4096, 4096, sync=sync)
        handle.fixed_index = None
        handle.write_durable(b"3" * 4096, 8192, sync=sync)
    finally:
        ring.unregister_files()
    fixed = int(SqeFlag.FIXED_FILE)
    (_, fds0, flags0), (ops1, fds1, flags1), (_, fds2, flags2) = seen
    assert fds0 == [io.fd] * len(fds0) and not any(f & fixed for f in flags0)
    assert fds1 == [0] * len(fds1), f"a fixed-file write addressed fd {fds1}, not slot 0"
    assert all(f & fixed for f in flags1), f"sqe flags {flags1} lack IOSQE_FIXED_FILE"
    assert fds2 == [io.fd] * len(fds2) and not any(f & fixed for f in flags2)
    if sync == "fdatasync":  # the link survives the refill
        assert ops1 == [Op.WRITE, Op.FSYNC] and flags1[0] & int(SqeFlag.IO_LINK)
    with open(handle.path, "rb") as f:
        assert f.read() == b"1" * 4096 + b"2" * 4096 + b"3" * 4096
    assert os.path.getsize(handle.path) == 3 * 4096
