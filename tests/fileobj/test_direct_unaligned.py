"""Issue 16, "Bad input": O_DIRECT at sizes and offsets the device cannot take.

``uringstack.open(..., direct=True)`` and ``uringstack.FileIO(..., direct=True)``
take any size at any offset: a read that is not whole blocks is served by an
aligned covering read, a write that is not whole blocks goes through a buffered
descriptor for that call.  Either way every call moves exactly what the
built-in would: the reads are checked against a model of the file, op by op,
and the file against the model at the end.  Nothing may come back short.
"""

from __future__ import annotations

import os
import pathlib
import random
from typing import Any

import pytest

import uringstack
from uringstack.stack import open_stack

from .conftest import BACKENDS

OFFSETS = [0, 1, 511, 512, 513, 4095, 4096, 4097, 8192, 19_999, 20_000, 20_001, 25_000]
SIZES = [0, 1, 511, 512, 513, 4095, 4096, 4097, 8191, 65_536, 131_073]


def _apply_write(model: bytearray, off: int, data: bytes) -> None:
    if off > len(model):
        model.extend(bytes(off - len(model)))  # the hole reads as zeros
    model[off : off + len(data)] = data


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("buffering", [0, -1])
def test_unaligned_direct_io_moves_exactly_what_the_builtin_would(
    tmp_path: pathlib.Path, backend: str, buffering: int
) -> None:
    rnd = random.Random(16)
    path = tmp_path / "f"
    model = bytearray(rnd.randbytes(20_000))
    path.write_bytes(model)
    with open_stack(overrides=BACKENDS[backend]) as stack:
        f: Any = uringstack.open(path, "r+b", buffering=buffering, direct=True, stack=stack)
        with f:
            raw = f if buffering == 0 else f.raw
            assert raw.handle is not None and raw.handle.direct and raw.block_size > 1
            for i in range(400):
                off = rnd.choice([*OFFSETS, rnd.randrange(0, 30_000)])
                size = rnd.choice([*SIZES, rnd.randrange(0, 70_000)])
                f.seek(off)
                if rnd.random() < 0.5:
                    got = f.read(size)
                    want = bytes(model[off : off + size])
                    assert got == want, f"op {i}: read({size}) at {off}: {len(got)} bytes, the file has {len(want)}"
                    moved = len(got)
                else:
                    data = rnd.randbytes(size)
                    assert f.write(data) == size, f"op {i}: write({size}) at {off} reported short"
                    _apply_write(model, off, data)
                    moved = size
                assert f.tell() == off + moved, f"op {i}"
        assert path.read_bytes() == bytes(model)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_unaligned_direct_readinto_and_append(tmp_path: pathlib.Path, backend: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes: not whole 4 KiB blocks
    with open_stack(overrides=BACKENDS[backend]) as stack:
        content = path.read_bytes()
        with uringstack.FileIO(path, "r", direct=True, stack=stack) as raw:
            raw.seek(4093)
            buf = bytearray(5002)
            assert raw.readinto(memoryview(buf)[1:]) == 5001
            assert bytes(buf[1:]) == content[4093:9094] and raw.tell() == 9094
            assert raw.readinto(buf) == 10240 - 9094  # short only where the file ends, as the built-in
            assert bytes(buf[: 10240 - 9094]) == content[9094:]
            assert raw.read(100) == b""  # at the end: empty, not an error
            raw.seek(20_000)
            assert raw.read(4096) == b""  # past it too
        with uringstack.open(path, "ab", direct=True, stack=stack) as f:
            f.write(b"tail" * 3)
            f.write(os.urandom(8192))  # whole blocks, at an offset that is not
        data = path.read_bytes()
        assert len(data) == 10240 + 12 + 8192 and data[10240:10252] == b"tail" * 3
