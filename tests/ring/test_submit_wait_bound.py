"""``submit(wait=True)`` is bounded like ``Ring.wait``: a hung op never blocks the submission.

The submitting ``io_uring_enter`` may also wait for the batch (one syscall per
synchronous call), but only for ``Ring.wait_tick``; the bounded
:meth:`Ring.wait` takes over from there.  A hung op is a read from an empty
pipe through the ring: the kernel holds it until a writer shows up.
"""

from __future__ import annotations

import errno
import os
import time

import pytest

from uringstack import ring as ring_module
from uringstack.errors import UringIOError
from uringstack.ring import Batch, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi, lib


def _submit_pipe_read(ring: Ring, fd: int, buf: bytearray) -> Batch:
    pin = ffi.from_buffer(buf)
    return ring.submit(Op.READ, fd, addrs=address_of(pin), lens=len(buf), offsets=0, keep=[pin, buf], wait=True)


@pytest.mark.timeout(30)
def test_submit_wait_on_a_hung_op_returns_within_a_tick(pipe: tuple[int, int], ring: Ring) -> None:
    r, w = pipe
    buf = bytearray(16)
    t0 = time.monotonic()
    batch = _submit_pipe_read(ring, r, buf)
    assert time.monotonic() - t0 < 3, "the submission waited far past Ring.wait_tick"
    assert not batch.finished and ring.inflight == 1
    os.write(w, b"late")
    assert ring.wait(batch) == [4]
    assert bytes(buf[:4]) == b"late"


@pytest.mark.timeout(30)
def test_submit_wait_then_wait_on_a_hung_op_fails_at_the_deadline_and_keeps_the_buffers(
    pipe: tuple[int, int], ring: Ring
) -> None:
    """``Ring.run`` (submit with wait, then wait) on a hung op: ETIMEDOUT at ``wait_timeout``,
    the batch still in flight and owning its buffer, and still completable."""
    r, w = pipe
    ring.wait_timeout = 1.0
    buf = bytearray(16)
    pin = ffi.from_buffer(buf)
    t0 = time.monotonic()
    with pytest.raises(UringIOError, match=r"1 op\(s\) not complete after 1 s") as info:
        ring.run(Op.READ, r, addrs=address_of(pin), lens=len(buf), offsets=0, keep=[pin, buf])
    assert 0.9 < time.monotonic() - t0 < 5
    assert info.value.errno == errno.ETIMEDOUT
    assert ring.inflight == 1
    (batch,) = ring._inflight.values()
    assert batch._keep == [pin, buf]  # the kernel may still write into it: never released
    os.write(w, b"ok")
    assert ring.wait(batch) == [2]
    assert bytes(buf[:2]) == b"ok"


@pytest.mark.timeout(30)
def test_submit_wait_then_a_lost_completion_fails_fast(pipe: tuple[int, int]) -> None:
    """The completion arrived after the submission's bounded wait gave up but was consumed
    behind the bookkeeping's back: the wait that follows raises at once instead of hanging.
    (A completion that arrives within the submission's wait is drained by it: see
    test_waited_submit_drains_its_completions.)"""
    r, w = pipe
    ring = Ring(entries=8)
    ring.wait_tick = 0.2
    try:
        buf = bytearray(16)
        batch = _submit_pipe_read(ring, r, buf)
        assert not batch.finished  # the submission's wait gave up after a tick
        os.write(w, b"x")
        deadline = time.monotonic() + 5
        while lib.us_test_drop_cqe(ring._ring) != 1:
            assert time.monotonic() < deadline, "the read never completed, so there was nothing to drop"
            time.sleep(0.001)
        t0 = time.monotonic()
        with pytest.raises(UringIOError, match="lost completion") as info:
            ring.wait(batch)
        assert time.monotonic() - t0 < 5
        assert info.value.errno == errno.ETIMEDOUT
        assert not batch.finished
    finally:
        with pytest.raises(UringIOError, match="did not complete within"):
            ring.close()
        ring_module._ORPHANED.clear()


def test_submit_wait_keeps_one_syscall_per_synchronous_batch(tmp_path: os.PathLike[str]) -> None:
    """Bounding the wait must not cost a second io_uring_enter when the op completes in time."""
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    ring = Ring(entries=8)
    try:
        buf = bytearray(4096)
        pin = ffi.from_buffer(buf)
        before = ring.counters()["enters"]
        for _ in range(50):
            assert ring.run(Op.READ, fd, addrs=address_of(pin), lens=4096, offsets=0, keep=[pin, buf]) == [4096]
        assert ring.counters()["enters"] - before == 50
        assert ring.counters()["submitted"] >= 50
    finally:
        ring.close()
        os.close(fd)
