"""A batch larger than the ring never overflows the CQ with its own completions.

``us_submit_batch`` submits the queued part of a batch whenever the SQ fills
and goes on preparing (``next_sqe``), so one batch may be many times the
ring's size.  Ops that complete inline (NOPs, buffered reads of cached pages)
post their CQEs during each of those submissions; unless each submission is
followed by a reap, the CQ (twice the SQ) overflows after the second refill
and the kernel parks the rest on its overflow list, allocated per CQE
(GFP_ATOMIC, charged to the memory cgroup; dropped, a lost completion, when
that fails, and dropped outright by kernels without IORING_FEAT_NODROP).
``IORING_SQ_CQ_OVERFLOW`` in the SQ flags says the kernel holds such CQEs.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.ring.conftest import cq_overflowed
from uringstack.ring import Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi


def test_a_batch_of_many_ring_sizes_of_nops_does_not_overflow_the_cq(small_ring: Ring) -> None:
    ring = small_ring
    n = 16 * ring.sq_entries
    batch = ring.submit(Op.NOP, -1, n=n)
    assert not cq_overflowed(ring), "the batch's own completions overflowed the CQ"
    assert ring.wait(batch) == [0] * n
    assert ring.counters()["reaped"] == n and ring.inflight == 0


def test_a_batch_of_cached_reads_does_not_overflow_the_cq(small_ring: Ring, tmp_path: Path) -> None:
    ring = small_ring
    path = tmp_path / "f"
    n = 16 * ring.sq_entries
    data = os.urandom(512 * n)
    path.write_bytes(data)  # in the page cache: each read completes inside its submission
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(512 * n)
        pin = ffi.from_buffer(buf)
        base = address_of(pin)
        batch = ring.submit(
            Op.READ, fd, addrs=[base + 512 * i for i in range(n)], lens=512,
            offsets=[512 * i for i in range(n)], keep=[pin, buf],
        )  # fmt: skip
        assert not cq_overflowed(ring), "the batch's own completions overflowed the CQ"
        assert ring.wait(batch) == [512] * n
        assert buf == data
    finally:
        os.close(fd)
