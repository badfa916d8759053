"""A ring's queue depth (``max_in_flight``, ``core.max_in_flight``): never more ops in flight,
a larger batch streams through it, and its refills reach the kernel as they are queued.

The held ops are reads of empty pipes, which the kernel keeps until a test writes: how
many are in flight is then a fact the test controls, not a race with a device.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import uringstack.ring as ring_module
from tests.conftest import open_plain_uring
from tests.ring.conftest import empty_pipes
from tests.signal_points import Alarm
from uringstack.config import ConfigError
from uringstack.ring import Ring, RingBusyError
from uringstack.ring.buffers import address_of, aligned_buffer
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi
from uringstack.ring.params import RingParams
from uringstack.stack import open_stack

DEPTH = 3
N = 12  # held reads: four times the depth, well inside the CQ (32) of the 16-entry ring
SIZE = 8


@pytest.fixture
def ring() -> Iterator[Ring]:
    ring = Ring(entries=16, max_in_flight=DEPTH)
    ring.wait_tick = 0.05
    ring.wait_timeout = 5.0
    yield ring
    ring.close()


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    with empty_pipes(N) as ps:
        yield ps


def _nops(n: int) -> BatchColumns:
    cols = BatchColumns(n)
    cols.fill("opcodes", int(Op.NOP))
    cols.fill("fds", -1)
    return cols


def test_the_cap_is_the_depth_below_what_the_cq_holds(ring: Ring) -> None:
    assert ring.cq_entries == 32 and ring.cq_cap == DEPTH and ring.cq_room() == DEPTH
    with Ring(entries=4, max_in_flight=100) as wide:  # more than a CQ of 8 holds: what it holds
        assert wide.cq_cap == wide.cq_entries - 2


def test_a_full_depth_refuses_a_start_without_waiting_and_says_why(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    buf = bytearray(SIZE * DEPTH)
    pin = ffi.from_buffer(buf)
    addrs = [address_of(pin) + SIZE * i for i in range(DEPTH)]
    held = ring.submit(Op.READ, [r for r, _ in pipes[:DEPTH]], addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
    assert ring.inflight == DEPTH
    before = ring.counters()["submitted"]
    with pytest.raises(RingBusyError, match=r"at most 3: the ring's max_in_flight; .* would allow 30"):
        ring.submit_columns(_nops(1), wait_room=False)
    assert ring.counters()["submitted"] == before, "a refused start reached the kernel"
    for _, w in pipes[:DEPTH]:
        os.write(w, b"x" * SIZE)
    assert ring.wait(held) == [SIZE] * DEPTH
    assert ring.wait(ring.submit_columns(_nops(DEPTH), wait_room=False)) == [0] * DEPTH


def test_a_batch_larger_than_the_depth_streams_through_it(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    """N held reads in one batch: at most DEPTH in the kernel at any time, each fed pipe's
    place taken by the next read, and every result and byte arrives."""
    buf = bytearray(SIZE * N)
    pin = ffi.from_buffer(buf)
    addrs = [address_of(pin) + SIZE * i for i in range(N)]
    seen: list[int] = []
    done = threading.Event()

    def feed() -> None:
        # one pipe at a time, in the batch's order: the next read goes in only as one completes
        for i, (_, w) in enumerate(pipes):
            deadline = time.monotonic() + 5
            while ring.inflight < min(DEPTH, N - i) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(0.02)  # room for a read past the depth to be submitted, were one allowed
            seen.append(ring.inflight)
            os.write(w, bytes([i]) * SIZE)
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    batch = ring.submit(Op.READ, [r for r, _ in pipes], addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
    assert ring.wait(batch) == [SIZE] * N
    feeder.join(5)
    assert done.is_set()
    assert max(seen) == DEPTH, f"in flight as each pipe was fed: {seen}"
    assert bytes(buf) == b"".join(bytes([i]) * SIZE for i in range(N))
    assert ring.inflight == 0


class _Bursts:
    """The binding, except that the Ring's wait for room (``us_wait_room_for``, which runs once
    the submission in C found no room within its first wait) first feeds the next DEPTH held
    reads' pipes and lets their reads complete: each refill then finds a whole burst of
    completions, as a device that completes in bursts leaves it."""

    def __init__(self, real: Any, ring: Ring, pipes: list[tuple[int, int]]) -> None:
        self._real = real
        self._ring = ring
        self._writers = [w for _, w in pipes]
        self.fed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def us_wait_room_for(self, ring: Any, st: Any, need: int, timeout_ms: int) -> int:
        fed = self._writers[self.fed : self.fed + DEPTH]
        for w in fed:
            os.write(w, b"x" * SIZE)
        self.fed += len(fed)
        # until the fed reads' CQEs are in the CQ (a read the kernel polled completes in
        # this thread's task work, which each sleep's return from the kernel runs)
        deadline = time.monotonic() + 5
        while self._ring._cq_tail[0] - self._ring._cq_head[0] < len(fed) and time.monotonic() < deadline:
            time.sleep(0.005)
        return int(self._real.us_wait_room_for(ring, st, need, timeout_ms))


def test_refills_reach_the_kernel_as_they_are_queued(
    ring: Ring, pipes: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the first op that waited for room on, the ops of a batch larger than the depth
    are submitted two at a time as they are queued, not all of a burst's refills in one
    submission at the next op that finds no room (the kernel would hand them to the device
    only at its end: docs/api.md).  With held reads fed a burst of DEPTH at a time, every
    burst's refills take two submissions (a pair, then the last one) where one would do."""
    bursts = _Bursts(ring_module.lib, ring, pipes)
    monkeypatch.setattr(ring_module, "lib", bursts)
    buf = bytearray(SIZE * N)
    pin = ffi.from_buffer(buf)
    addrs = [address_of(pin) + SIZE * i for i in range(N)]
    before = ring.counters()["enters"]
    batch = ring.submit(Op.READ, [r for r, _ in pipes], addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
    enters = ring.counters()["enters"] - before
    for _, w in pipes[bursts.fed :]:
        os.write(w, b"x" * SIZE)
    assert ring.wait(batch) == [SIZE] * N
    refills = N // DEPTH - 1
    # the first DEPTH in one submission, then per refilled burst: its pair, its last op, the
    # C wait that ran out, and the wait for room's own submission of what was queued (none)
    assert enters == 1 + refills * 4, f"{enters} io_uring_enter for {refills} refilled bursts of {DEPTH}"


def test_ops_that_complete_inline_are_submitted_a_room_at_a_time(ring: Ring) -> None:
    """A NOP completes inside its submission (as a page-cache hit does), so the ring never
    waits for room and never submits op by op: one io_uring_enter per depth's worth."""
    n = 8 * DEPTH
    before = ring.counters()["enters"]
    assert ring.wait(ring.submit_columns(_nops(n))) == [0] * n
    enters = ring.counters()["enters"] - before
    assert enters <= n // DEPTH + 1, f"{enters} io_uring_enter for {n} NOPs at depth {DEPTH}"


def test_a_hung_op_fails_the_streaming_batch_within_its_timeout(ring: Ring, pipes: list[tuple[int, int]]) -> None:
    """No pipe is ever fed: the wait for a place in the depth gives up at wait_timeout, with
    the ops in the kernel still owned, and the ring usable once they complete."""
    buf = bytearray(SIZE * N)
    pin = ffi.from_buffer(buf)
    addrs = [address_of(pin) + SIZE * i for i in range(N)]
    ring.wait_timeout = 0.5
    t0 = time.monotonic()
    with pytest.raises(OSError):
        ring.submit(Op.READ, [r for r, _ in pipes], addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf])
    assert time.monotonic() - t0 < 3
    assert ring.inflight == DEPTH
    for _, w in pipes[:DEPTH]:
        os.write(w, b"x" * SIZE)
    ring.wait_timeout = 5.0
    deadline = time.monotonic() + 5
    while ring.inflight and time.monotonic() < deadline:
        ring.reap()
        time.sleep(0.01)
    assert ring.inflight == 0
    assert ring.run(Op.NOP, -1) == [0]


def test_a_signal_in_a_streamed_batchs_last_wait_reaches_python_at_once(
    ring: Ring, pipes: list[tuple[int, int]], counted_alarm: list[int], whole_first_wait: None
) -> None:
    """A waited batch over the depth: its final submission must submit something (its last
    op is never submitted early by the refill), since an io_uring_enter that submits hides
    its wait's EINTR and returns the count; one that submitted nothing would give -EINTR,
    which the submission retries, and the handler would wait out another whole wait (2 s
    here).  The first 9 pipes are fed while the batch streams; the alarm comes while the
    last 3 reads are held in the final wait."""
    ring.wait_tick = 2.0
    ring.wait_timeout = 3.0
    buf = bytearray(SIZE * N)
    pin = ffi.from_buffer(buf)
    addrs = [address_of(pin) + SIZE * i for i in range(N)]
    fed = N - DEPTH

    armed: list[float] = []

    def counted(name: str, k: int) -> None:
        # (the counters' memory: counters() takes the ring's lock, which the submission holds)
        deadline = time.monotonic() + 2
        while getattr(ring._counters, name) < k and time.monotonic() < deadline:
            time.sleep(0.002)

    def feed() -> None:
        for i, (_, w) in enumerate(pipes[:fed]):
            counted("submitted", i + 1)  # each read held by the kernel before its pipe is fed
            os.write(w, bytes([i]) * SIZE)
        # The alarm (sent to the main thread, which waits) once the fed reads were reaped,
        # so the last one is queued and the final submission, which counts what it submitted
        # only when its wait ends, is under way: however slow the machine, the alarm comes
        # in the final wait.
        counted("reaped", fed)
        time.sleep(0.2)
        armed.append(time.monotonic())
        signal.setitimer(signal.ITIMER_REAL, 0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with pytest.raises(Alarm):
        ring.submit(Op.READ, [r for r, _ in pipes], addrs=addrs, lens=SIZE, offsets=0, keep=[pin, buf], wait=True)
    done = time.monotonic()
    feeder.join(5)
    assert counted_alarm == [1] and armed
    took = done - armed[0]
    assert took < 1.0, f"the handler ran {took:.2f} s after the alarm (the wait went on after the signal)"
    (batch,) = ring._inflight.values()  # still owned, its last reads in the kernel
    assert ring.inflight == DEPTH
    for i, (_, w) in enumerate(pipes[fed:], fed):
        os.write(w, bytes([i]) * SIZE)
    assert ring.wait(batch) == [SIZE] * N
    assert bytes(buf) == b"".join(bytes([i]) * SIZE for i in range(N))


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_ring_params_refuse_a_depth_that_is_not_a_count(bad: object) -> None:
    problems = RingParams(entries=8, max_in_flight=bad).problems()  # type: ignore[arg-type]
    assert any("max_in_flight" in p for p in problems), problems


@pytest.mark.parametrize(
    ("value", "entries", "message"),
    [
        (0, 256, "must be 1 or more"),
        (511, 256, "more than a ring of core.ring_entries = 256 holds in flight (510"),
        (15, 8, "core.ring_entries = 8 holds in flight (14"),
    ],
)
def test_the_config_refuses_a_depth_the_rings_cannot_take(value: int, entries: int, message: str) -> None:
    with pytest.raises(ConfigError, match=r"core\.max_in_flight") as info:
        open_stack(overrides={"core.max_in_flight": value, "core.ring_entries": entries})
    assert message in str(info.value)


def test_a_handle_reads_many_more_than_the_depth_at_the_depth(tmp_path: Path) -> None:
    """``core.max_in_flight`` reaches every ring of the stack (the plan says so), and a
    read_many of 20 x the depth through a handle returns every byte where it belongs."""
    path = tmp_path / "data"
    data = os.urandom(4096 * 64)
    path.write_bytes(data)
    overrides = {"core.cores": [0], "core.max_in_flight": 4, "core.direct": True, "iopoll.mode": "off"}
    with open_stack(overrides=overrides) as stack:
        assert all(r.max_in_flight == 4 for w in stack.plan.workers for r in w.rings)
        h = open_plain_uring(stack, path, writable=False)
        try:
            ring = h.ring
            assert ring is not None and ring.cq_cap == 4
            n = 80
            bufs = [aligned_buffer(4096) for _ in range(n)]
            offs = [4096 * ((7 * i) % 64) for i in range(n)]
            assert h.read_many(offs, bufs) == [4096] * n
            assert all(bytes(b) == data[o : o + 4096] for o, b in zip(offs, bufs, strict=True))
            with h.prepare_reads(bufs) as prepared:
                assert prepared.run(list(reversed(offs))) == [4096] * n
            assert all(bytes(b) == data[o : o + 4096] for o, b in zip(reversed(offs), bufs, strict=True))
            assert ring.inflight == 0
        finally:
            h.close()
