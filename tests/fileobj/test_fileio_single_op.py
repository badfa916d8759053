"""Buffered ``uringstack.FileIO`` reads and writes: one single op of the handle per call.

``readinto``/``write`` pin the caller's memory once and hand it to the
handle's single-op path (``FileHandle._one_pinned``, the
backend's ``run_one``; a ``readinto`` on io_uring reads at the file position
instead, ``FileHandle._read_here``, the backend's ``read_cached`` or ``read_here``): no
batch, no prepared read to keep in step with the caller's buffer, and no
export of the caller's object outlives the call.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest

import uringstack
from uringstack.stack import Stack


def _spy_one(f: uringstack.FileIO, monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int, int]]:
    handle: Any = f.handle
    assert handle is not None
    real = handle._one
    calls: list[tuple[bool, int, int]] = []

    def spy(write: bool, pin: Any, buf: Any, offset: int) -> Any:
        calls.append((write, len(pin), offset))
        return real(write, pin, buf, offset)

    monkeypatch.setattr(handle, "_one", spy)
    # the Python step, whose calls this spies on (the C page-cache step, which makes no
    # Python call to spy on, is tested in test_fastio_read.py)
    f._disarm_cached_reads()
    here = handle._here
    if here is not None:
        cached = handle._cached

        def spy_here(pin: Any, buf: Any, got: int) -> Any:
            if not got:  # (the rest of a partly cached read is the same call's)
                calls.append((False, len(pin), os.lseek(f.fileno(), 0, os.SEEK_CUR)))  # where the kernel reads
            return here(pin, buf, got)

        monkeypatch.setattr(handle, "_here", spy_here)
        if cached is not None:

            def spy_cached(buf: Any, want: int) -> Any:
                at = os.lseek(f.fileno(), 0, os.SEEK_CUR)
                res = cached(buf, want)
                if res is not None:  # (None: the ring reads it, spy_here records it)
                    calls.append((False, want, at))
                return res

            monkeypatch.setattr(handle, "_cached", spy_cached)
    return calls


def test_each_read_and_write_is_one_single_op(
    tmp_path: pathlib.Path, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    with uringstack.FileIO(path, "r+", stack=stack) as f:
        calls = _spy_one(f, monkeypatch)
        buf = bytearray(64 * 1024)
        got = bytearray()
        while n := f.readinto(buf):
            got += buf[:n]
        assert got == data
        reads = len(data) // len(buf)
        assert calls[:reads] == [(False, len(buf), i * len(buf)) for i in range(reads)]
        assert calls[reads:] == [(False, len(buf), len(data))]  # the read at the end of file
        del buf[10:]  # no export of the caller's object outlives a call
        assert f.readinto(buf) == 0
        calls.clear()
        f.seek(4096)
        assert f.read(100) == data[4096:4196]
        assert f.write(b"xyz") == 3 and f.tell() == 4199
        assert f.write(bytearray(b"ace")) == 3
        assert calls[:2] == [(False, 100, 4096), (True, 3, 4196)]
    assert path.read_bytes()[4196:4202] == b"xyzace"
