"""``FileHandle.writev_from`` where the backend writes waited writes inline: one ``pwritev(2)``.

The held ``bytes`` of a ``uringstack.open(..., "wb")`` file (16 of 64 KiB per
MiB) reach the kernel through ``writev_from``; on io_uring, where the kernel
would punt a buffered write (``UringFileIO.writes_inline``), they are one
``pwritev(2)`` (``UringFileIO.write_gathered``) instead of a ``pwrite(2)`` per
buffer.  All of it is written or it raises, as the batch path.
"""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack.errors import RingClosedError, UringIOError
from uringstack.ring import io_backend
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO

from .conftest import BACKENDS

PARTS = [bytes([i]) * (1000 + 37 * i) for i in range(1, 9)]
WHOLE = b"".join(PARTS)


@pytest.fixture
def uring_stack() -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS["uring"])
    yield s
    s.close()


def _handle(stack: Stack, path: pathlib.Path, *, inline: bool = True) -> FileHandle:
    h = stack.open(path, create=True)
    assert isinstance(h.io, UringFileIO)
    h.io._inline_writes = inline  # the fact, fixed: both paths of one machine compared
    return h


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Count ``pwritev`` and ``pwrite`` calls made by the backends' inline writes."""
    calls: dict[str, list[Any]] = {"pwritev": [], "pwrite": []}
    real_v, real_1 = os.pwritev, os.pwrite

    def pwritev(fd: int, buffers: Any, offset: int, *rest: Any) -> int:
        calls["pwritev"].append((len(buffers), offset))
        return real_v(fd, buffers, offset, *rest)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        calls["pwrite"].append(offset)
        return real_1(fd, data, offset)

    monkeypatch.setattr(io_backend.os, "pwritev", pwritev)
    monkeypatch.setattr(io_backend.os, "pwrite", pwrite)
    return calls


def _starts(h: FileHandle) -> int:
    tracker: Any = h._inflight
    with tracker._lock:
        n: int = tracker._starts()
    return n


def test_one_pwritev_for_all_of_it(uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    with _handle(uring_stack, path) as h:
        calls = _spy(monkeypatch)
        assert h.writev_from(PARTS, 100) == len(WHOLE)
        assert h.writev_from([bytearray(b"xy"), memoryview(b"z")], 0) == 3
        assert calls == {"pwritev": [(len(PARTS), 100), (2, 0)], "pwrite": []}
        assert _starts(h) == 0
    assert path.read_bytes() == b"xyz" + bytes(97) + WHOLE


def test_where_writes_go_through_the_ring_it_is_a_batch(
    uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    with _handle(uring_stack, path, inline=False) as h:
        calls = _spy(monkeypatch)
        assert h.writev_from(PARTS, 0) == len(WHOLE)
        assert calls == {"pwritev": [], "pwrite": []}  # the ring wrote them
    assert path.read_bytes() == WHOLE


def test_a_hook_or_too_many_buffers_take_the_batch(
    uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion hook hears of each buffer's write; more than IOV_MAX buffers do not fit one call."""
    path = tmp_path / "f"
    with _handle(uring_stack, path) as h:
        calls = _spy(monkeypatch)
        heard: list[list[int]] = []
        monkeypatch.setattr(h.io, "completion_hook", lambda op, ring: lambda batch: heard.append(list(batch.results)))
        assert h.writev_from(PARTS, 0) == len(WHOLE)
        assert heard == [[len(p) for p in PARTS]] and calls["pwritev"] == []
        monkeypatch.setattr(h.io, "completion_hook", None)
        calls["pwrite"].clear()
        many = [b"m"] * (io_backend.IOV_MAX + 1)
        assert h.writev_from(many, len(WHOLE)) == len(many)
        assert calls["pwritev"] == [] and len(calls["pwrite"]) == len(many)
    assert path.read_bytes() == WHOLE + b"m" * len(many)


@pytest.mark.parametrize("cut", [1, 999, 1037, 1038, len(WHOLE) - 1])
def test_a_short_gather_write_is_completed(
    cut: int, uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may write less than asked (a signal, MAX_RW_COUNT): the rest is written
    from where it stopped, inside and at the edges of a buffer."""
    path = tmp_path / "f"
    real = os.pwritev

    def short(fd: int, buffers: Any, offset: int) -> int:
        return os.pwrite(fd, b"".join(bytes(b) for b in buffers)[:cut], offset)

    with _handle(uring_stack, path) as h:
        monkeypatch.setattr(io_backend.os, "pwritev", short)
        assert h.writev_from(PARTS, 10) == len(WHOLE)
        monkeypatch.setattr(io_backend.os, "pwritev", real)
    assert path.read_bytes() == bytes(10) + WHOLE


def test_a_failed_gather_write_raises_at_its_offset(
    uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, buffers: Any, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with _handle(uring_stack, tmp_path / "f") as h:
        monkeypatch.setattr(io_backend.os, "pwritev", full)
        with pytest.raises(UringIOError) as info:
            h.writev_from(PARTS, 4096)
        assert info.value.errno == errno.ENOSPC and "at offset 4096" in str(info.value)
        assert _starts(h) == 0


def test_closed_and_closing_handles_refuse(uring_stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    h = _handle(uring_stack, path)
    tracker: Any = h._inflight
    tracker._closed = True  # a close that began: new starts are refused, nothing written
    try:
        with pytest.raises(RingClosedError):
            h.writev_from(PARTS, 0)
    finally:
        tracker._closed = False
    assert _starts(h) == 0
    h.close()
    with pytest.raises(RingClosedError):
        h.writev_from(PARTS, 0)
    with pytest.raises(RingClosedError):  # the backend's own check (its number may be another file's)
        h.io.write_gathered(PARTS, 0)  # type: ignore[attr-defined]
    assert path.read_bytes() == b""
