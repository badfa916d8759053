"""The iopoll FileIO runs the core's batch code on its ring: prepared batches, cached columns, polled pendings.

On this host no device polls, so the "IOPOLL ring" here is a plain ring: what is
checked is the wiring (which ring, which pending, what was prepared), the data
read, and the checks before submission; tests/nvme runs the same on a polled ring.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from uringstack.errors import AlignmentError
from uringstack.plugins.iopoll.backend import IopollFileIO, IopollPending, WriteThenSync
from uringstack.ring import Ring
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.io_backend import prepare_rw
from uringstack.ring.native import ffi
from uringstack.stack.uring_backend import UringPrepared
from uringstack.types import Target
from uringstack.wal.faults import RecordingRing

BS = 4096


@pytest.fixture
def iopoll_io(tmp_path: Path) -> Iterator[tuple[IopollFileIO, Ring, Ring]]:
    path = tmp_path / "data"
    path.write_bytes(b"".join(bytes([i]) * BS for i in range(16)))
    ring, storage = Ring(entries=16), Ring(entries=16)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    target = Target(path=str(path), kind="file", direct=True, writable=True)
    worker = SimpleNamespace(completion_hook=None)
    io = IopollFileIO(ring, storage, fd, target, BS, worker)  # type: ignore[arg-type]
    try:
        yield io, ring, storage
    finally:
        io.close()
        ring.close()
        storage.close()


def test_prepared_reads_run_on_the_iopoll_ring_and_return_polled_pendings(
    iopoll_io: tuple[IopollFileIO, Ring, Ring],
) -> None:
    io, ring, _ = iopoll_io
    bufs = [aligned_buffer(BS) for _ in range(3)]
    prep = prepare_rw(io, False, bufs)
    assert isinstance(prep, UringPrepared)  # columns built once, not start_rw per batch
    for offsets in ([0, 5 * BS, 15 * BS], [2 * BS, BS, 7 * BS]):
        pending = prep.start(offsets)
        assert isinstance(pending, IopollPending) and pending.ring is ring
        assert pending.wait() == [BS] * 3
        assert [b[0] for b in bufs] == [off // BS for off in offsets]
    with pytest.raises(AlignmentError):
        prep.start([0, 100, BS])


def test_start_rw_and_durable_writes_keep_their_rings(iopoll_io: tuple[IopollFileIO, Ring, Ring]) -> None:
    io, ring, storage = iopoll_io
    buf = aligned_buffer(BS)
    pending = io.start_rw(False, [3 * BS], [buf])
    assert isinstance(pending, IopollPending) and pending.ring is ring
    assert pending.wait() == [BS] and buf[0] == 3
    with pytest.raises(AlignmentError):
        io.start_rw(False, [1], [buf])
    durable = io.start_write_durable(0, buf, "fdatasync")
    assert isinstance(durable, WriteThenSync)
    assert durable.wait() == [BS, 0]  # the write on the IOPOLL ring, then the flush on the storage ring
    dsync = io.start_write_durable(BS, buf, "dsync")
    assert dsync.ring is storage and dsync.wait() == [BS]  # type: ignore[union-attr]


def test_single_waited_ops_take_rw_one_on_the_iopoll_ring(
    iopoll_io: tuple[IopollFileIO, Ring, Ring], monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_into/write_from (run_one) and a one-buffer prepared run: one Ring.rw_one call, no batch
    (us_rw_one polls for the op on a real IOPOLL ring: tests/nvme/test_iopoll_single_op.py)."""
    io, ring, _ = iopoll_io
    calls: list[int] = []
    real = ring.rw_one

    def counted(*args: Any) -> int:
        calls.append(args[4])  # the offset
        return real(*args)

    def no_batch(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("a single waited op went through a batch")

    real_bind = ring.bind_rw_one

    def counted_bind(*args: Any) -> Callable[[int], int]:
        bound = real_bind(*args)

        def one(offset: int) -> int:
            calls.append(offset)
            return bound(offset)

        return one

    monkeypatch.setattr(ring, "rw_one", counted)
    monkeypatch.setattr(ring, "bind_rw_one", counted_bind)  # a prepared buffer's pre-bound rw_one
    monkeypatch.setattr(ring, "submit_columns", no_batch)
    buf = aligned_buffer(BS)
    pin = ffi.from_buffer(buf)
    assert io.run_one(False, pin, buf, 9 * BS) == BS
    assert buf[0] == 9
    prep = prepare_rw(io, False, [buf])
    assert prep.start([3 * BS], wait=True).wait() == [BS]
    assert buf[0] == 3
    assert calls == [9 * BS, 3 * BS]


def test_a_durable_writes_flush_error_and_a_failed_write_reach_the_caller(
    iopoll_io: tuple[IopollFileIO, Ring, Ring],
) -> None:
    """The two durability steps of a durable write across the rings (write polled, then a
    flush on the storage ring): a flush that fails reports its error, never 0; a write that
    fails is never followed by a flush (-ECANCELED, as a broken link), so nothing reports
    data durable that was not written."""
    io, ring, storage = iopoll_io
    buf = aligned_buffer(BS)
    flushes = RecordingRing({("FSYNC", 0): -errno.EIO}).install(storage)
    try:
        assert io.start_write_durable(0, buf, "fdatasync").wait() == [BS, -errno.EIO]
    finally:
        flushes.remove()
    writes = RecordingRing({("WRITE", 0): -errno.EIO}).install(ring)
    flushes = RecordingRing().install(storage)
    try:
        assert io.start_write_durable(0, buf, "fdatasync").wait() == [-errno.EIO, -errno.ECANCELED]
        assert flushes.submissions == []
    finally:
        writes.remove()
        flushes.remove()
