"""An asyncio call from a second event loop on a ring another loop serves: refused before it starts.

One ring serves one running event loop (docs/api.md, asyncio).  A call that
started its I/O and only then found the ring was another loop's raised
``RuntimeError`` with the I/O still in flight: a prepared read landed in its
buffer after the caller was told it failed (and may have reused the buffer),
a prepared write or an ``fdatasync_async`` ran although its caller was told
it did not.  Every call must be refused before anything reaches the ring.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import open_plain_uring
from tests.second_loop import FILL, FirstLoop, filled
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

SIZE = 1 << 20


@pytest.fixture
def one_ring() -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0], "core.backend": "auto", "fallback.mode": "auto"}) as s:
        yield s


def _handle(stack: Stack, path: pathlib.Path, direct: bool) -> FileHandle:
    path.write_bytes(b"F" * SIZE)
    return open_plain_uring(stack, path, direct=direct)


def _refused_untouched(h: FileHandle, path: pathlib.Path, call: Callable[[], Awaitable[Any]], buf: Any) -> None:
    first = FirstLoop(h)
    try:
        submitted = h.ring.counters()["submitted"]  # type: ignore[union-attr]
        with pytest.raises(RuntimeError, match="another running event loop"):
            asyncio.run(asyncio.wait_for(call(), 5))
        time.sleep(0.2)  # an op that did start would have completed by now
        assert h.ring.counters()["submitted"] == submitted  # type: ignore[union-attr]
        if buf is not None:
            assert bytes(buf) == bytes([FILL]) * len(buf), "a refused read moved data into its buffer"
        assert path.read_bytes() == b"F" * SIZE, "a refused write reached the file"
    finally:
        first.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
@pytest.mark.parametrize("write", [False, True], ids=["reads", "writes"])
def test_a_prepared_run_async_from_a_second_loop_starts_nothing(
    one_ring: Stack, tmp_path: pathlib.Path, direct: bool, write: bool
) -> None:
    path = tmp_path / "f"
    with _handle(one_ring, path, direct) as h:
        buf = filled(SIZE)
        with h.prepare_writes([buf]) if write else h.prepare_reads([buf]) as p:
            _refused_untouched(h, path, lambda: p.run_async([0]), None if write else buf)
            assert p.done()
            assert p.run([0]) == [SIZE]  # usable from a thread afterwards


@pytest.mark.timeout(60)
def test_fdatasync_async_from_a_second_loop_is_refused_before_it_is_submitted(
    one_ring: Stack, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "f"
    with _handle(one_ring, path, False) as h:
        _refused_untouched(h, path, h.fdatasync_async, None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
@pytest.mark.parametrize(
    "name", ["read", "read_into_async", "read_many_async", "write", "write_many_async", "lease_read", "lease_write"]
)
def test_every_handle_call_from_a_second_loop_starts_nothing(
    one_ring: Stack, tmp_path: pathlib.Path, direct: bool, name: str
) -> None:
    path = tmp_path / "f"
    with _handle(one_ring, path, direct) as h:
        buf = filled(4096)
        leases = h.lease_buffers(1, 4096) if name.startswith("lease") else []
        for lease in leases:
            lease.view[:] = bytes([FILL]) * 4096
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "read": lambda: h.read(4096, 0),
            "read_into_async": lambda: h.read_into_async(buf, 0),
            "read_many_async": lambda: h.read_many_async([0, 4096], [buf, filled(4096)]),
            "write": lambda: h.write(buf, 0),
            "write_many_async": lambda: h.write_many_async([0], [buf]),
            "lease_read": lambda: h.read_many_async([0], leases),
            "lease_write": lambda: h.write_many_async([0], leases),
        }
        try:
            _refused_untouched(h, path, calls[name], buf if name in ("read_into_async", "read_many_async") else None)
            if name == "lease_read":
                assert bytes(leases[0].view) == bytes([FILL]) * 4096
        finally:
            if leases:
                h.release_buffers(leases)
