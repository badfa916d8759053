"""A leased RegisteredBuffer is usable as bytes without knowing the pool's internals."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack.ring.buffers import RegisteredBuffer
from uringstack.stack import Stack, open_stack


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = open_stack(overrides={"core.cores": [0], "fixedbuf.mode": "on", "fixedbuf.count": 2,
                              "fixedbuf.buffer_size": 8192, "sqpoll.mode": "off"})  # fmt: skip
    yield s
    s.close()


def test_lease_reads_and_writes_like_bytes(stack: Stack, tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_bytes(b"hello world" + b"\0" * 4085)
    with stack.open(tmp_path / "f") as h:
        [lease] = h.lease_buffers(1, 4096)
        assert isinstance(lease, RegisteredBuffer)
        assert h.read_into(lease, 0) == 4096
        assert bytes(lease[:11]) == b"hello world"
        assert bytes(lease)[:5] == b"hello"
        assert isinstance(lease.view, memoryview) and not lease.view.readonly
        lease[0:5] = b"HELLO"
        assert h.write_from(lease, 0) == 4096
        h.release_buffers([lease])
    assert (tmp_path / "f").read_bytes()[:11] == b"HELLO world"


def test_lease_index_must_be_a_slice(stack: Stack) -> None:
    pool = stack.workers[0].buffers.get("fixedbuf")
    assert pool is not None
    lease = pool.lease()
    index: Any = 0  # an int, not a slice: what the type hints forbid
    try:
        with pytest.raises(TypeError, match=r"use lease\.view"):
            lease[index]
    finally:
        pool.release(lease)


def test_buffer_protocol_of_a_lease(stack: Stack) -> None:
    """``__buffer__`` (what 3.12's ``memoryview(lease)`` calls) gives the lease's writable memory.

    Called directly, so it runs on 3.11 too: the dispatch from ``memoryview()``
    is CPython's; what the method hands back is ours."""
    pool = stack.workers[0].buffers.get("fixedbuf")
    assert pool is not None
    lease = pool.lease()
    try:
        view = lease.__buffer__(0)
        assert isinstance(view, memoryview) and not view.readonly
        assert view.nbytes == lease.size
        view[:3] = b"abc"
        assert bytes(lease[:3]) == b"abc"
        lease.__release_buffer__(view)
        if sys.version_info >= (3, 12):
            assert memoryview(lease).nbytes == lease.size
    finally:
        pool.release(lease)
