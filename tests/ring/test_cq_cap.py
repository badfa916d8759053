"""Never more ops in flight on a ring than its CQ can hold (``Ring.cq_cap``).

Ops the kernel holds (reads of empty pipes) complete when someone writes: if
more of them were in flight than the CQ has entries, feeding the pipes at
once would post more CQEs than fit, and the kernel would park the rest on its
overflow list (an allocation per CQE that can fail: a lost completion).
``IORING_SQ_CQ_OVERFLOW`` in the SQ flags says it did.  Each test starts
more such reads than the CQ of a 4-entry ring (8 CQEs) holds, through a public
path (one batch, many batches started without waiting, single waited reads
from threads, asyncio awaits), feeds every pipe, and checks that every result
arrives, that the CQ never overflowed and that nothing hangs.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import uringstack.ring as ring_module
from tests.conftest import open_plain_uring
from tests.pipe_io import PipeIO
from tests.ring.conftest import cq_overflowed, empty_pipes
from uringstack.errors import SubmissionError
from uringstack.ring import Batch, Ring, RingBusyError, aio, coalesce
from uringstack.ring.buffers import address_of, aligned_buffer
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op
from uringstack.ring.inflight import InflightTracker
from uringstack.ring.native import ffi
from uringstack.stack import open_stack

N = 20  # reads held by the kernel: more than the CQ (8) and the SQ (4) of the ring
SIZE = 16


@pytest.fixture
def ring(small_ring: Ring) -> Ring:
    return small_ring


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    with empty_pipes(N) as ps:
        yield ps


class Feeder:
    """Writes every pipe (after *delay*) in one tight loop, then watches the SQ flags."""

    def __init__(self, ring: Ring, pipes: list[tuple[int, int]], delay: float = 0.2) -> None:
        self.ring, self.pipes, self.delay = ring, pipes, delay
        self.overflow_seen = False
        self.fed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        time.sleep(self.delay)
        for i, (_, w) in enumerate(self.pipes):
            os.write(w, bytes([i]) * SIZE)
        self.fed.set()
        end = time.monotonic() + 0.5
        while time.monotonic() < end and not self.overflow_seen:
            self.overflow_seen = cq_overflowed(self.ring)
            time.sleep(0.001)

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(5)

    def check(self) -> None:
        self.thread.join(5)
        assert not self.thread.is_alive()
        assert not self.overflow_seen and not cq_overflowed(self.ring), (
            f"more ops in flight than the CQ's {self.ring.cq_entries} entries: the kernel overflowed it"
        )


def _reads(pipes: list[tuple[int, int]]) -> tuple[list[int], list[int], bytearray, object]:
    buf = bytearray(SIZE * len(pipes))
    pin = ffi.from_buffer(buf)
    base = address_of(pin)
    return [r for r, _ in pipes], [base + SIZE * i for i in range(len(pipes))], buf, pin


def _expect(buf: bytearray, n: int) -> bytes:
    return b"".join(bytes([i]) * SIZE for i in range(n))


def test_the_cap_is_below_the_cq(ring: Ring) -> None:
    assert ring.cq_entries == 8 and 1 <= ring.cq_cap <= ring.cq_entries


def test_one_batch_of_held_reads_larger_than_the_cq(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    fds, addrs, buf, pin = _reads(pipes)
    with Feeder(ring, pipes, delay=0.3) as feeder:
        batch = ring.submit(Op.READ, fds, addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
        assert ring.inflight <= ring.cq_cap
        time.sleep(0.4)  # nothing reaps here: what the kernel completes stays in the CQ
        assert ring.wait(batch) == [SIZE] * N
    feeder.check()
    assert buf == _expect(buf, N) and ring.inflight == 0


def test_batches_started_without_waiting(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    fds, addrs, buf, pin = _reads(pipes)
    with Feeder(ring, pipes, delay=0.3) as feeder:
        batches = [
            ring.submit(Op.READ, fds[i : i + 2], addrs=addrs[i : i + 2], lens=SIZE, offsets=0, keep=[pin, buf])
            for i in range(0, N, 2)
        ]
        assert ring.inflight <= ring.cq_cap
        time.sleep(0.4)
        assert [ring.wait(b) for b in batches] == [[SIZE, SIZE]] * (N // 2)
    feeder.check()
    assert buf == _expect(buf, N)


def test_single_waited_reads_from_threads(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    fds, addrs, buf, pin = _reads(pipes)
    results: list[int] = [0] * N

    def one(i: int) -> None:
        cell = ffi.cast("char *", addrs[i])
        results[i] = ring.rw_one(int(Op.READ), fds[i], cell, SIZE, 0, 0, 0, pin)

    # a batch holds the first reads, so the single ops find the CQ full
    cap = ring.cq_cap
    batch = ring.submit(Op.READ, fds[:cap], addrs=addrs[:cap], lens=SIZE, offsets=0, keep=[pin, buf])
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(cap, N)]
    with Feeder(ring, pipes, delay=0.3) as feeder:
        for t in threads:
            t.start()
        time.sleep(0.1)
        assert ring.inflight <= ring.cq_cap
        assert ring.wait(batch) == [SIZE] * cap
        for t in threads:
            t.join(5)
    feeder.check()
    assert not any(t.is_alive() for t in threads)
    assert results[cap:] == [SIZE] * (N - cap)
    assert buf == _expect(buf, N)


def test_a_full_ring_refuses_a_non_waiting_start(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    fds, addrs, buf, pin = _reads(pipes)
    cap = ring.cq_cap
    held = ring.submit(Op.READ, fds[:cap], addrs=addrs[:cap], lens=SIZE, offsets=0, keep=[pin, buf])
    before = ring.counters()["submitted"]
    cols = BatchColumns(1)
    cols.fill("opcodes", int(Op.NOP))
    cols.fill("fds", -1)
    with pytest.raises(RingBusyError):
        ring.submit_columns(cols, wait_room=False)
    assert ring.counters()["submitted"] == before, "a refused start reached the kernel"
    with Feeder(ring, pipes, delay=0.0) as feeder:
        assert ring.wait(held) == [SIZE] * cap
    feeder.check()
    assert ring.wait(ring.submit_columns(cols, wait_room=False)) == [0]


def test_a_hung_op_fails_the_room_wait_within_its_timeout(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    fds, addrs, buf, pin = _reads(pipes)
    ring.wait_timeout = 0.5
    t0 = time.monotonic()
    with pytest.raises(OSError):
        ring.submit(Op.READ, fds, addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
    assert time.monotonic() - t0 < 3
    assert ring.inflight <= ring.cq_cap


class _BadResume:
    """The binding, except that the first ``us_batch_resume`` gets a count of unqueued ops it
    must refuse (-EINVAL from its own argument checks): an error exit the Ring never provokes."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.refused: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def us_batch_resume(self, ring: Any, st: Any, desc: Any, left: int, wait_nr: int, wait_ms: int) -> int:
        if self.refused:
            return int(self._real.us_batch_resume(ring, st, desc, left, wait_nr, wait_ms))
        ret = int(self._real.us_batch_resume(ring, st, desc, desc.n + 1, wait_nr, wait_ms))
        self.refused.append(ret)
        return ret


def test_a_failed_resume_gives_up_the_unqueued_ops(
    ring: Ring, pipes: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than the cap goes out in parts (``us_batch_resume``); when a resumed
    part fails (here the call's own argument check), the ops never queued complete at once
    with -ECANCELED, the part in the kernel is reaped, and the submission raises in
    seconds: no wait for completions that can never come, nothing left in flight."""
    created: list[Batch] = []

    class Recorded(Batch):
        __slots__ = ()

        def __init__(self, n: int, keep: object, arrays: object = ()) -> None:
            super().__init__(n, keep, arrays)
            created.append(self)

    bad = _BadResume(ring_module.lib)
    monkeypatch.setattr(ring_module, "lib", bad)
    monkeypatch.setattr(ring_module, "Batch", Recorded)
    ring.wait_timeout = 3.0
    fds, addrs, buf, pin = _reads(pipes)
    t0 = time.monotonic()
    with Feeder(ring, pipes, delay=0.3) as feeder, pytest.raises(SubmissionError) as err:
        ring.submit(Op.READ, fds, addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
    assert time.monotonic() - t0 < 2.5, "the submission waited for ops it never queued"
    feeder.check()
    assert bad.refused == [-errno.EINVAL] and err.value.errno == errno.EINVAL
    (batch,) = created
    assert batch.finished
    results = batch.results
    queued = results.index(-errno.ECANCELED)
    assert 0 < queued <= ring.cq_cap
    assert results == [SIZE] * queued + [-errno.ECANCELED] * (N - queued)
    assert buf[: SIZE * queued] == _expect(buf, queued)
    assert ring.inflight == 0
    monkeypatch.undo()
    assert ring.run(Op.NOP, -1) == [0]  # the ring and its slots are usable


def test_asyncio_awaits_past_the_cq(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    """Many single awaits on one ring (the coalescer) whose pipes the loop itself feeds later:
    the loop must neither block on CQ room (the feeding would never run) nor overflow."""
    tracker = InflightTracker("pipes")
    seen: list[bool] = []

    async def main() -> list[bytes]:
        co = coalesce.coalescer_for(ring)
        futs = [co.add_read(PipeIO(r), tracker, SIZE, 0) for r, _ in pipes]
        for _ in range(10):  # the loop flushes; the kernel holds what it was given
            await asyncio.sleep(0.01)
            seen.append(cq_overflowed(ring))
        assert ring.inflight <= ring.cq_cap
        for i, (_, w) in enumerate(pipes):  # the loop itself feeds the pipes, all at once
            os.write(w, bytes([i]) * SIZE)
        for _ in range(10):
            seen.append(cq_overflowed(ring))
            await asyncio.sleep(0.01)
        got = await asyncio.wait_for(asyncio.gather(*futs), 5)
        aio.detach_ring(ring)
        return got

    t0 = time.monotonic()
    got = asyncio.run(main())
    assert time.monotonic() - t0 < ring.wait_timeout, "the loop blocked waiting for CQ room"
    assert got == [bytes([i]) * SIZE for i in range(N)]
    assert not any(seen), "more awaits in flight than the CQ holds: the kernel overflowed it"


def test_handle_calls_larger_than_the_cq(tmp_path: Path) -> None:
    """A read_many of 10 x the ring through a handle, and asyncio reads and read_many_async
    of more ops than the CQ holds: every result, in one batch per call, the cap kept."""
    path = tmp_path / "data"
    data = os.urandom(4096 * 80)
    path.write_bytes(data)
    overrides = {"core.cores": [0], "core.ring_entries": 4, "core.direct": True, "iopoll.mode": "off"}
    with open_stack(overrides=overrides) as stack:
        # O_DIRECT: the reads go to the disk instead of completing inside their submission,
        # so the calls really meet the cap (on the storage ring: not IOPOLL's, where
        # tmp_path is on a device with poll queues, as in the NVMe VM)
        h = open_plain_uring(stack, path, writable=False)
        try:
            ring = h.ring
            assert ring is not None and ring.cq_entries == 8
            n = 10 * ring.sq_entries * 2
            bufs = [aligned_buffer(4096) for _ in range(n)]
            offs = [4096 * (i % 80) for i in range(n)]
            assert h.read_many(offs, bufs) == [4096] * n
            assert all(bytes(b) == data[o : o + 4096] for o, b in zip(offs, bufs, strict=True))
            assert not cq_overflowed(ring)

            async def main() -> tuple[list[bytes], list[list[int]]]:
                reads = [h.read(4096, 4096 * i) for i in range(40)]
                manys = [h.read_many_async(offs[:12], [aligned_buffer(4096) for _ in range(12)]) for _ in range(3)]
                big = h.read_many_async(offs, [aligned_buffer(4096) for _ in range(n)])
                got = await asyncio.wait_for(asyncio.gather(*reads), 10)
                lists = await asyncio.wait_for(asyncio.gather(*manys, big), 10)
                return got, lists

            got, lists = asyncio.run(main())
            assert got == [data[4096 * i : 4096 * (i + 1)] for i in range(40)]
            assert lists == [[4096] * 12] * 3 + [[4096] * n]
            assert not cq_overflowed(ring) and ring.inflight == 0
        finally:
            h.close()
