"""Buffers whose items are wider than a byte are moved and counted in bytes by every call.

``len()`` of an ``array('d')``, a ctypes array or a ``memoryview.cast('Q')`` counts
items, not bytes: a handle that took it for the byte length placed the second
buffer of a ``readv_into``/``writev_from`` 4 or 8 times too early (over the first
one's bytes), and took a transfer that stopped short for a complete one.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from uringstack.ring.pending import CompletedPending
from uringstack.stack import open_stack
from uringstack.stack.handle import FileHandle

DATA = bytes(range(256)) * 16  # 4 KiB


def _wide_buffers() -> list[Any]:
    """One buffer of each wide-item kind, 32 bytes each."""
    return [
        memoryview(bytearray(32)).cast("Q"),
        array.array("i", bytes(32)),
        array.array("d", bytes(32)),
        (ctypes.c_uint64 * 4)(),
    ]


def _raw(buf: Any) -> bytes:
    return bytes(memoryview(buf).cast("B"))


def _filled(buf: Any, byte: int) -> Any:
    memoryview(buf).cast("B")[:] = bytes([byte]) * memoryview(buf).nbytes
    return buf


def test_readv_into_places_each_buffer_after_the_bytes_of_the_one_before(handle: FileHandle) -> None:
    bufs = _wide_buffers()
    assert handle.readv_into(bufs, 8) == 4 * 32
    assert b"".join(map(_raw, bufs)) == DATA[8 : 8 + 4 * 32]


def test_writev_from_places_each_buffer_after_the_bytes_of_the_one_before(handle: FileHandle) -> None:
    bufs = [_filled(b, 0x41 + i) for i, b in enumerate(_wide_buffers())]
    assert handle.writev_from(bufs, 8) == 4 * 32
    want = DATA[:8] + b"A" * 32 + b"B" * 32 + b"C" * 32 + b"D" * 32 + DATA[8 + 128 :]
    assert os.pread(handle.fd, len(DATA) + 1, 0) == want


def test_readv_into_stops_at_the_end_of_file_inside_a_wide_buffer(handle: FileHandle) -> None:
    bufs = _wide_buffers()
    assert handle.readv_into(bufs, len(DATA) - 40) == 40  # 32 in the first, 8 in the second
    assert _raw(bufs[0]) + _raw(bufs[1])[:8] == DATA[-40:]


def test_every_call_returns_bytes_moved(handle: FileHandle) -> None:
    for buf in _wide_buffers():
        assert handle.read_into(buf, 64) == 32
        assert _raw(buf) == DATA[64:96]
        assert handle.read_many([0, 96], [buf, bytearray(4)]) == [32, 4]
        assert handle.write_from(buf, 128) == 32
        assert handle.write_many([160], [buf]) == [32]
        assert handle.write_durable(buf, 192) == 32
        with handle.prepare_reads([buf]) as p:
            assert p.run([0]) == [32]


def _capped(real: Callable[..., int], vectored: bool) -> Callable[..., int]:
    """*real* (``os.preadv``, ``os.pwritev`` or ``os.pwrite``) moving at most 8 bytes per call."""

    def call(fd: int, data: Any, offset: int, *flags: int) -> int:
        if vectored:
            return real(fd, [memoryview(data[0]).cast("B")[:8]], offset, *flags)
        return real(fd, memoryview(data).cast("B")[:8], offset)

    return call


@pytest.fixture
def short_handle(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileHandle]:
    """A handle on the fallback whose reads and writes move 8 bytes at most per call: as many
    bytes as an array('i') of 8 items has items, a quarter of its 32 bytes."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    monkeypatch.setattr(os, "preadv", _capped(os.preadv, True))
    monkeypatch.setattr(os, "pwritev", _capped(os.pwritev, True))
    monkeypatch.setattr(os, "pwrite", _capped(os.pwrite, False))  # (waited writes: write_inline)
    with open_stack(overrides={"core.backend": "fallback"}) as stack, stack.open(path) as h:
        yield h


def test_a_short_read_into_a_wide_buffer_is_completed(short_handle: FileHandle) -> None:
    buf = array.array("i", bytes(32))
    assert short_handle.read_many([16], [buf]) == [32]
    assert buf.tobytes() == DATA[16:48]
    with short_handle.prepare_reads([buf]) as p:
        assert p.run([64]) == [32]
    assert buf.tobytes() == DATA[64:96]


def test_a_short_write_from_a_wide_buffer_is_completed(short_handle: FileHandle) -> None:
    buf = _filled(array.array("i", bytes(32)), 0x5A)
    assert short_handle.io.start_rw(True, [16], [buf], wait=True).wait() == [32]  # the inline loop
    assert short_handle.write_many([16], [buf]) == [32]
    with short_handle.prepare_writes([buf]) as p:
        assert p.run([100]) == [32]
    data = os.pread(short_handle.fd, len(DATA), 0)
    assert data[16:48] == data[100:132] == b"Z" * 32


def test_no_flush_runs_after_a_short_durable_write_of_a_wide_buffer(short_handle: FileHandle) -> None:
    # the backend's contract, as a linked io_uring flush: not run after a short write
    buf = _filled(array.array("i", bytes(32)), 0x5A)
    assert short_handle.io.start_write_durable(0, buf, "fdatasync", wait=True).wait() == [8, -errno.ECANCELED]
    assert short_handle.write_durable(buf, 0) == 32
    assert os.pread(short_handle.fd, 32, 0) == b"Z" * 32


def test_a_short_write_the_backend_reports_is_completed(handle: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    # as a ring reports one: 8 bytes of a 32-byte array('i') of 8 items; the handle writes the rest
    real = handle.io.start_rw
    first = [True]

    def short_once(write: bool, offsets: Any, buffers: Any, *, wait: bool = False) -> Any:
        if first[0] and write:
            first[0] = False
            os.pwrite(handle.fd, memoryview(buffers[0]).cast("B")[:8], offsets[0])
            return CompletedPending([8])
        return real(write, offsets, buffers, wait=wait)

    monkeypatch.setattr(handle.io, "start_rw", short_once)
    buf = _filled(array.array("i", bytes(32)), 0x5A)
    assert handle.write_many([16], [buf]) == [32]
    assert os.pread(handle.fd, 32, 16) == b"Z" * 32


def test_readv_into_counts_nothing_after_a_short_buffer(handle: FileHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 bytes into a 32-byte array('i') of 8 items is short: a later buffer's bytes (the file
    # grown meanwhile) follow no byte of the file, so the total ends there
    monkeypatch.setattr(handle, "read_many", lambda offsets, buffers: [8, 32])
    assert handle.readv_into([array.array("i", bytes(32)), bytearray(32)], 0) == 8
