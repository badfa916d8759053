"""Prepared batches (``handle.prepare_reads`` / ``prepare_writes``) on the IOPOLL and passthrough handles.

What the +iopoll and +passthrough bench rungs run: buffers prepared once,
restarted at new offsets.  Runs inside ../shared/nvme-vm (scripts/test-nvme.sh);
every test writes what it reads back and checks it through another path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from tests.second_loop import FILL, FirstLoop, filled
from uringstack import open_stack
from uringstack.errors import AlignmentError, BatchInFlightError
from uringstack.plugins.nvme_passthrough.prepared import PassthroughPrepared
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack
from uringstack.stack.uring_backend import UringPrepared

from .conftest import BLK, NG
from .test_stack_api import _buffers, _pread

pytestmark = pytest.mark.nvme

BS = 4096


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0]}) as s:
        yield s


def _round_trip(h: object, rng: random.Random, rounds: int = 20, n: int = 8) -> list[tuple[int, bytes]]:
    """prepare_writes then prepare_reads of n buffers, restarted *rounds* times at fresh offsets."""
    units = h.size() // BS  # type: ignore[attr-defined]
    src = _buffers(rng, n)
    back = [aligned_buffer(BS) for _ in range(n)]
    written: list[tuple[int, bytes]] = []
    slots = rng.sample(range(units), rounds * n)
    with h.prepare_writes(src) as w, h.prepare_reads(back) as r:  # type: ignore[attr-defined]
        for k in range(rounds):
            offsets = [u * BS for u in slots[k * n : (k + 1) * n]]
            for b in src:
                b[:] = rng.randbytes(BS)
            assert w.run(offsets) == [BS] * n
            pending = r.start(offsets)
            with pytest.raises(BatchInFlightError):
                # the backend's own rule (the handle's start would first try to reap the batch):
                # its commands and buffers are the kernel's until its completion was reaped
                r._prep.start(offsets)
            assert pending.wait() == [BS] * n
            assert [bytes(b) for b in back] == [bytes(b) for b in src]
            written += [(off, bytes(b)) for off, b in zip(offsets, src, strict=True)]
        with pytest.raises(AlignmentError):
            r.run([100] + [0] * (n - 1))
    return written


def test_prepared_batches_on_the_iopoll_handle(stack: Stack) -> None:
    with stack.open(BLK, direct=True, writable=True) as h:
        assert h.backend == "iopoll"
        iopoll = stack.workers[0].rings["iopoll"]
        before = iopoll.counters()["reaped"]
        with h.prepare_reads([aligned_buffer(BS)]) as probe:
            assert isinstance(probe._prep, UringPrepared)  # built once, not start_rw per batch
        written = _round_trip(h, random.Random(21))
        assert iopoll.counters()["reaped"] - before == 2 * len(written)  # every op polled on the IOPOLL ring
        assert iopoll.inflight == 0
    sample = written[::7]
    assert _pread(BLK, [o for o, _ in sample], BS) == [d for _, d in sample]


def test_prepared_batches_on_the_passthrough_handle(stack: Stack, passthrough: None) -> None:
    with stack.open(NG, writable=True) as h:
        assert h.backend == "nvme_passthrough"
        with h.prepare_reads([aligned_buffer(BS)]) as probe:
            assert isinstance(probe._prep, PassthroughPrepared)  # commands built once, LBAs per start
            # an offset past 2**63 is a ValueError before submission, as on every backend (its LBA
            # fits 64 bits: the device got it and answered "LBA Out of Range", session 28)
            with pytest.raises(ValueError, match="offset"):
                probe.run([1 << 63])
        written = _round_trip(h, random.Random(22))
        h.fdatasync()
        assert stack.workers[0].rings["passthrough"].inflight == 0
    sample = written[::7]
    assert _pread(BLK, [o for o, _ in sample], BS) == [d for _, d in sample]


def test_an_await_from_a_second_loop_on_the_passthrough_ring_starts_nothing_or_completes(
    stack: Stack, passthrough: None
) -> None:
    """The passthrough handle's asyncio calls start, then await (no coalescer): a loop the
    ring cannot serve must be refused before the start (else the read lands in a buffer
    its caller was told was not read into).  A polled ring whose first loop has no
    waiters is polled by the second loop instead: the call completes."""
    from uringstack.ring.polling import is_polled

    with stack.open(NG, writable=True) as h:
        assert h.backend == "nvme_passthrough" and h.ring is not None
        expected = _pread(BLK, [0], BS)[0]
        first = FirstLoop(h)
        try:
            for call in ("read_many_async", "prepared"):
                buf = filled(BS)
                submitted = h.ring.counters()["submitted"]
                with h.prepare_reads([buf]) as p:
                    coro = h.read_many_async([0], [buf]) if call == "read_many_async" else p.run_async([0])
                    if is_polled(h.ring):
                        assert asyncio.run(asyncio.wait_for(coro, 10)) == [BS]
                        assert bytes(buf) == expected
                        continue
                    with pytest.raises(RuntimeError, match="another running event loop"):
                        asyncio.run(asyncio.wait_for(coro, 10))
                    time.sleep(0.2)
                    assert h.ring.counters()["submitted"] == submitted, call
                    assert bytes(buf) == bytes([FILL]) * BS, call
        finally:
            first.close()
