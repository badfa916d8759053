"""A registered-buffer lease given back with ``release_buffers`` can no longer move data.

The built-in pool hands out the same object for a buffer every time it leases
it, and ``lease_buffers`` returned that object: a reference kept past
``release_buffers`` was the next lease of the same memory.  I/O on it went
through (READ_FIXED into another caller's buffer), and releasing it again gave
the other caller's lease back to the pool, which could then lease that memory
a third time.  Now every lease is a fresh object, retired when released: its
I/O is refused before anything is submitted, its ``view`` is released, and a
second release is refused.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.ring.buffers import RegisteredBuffer
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

BS = 4096
DATA = b"F" * (4 * BS)


@pytest.fixture
def handle(tmp_path: pathlib.Path) -> Iterator[FileHandle]:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    overrides = {"core.backend": "uring", "core.cores": [0], "fixedbuf.mode": "on", "fixedbuf.count": 4,
                 "fixedbuf.buffer_size": BS}  # fmt: skip
    stack: Stack = open_stack(overrides=overrides)
    try:
        with stack.open(path) as h:
            yield h
    finally:
        stack.close()


def _registered(h: FileHandle, count: int) -> list[Any]:
    leases = h.lease_buffers(count, BS)
    if not all(isinstance(b, RegisteredBuffer) for b in leases):
        h.release_buffers(leases)
        skip_without("fixedbuf registered no buffers (RLIMIT_MEMLOCK too low)")
    return leases


def _calls(h: FileHandle, lease: Any) -> dict[str, Callable[[], object]]:
    return {
        "read_into": lambda: h.read_into(lease, 0),
        "write_from": lambda: h.write_from(lease, 0),
        "read_many": lambda: h.read_many([0], [lease]),
        "write_many": lambda: h.write_many([0], [lease]),
        "start_read_many": lambda: h.start_read_many([0], [lease]).wait(),
        "readv_into": lambda: h.readv_into([lease], 0),
        "prepare_reads": lambda: h.prepare_reads([lease]).run([0]),
        "read_into_async": lambda: asyncio.run(h.read_into_async(lease, 0)),
        "read_many_async": lambda: asyncio.run(h.read_many_async([0], [lease])),
        "write_many_async": lambda: asyncio.run(h.write_many_async([0], [lease])),
    }


def test_io_on_a_released_lease_is_refused_and_the_next_lease_keeps_its_bytes(handle: FileHandle) -> None:
    names = list(_calls(handle, None))
    for name in names:
        [old] = _registered(handle, 1)
        handle.release_buffers([old])
        [new] = _registered(handle, 1)  # the same pool memory (the pool has 4, one is free now)
        new.view[:] = b"N" * BS
        with pytest.raises(ValueError, match="used after release_buffers gave it back"):
            _calls(handle, old)[name]()
        assert bytes(new) == b"N" * BS, f"{name} moved data through a released lease"
        assert os.pread(handle.fd, len(DATA) + 1, 0) == DATA, f"{name} wrote from a released lease"
        handle.release_buffers([new])


def test_a_released_lease_is_released_once(handle: FileHandle) -> None:
    pool = handle.worker.buffers.for_ring(handle.ring)
    assert pool is not None
    [old] = _registered(handle, 1)
    handle.release_buffers([old])
    [new] = _registered(handle, 1)
    free = pool.available()
    with pytest.raises(ValueError, match="released already"):
        handle.release_buffers([old])  # it was the other lease's buffer that went back
    assert pool.available() == free
    with pytest.raises(ValueError, match="given twice"):
        handle.release_buffers([new, new])
    assert pool.available() == free
    handle.release_buffers([new])
    assert pool.available() == free + 1


def test_a_released_lease_has_no_memory_left(handle: FileHandle) -> None:
    [lease] = _registered(handle, 1)
    assert not lease.released
    handle.release_buffers([lease])
    assert lease.released
    with pytest.raises(ValueError, match="released memoryview"):
        bytes(lease)


def test_a_lease_an_open_prepared_io_holds_is_not_released(handle: FileHandle) -> None:
    # it could start again on memory the pool leased out since
    leases = _registered(handle, 2)
    reads = handle.prepare_reads(leases[:1])
    with pytest.raises(ValueError, match="held by an open prepared I/O"):
        handle.release_buffers(leases)
    assert not any(lease.released for lease in leases)  # nothing released: all or nothing
    reads.close()
    handle.release_buffers(leases)


def test_a_release_racing_another_releases_all_or_nothing(handle: FileHandle, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:  # fmt: skip
    # A releases x and is held between its checks and its releases; B releases [y, x]
    # meanwhile: B must raise with y still leased (before, B's checks passed, B released
    # both, and A then failed half-way)
    x, y = _registered(handle, 2)
    inside, go_on = threading.Event(), threading.Event()
    real = handle._check_releasable

    def slow_checks(buffers: Any, pool: Any) -> None:
        real(buffers, pool)
        if threading.current_thread().name == "A":
            inside.set()
            go_on.wait(5)

    monkeypatch.setattr(handle, "_check_releasable", slow_checks)
    a = threading.Thread(target=handle.release_buffers, args=([x],), name="A", daemon=True)
    a.start()
    assert inside.wait(5)
    outcome: list[BaseException] = []

    def release_both() -> None:
        try:
            handle.release_buffers([y, x])
        except ValueError as exc:
            outcome.append(exc)

    b = threading.Thread(target=release_both, name="B", daemon=True)
    b.start()
    b.join(0.2)  # B waits for A's release to end (it used to run its checks meanwhile)
    go_on.set()
    a.join(5)
    b.join(5)
    assert not a.is_alive() and not b.is_alive()
    assert len(outcome) == 1 and "released already" in str(outcome[0])
    assert x.released and not y.released
    handle.release_buffers([y])


def test_a_durable_write_takes_a_registered_lease(handle: FileHandle) -> None:
    # it raised "a bytes-like object is required, not 'RegisteredBuffer'" on io_uring
    [lease] = _registered(handle, 1)
    lease.view[:] = b"D" * BS
    assert handle.write_durable(lease, 0) == BS
    assert handle.write_durable(lease, BS, sync="dsync") == BS
    assert handle.bind_write_durable()(lease, 2 * BS) == BS
    assert os.pread(handle.fd, 3 * BS, 0) == b"D" * (3 * BS)
    handle.release_buffers([lease])
    with pytest.raises(ValueError, match="used after release_buffers gave it back"):
        handle.write_durable(lease, 0)


def test_leases_released_after_their_stack_closed_are_retired_quietly(tmp_path: pathlib.Path) -> None:
    # a cleanup that releases after the stack closed: the pool is gone with it, nothing to give back
    path = tmp_path / "f"
    path.write_bytes(DATA)
    stack = open_stack(overrides={"core.backend": "uring", "core.cores": [0], "fixedbuf.mode": "on",
                                  "fixedbuf.count": 4, "fixedbuf.buffer_size": BS})  # fmt: skip
    h = stack.open(path)
    leases = _registered(h, 2)
    stack.close()
    h.release_buffers(leases)
    assert all(lease.released for lease in leases)
    with pytest.raises(ValueError, match="released already"):
        h.release_buffers(leases)
