"""The batch path makes one call into the C binding per batch.

cffi releases the GIL around every call into the binding, and with two worker
threads each release is a hand-off: the other thread takes the GIL and this
one sleeps on a futex until it gets it back (issue 14: 2 worker threads ran
slower than 1).  So a waited batch (``read_many``, ``prepared.run``,
``Ring.run``) is one call (submit, bounded wait, drain), a started batch one
call to submit and at most one more to wait for it, and whatever only reads
the ring's bookkeeping (which slots finished, what is in flight, whether the
CQ holds anything) reads memory instead of calling.  The binding is wrapped
by a counting proxy: these tests count calls, never time.
"""

from __future__ import annotations

import os
import pathlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack import ring as ring_module
from uringstack.errors import AlignmentError
from uringstack.ring import Batch, Ring
from uringstack.ring.flags import Op
from uringstack.ring.native import lib
from uringstack.stack import open_stack


class _CountingLib:
    """Stands in for the binding's ``lib``: forwards everything, records each function called."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr
        calls = self.calls

        def counted(*args: Any) -> Any:
            calls.append(name)
            return attr(*args)

        return counted


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _CountingLib:
    proxy = _CountingLib(lib)
    monkeypatch.setattr(ring_module, "lib", proxy)
    return proxy


@pytest.fixture
def ring() -> Iterator[Ring]:
    ring = Ring(entries=64)
    yield ring
    ring.close()


def test_a_waited_batch_is_one_call(ring: Ring, counting: _CountingLib) -> None:
    for _ in range(20):
        assert ring.run(Op.NOP, -1, n=4) == [0, 0, 0, 0]
    assert counting.calls == ["us_batch_start"] * 20


def test_a_waited_submit_drains_its_completions(ring: Ring) -> None:
    """What completed within the submission's wait is in the results already: its CQE is gone."""
    batch = ring.submit(Op.NOP, -1, n=2, wait=True)
    assert lib.us_test_drop_cqe(ring._ring) == 0
    assert ring.wait(batch) == [0, 0]
    assert ring.inflight == 0


def test_started_batches_waited_oldest_first_cost_one_call_each_and_a_drain(ring: Ring, counting: _CountingLib) -> None:
    """QD 32 in batches of 4, the bench's default: a submit per batch, and a wait call only
    when the oldest batch is not drained yet (one drain finds the 8 in flight)."""
    fifo: deque[Batch] = deque(ring.submit(Op.NOP, -1, n=4) for _ in range(8))
    counting.calls.clear()
    batches = 80
    for _ in range(batches):
        assert ring.wait(fifo.popleft()) == [0, 0, 0, 0]
        fifo.append(ring.submit(Op.NOP, -1, n=4))
    assert counting.calls.count("us_batch_start") == batches
    # one drain per 8 batches: the wait for the oldest reaps every batch in flight
    assert len(counting.calls) <= batches + batches // 8 + 1, counting.calls
    assert set(counting.calls) <= {"us_batch_start", "us_wait_slot_for"}


def test_reading_the_bookkeeping_makes_no_call(ring: Ring, counting: _CountingLib) -> None:
    batch = ring.submit(Op.NOP, -1, n=3)
    counting.calls.clear()
    assert ring.inflight == 3
    ring.wait(batch)
    assert ring.inflight == 0
    assert ring.try_reap() == []  # nothing posted, nothing drained
    assert counting.calls == ["us_wait_slot_for"]


def test_try_reap_still_reaps_what_completed(ring: Ring) -> None:
    batch = ring.submit(Op.NOP, -1, n=2)
    done: list[Batch] = []
    for _ in range(1000):
        done = ring.try_reap()
        if done:
            break
    assert done == [batch] and batch.finished and batch.results == [0, 0]


@pytest.fixture
def hot_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "hot"
    path.write_bytes(os.urandom(1 << 20))
    path.read_bytes()  # in the page cache
    return path


def _calls_per_batch(counting: _CountingLib, batches: int, step: Callable[[int], None]) -> float:
    step(0)  # first use: fd columns, caches
    counting.calls.clear()
    for i in range(1, batches + 1):
        step(i)
    return len(counting.calls) / batches


def test_read_many_and_prepared_run_are_one_call_per_batch(hot_file: pathlib.Path, counting: _CountingLib) -> None:
    data = hot_file.read_bytes()
    overrides = {"core.cores": [0], "sqpoll.mode": "off", "fixedbuf.mode": "off"}
    with open_stack(overrides=overrides) as stack, stack.open(str(hot_file), direct=False, writable=False) as h:
        assert h.ring is not None
        bufs = [bytearray(4096) for _ in range(4)]

        def read_many(i: int) -> None:
            offs = [((i * 4 + k) % 256) * 4096 for k in range(4)]
            assert h.read_many(offs, bufs) == [4096] * 4
            assert [bytes(b) for b in bufs] == [data[o : o + 4096] for o in offs]

        assert _calls_per_batch(counting, 50, read_many) == 1.0
        with h.prepare_reads(bufs) as prepared:

            def run(i: int) -> None:
                offs = [((i * 4 + k) % 256) * 4096 for k in range(4)]
                assert prepared.run(offs) == [4096] * 4
                assert bytes(bufs[3]) == data[offs[3] : offs[3] + 4096]

            assert _calls_per_batch(counting, 50, run) == 1.0


def test_an_o_direct_batch_checks_alignment_without_a_call(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, counting: _CountingLib
) -> None:
    """start_read_many on an O_DIRECT file: the alignment check is no call of its own."""
    from uringstack.ring.buffers import aligned_buffer
    from uringstack.stack import uring_backend

    monkeypatch.setattr(uring_backend, "lib", counting, raising=False)
    path = tmp_path / "d"
    path.write_bytes(os.urandom(1 << 16))
    overrides = {"core.cores": [0], "sqpoll.mode": "off", "fixedbuf.mode": "off"}
    with open_stack(overrides=overrides) as stack:
        try:
            h = stack.open(str(path), direct=True, writable=False)
        except OSError as exc:
            skip_without(f"O_DIRECT on {tmp_path} ({exc})")
        with h:
            bufs = [aligned_buffer(4096) for _ in range(4)]
            h.read_many([0, 4096, 8192, 12288], bufs)
            counting.calls.clear()
            assert h.start_read_many([4096, 0, 8192, 12288], bufs).wait() == [4096] * 4
            assert counting.calls == ["us_batch_start"] or counting.calls == ["us_batch_start", "us_wait_slot_for"]
            with pytest.raises(AlignmentError):  # still refused before submission
                h.start_read_many([100], bufs[:1])
            assert counting.calls.count("us_batch_start") == 1


def _pipe_read(ring: Ring, fd: int, buf: bytearray) -> Batch:
    from uringstack.ring.buffers import address_of
    from uringstack.ring.native import ffi

    pin = ffi.from_buffer(buf)
    return ring.submit(Op.READ, fd, addrs=address_of(pin), lens=len(buf), offsets=0, keep=[pin, buf])


def test_try_reap_finds_a_completion_the_kernel_holds_back() -> None:
    """On a DEFER_TASKRUN ring a completion is posted only when the task enters the kernel:
    the CQ looks empty, the SQ flags say so (IORING_SQ_TASKRUN), and try_reap must enter."""
    from uringstack.errors import UringIOError
    from uringstack.ring.flags import SetupFlag

    flags = SetupFlag.DEFER_TASKRUN | SetupFlag.SINGLE_ISSUER | SetupFlag.TASKRUN_FLAG
    try:
        ring = Ring(entries=8, flags=flags)
    except (UringIOError, OSError) as exc:
        skip_without(f"an io_uring with DEFER_TASKRUN and TASKRUN_FLAG (kernel 6.1+): {exc}")
    if ring.flags & flags != flags:
        ring.close()
        skip_without(f"an io_uring with DEFER_TASKRUN and TASKRUN_FLAG (kernel 6.1+; dropped: {ring.dropped})")
    r, w = os.pipe()
    try:
        buf = bytearray(8)
        batch = _pipe_read(ring, r, buf)
        os.write(w, b"deferred")
        assert ring._cq_head[0] == ring._cq_tail[0]  # held back: nothing posted yet
        done: list[Batch] = []
        for _ in range(100):
            done = ring.try_reap()
            if done:
                break
        assert done == [batch] and batch.results == [8] and bytes(buf) == b"deferred"
    finally:
        ring.close()
        os.close(r)
        os.close(w)
