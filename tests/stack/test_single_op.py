"""``read_into``/``write_from``: one waited op through the backend's single-op path (``run_one``).

On io_uring a read (and a write the kernel would not punt) is one call into
C (``Ring.rw_one``: prepare, submit, bounded wait, reap) with no batch
objects; on the fallback the op runs in the calling thread instead of a
pool thread.  Results, short reads at end of file, errors, the completion
hook and close() waiting for the call are those of the batch path.
"""

from __future__ import annotations

import errno
import os
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack.errors import RingClosedError, UringIOError
from uringstack.plugins.fallback.backend import FallbackFileIO
from uringstack.ring import Ring
from uringstack.stack import Stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO

DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    return path


@pytest.fixture
def handle(stack: Stack, path: pathlib.Path) -> Iterator[FileHandle]:
    with stack.open(path, writable=False) as h:
        yield h


@pytest.fixture
def rw_handle(stack: Stack, path: pathlib.Path) -> Iterator[FileHandle]:
    with stack.open(path) as h:
        yield h


def _spy_rw_one(ring: Ring, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    real = ring.rw_one

    def spy(opcode: int, fd: int, buf: Any, length: int, offset: int, *rest: Any) -> int:
        calls.append((opcode, length, offset))
        return real(opcode, fd, buf, length, offset, *rest)

    monkeypatch.setattr(ring, "rw_one", spy)
    return calls


def test_reads_and_ring_writes_are_one_rw_one_call_each(
    rw_handle: FileHandle, path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = rw_handle
    if not isinstance(h.io, UringFileIO):
        assert h.backend == "fallback"
        return
    assert h.ring is not None
    h.io._inline_writes = False  # the ring's write path, whatever the file system
    calls = _spy_rw_one(h.ring, monkeypatch)
    batches: list[object] = []
    monkeypatch.setattr(h.ring, "submit_columns", lambda *a, **k: batches.append(a))
    buf = bytearray(4096)
    assert h.read_into(buf, 100) == 4096 and buf == DATA[100:4196]
    assert h.write_from(memoryview(b"w" * 10), 16384) == 10
    assert len(calls) == 2 and calls[0][1:] == (4096, 100) and calls[1][1:] == (10, 16384)
    assert batches == []  # no batch was built for either
    assert path.read_bytes() == DATA + b"w" * 10


def test_short_read_at_eof_error_and_closed_handle(handle: FileHandle) -> None:
    buf = bytearray(4096)
    assert handle.read_into(buf, len(DATA) - 100) == 100 and buf[:100] == DATA[-100:]
    assert handle.read_into(buf, len(DATA) + 5) == 0
    with pytest.raises(UringIOError) as info:
        handle.write_from(b"x", 0)  # opened read-only
    assert info.value.errno == errno.EBADF
    handle.close()
    with pytest.raises(RingClosedError):
        handle.read_into(buf, 0)


def test_the_fallback_runs_a_single_op_in_the_calling_thread(
    rw_handle: FileHandle, path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pool hand-off for one waited read or write (the caller waits for it anyway)."""
    h = rw_handle
    if not isinstance(h.io, FallbackFileIO):
        return
    threads: list[int] = []
    real = os.preadv

    def preadv(fd: int, buffers: Any, offset: int) -> int:
        threads.append(threading.get_ident())
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    buf = bytearray(1000)
    assert h.read_into(buf, 10) == 1000 and buf == DATA[10:1010]
    assert threads == [threading.get_ident()]
    assert h.write_from(b"abc", 0) == 3
    assert h.read_many([0], [bytearray(3)]) == [3]  # a batch still goes to the pool
    assert threads[-1] != threading.get_ident()
    assert path.read_bytes()[:3] == b"abc"


def test_close_waits_for_a_single_op_in_another_thread(rw_handle: FileHandle) -> None:
    """The op is counted by the handle's tracker while it runs: close() returns only after it."""
    h = rw_handle
    one = h._one
    assert one is not None
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def slow(*args: Any) -> int | None:
        entered.set()
        release.wait(10)
        res = one(*args)
        order.append("op done")
        return res

    h._one = slow
    results: list[int] = []
    reader = threading.Thread(target=lambda: results.append(h.read_into(bytearray(10), 0)))
    reader.start()
    assert entered.wait(10)
    closer = threading.Thread(target=lambda: (h.close(), order.append("closed")))
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() returned while a read_into was running"
    release.set()
    reader.join(10)
    closer.join(10)
    assert order == ["op done", "closed"] and results == [10]
