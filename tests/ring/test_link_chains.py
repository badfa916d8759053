"""A link chain reaches the kernel in one submission, or it is no chain (session 28).

The kernel ends a chain at the end of each io_uring_enter. When the CQ was
nearly full (a ring crowded with reads in flight) or the SQ full, the batch
submitter sent what it had queued in the middle of a chain: the write went
alone and its linked fsync (an NVMe Flush, on the passthrough ring) came in a
later submission, free to run before the write completed, and a durable
write returned before its data was flushed. A write that fails shows it: its
linked fsync must be cancelled (-ECANCELED), not run.
"""

from __future__ import annotations

import errno
import os
import pathlib
import threading

import pytest

from uringstack.errors import UringIOError
from uringstack.ring import Ring
from uringstack.ring.flags import FSYNC_DATASYNC, Op, SqeFlag
from uringstack.ring.native import ffi
from uringstack.ring.params import RingParams


def _crowd(ring: Ring, room_left: int) -> tuple[list[int], list[object]]:
    """Reads of idle pipes in flight until the CQ has *room_left* places; the pipes' write ends."""
    cap = ring.cq_entries - 2  # (US_CQ_RESERVE)
    writers, batches = [], []
    for _ in range(cap - room_left):
        r, w = os.pipe()
        buf = bytearray(1)
        pin = ffi.from_buffer(buf)
        batches.append(
            ring.submit(Op.READ, r, addrs=int(ffi.cast("uintptr_t", pin)), lens=1, offsets=0, keep=[pin, buf])
        )
        writers.append(w)
    return writers, batches


@pytest.mark.timeout(60)
@pytest.mark.parametrize("room_left", [1, 0])
def test_a_chain_is_never_split_by_a_crowded_cq(tmp_path: pathlib.Path, room_left: int) -> None:
    ring = Ring(RingParams(entries=8))
    try:
        writers, crowd = _crowd(ring, room_left)
        # the crowd completes a moment later, which is what lets the chain in
        threading.Timer(0.3, lambda: [os.write(w, b"x") for w in writers]).start()
        read_only = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)
        good = os.open(tmp_path / "ok", os.O_RDWR | os.O_CREAT)
        buf = bytearray(4096)
        pin = ffi.from_buffer(buf)
        res = ring.run(
            [Op.WRITE, Op.FSYNC],
            [read_only, good],  # the write fails (EBADF): a linked fsync is cancelled
            addrs=[int(ffi.cast("uintptr_t", pin)), 0],
            lens=[4096, 0],
            offsets=0,
            op_flags=[0, FSYNC_DATASYNC],
            sqe_flags=[SqeFlag.IO_LINK, 0],
            keep=[pin],
        )
        assert res == [-errno.EBADF, -errno.ECANCELED], "the fsync ran on its own: the chain was split"
        for batch in crowd:
            ring.wait(batch)
    finally:
        ring.close()


def test_a_chain_longer_than_the_ring_is_refused_before_anything_is_queued() -> None:
    ring = Ring(RingParams(entries=8))
    try:
        n = ring.sq_entries + 1
        with pytest.raises(UringIOError) as info:
            ring.run([Op.NOP] * n, -1, sqe_flags=[SqeFlag.IO_LINK] * (n - 1) + [0])
        assert info.value.errno == errno.E2BIG
        assert ring.inflight == 0
        assert ring.run([Op.NOP] * 4, -1, sqe_flags=[SqeFlag.IO_LINK] * 3 + [0]) == [0] * 4
    finally:
        ring.close()
