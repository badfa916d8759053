"""A submission the kernel refuses leaves nothing queued and nothing counted in flight.

liburing publishes SQEs to the kernel's SQ tail before ``io_uring_enter``; when
that call fails (not EAGAIN/EBUSY/EINTR, which are retried) the SQEs stay in
the SQ, so the next successful enter of any later call would submit them then,
and the bookkeeping counted them in flight: the caller's wait failed with an
unrelated error (``io_uring_enter(GETEVENTS)``, or ENOENT), the batch stayed
in flight for good and ``close()`` failed.  A ring created with
``IORING_SETUP_R_DISABLED`` (never enabled) refuses every submission
(EBADFD): the injected fault.
"""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Callable, Iterator

import pytest

from uringstack.errors import SubmissionError
from uringstack.ring import MAX_SLOTS, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op, SetupFlag
from uringstack.ring.native import ffi


def _settled(ring: Ring) -> None:
    assert ring.inflight == 0 and ring._inflight == {}
    assert sorted(ring._free_slots) == list(range(MAX_SLOTS))


@pytest.fixture
def disabled_ring() -> Iterator[Ring]:
    ring = Ring(entries=4, flags=SetupFlag.R_DISABLED)
    ring.wait_tick = 0.1
    ring.wait_timeout = 2.0
    ring.close_timeout = 1.0
    yield ring
    ring.close()


def _batch(n: int, wait: bool) -> Callable[[Ring], object]:
    return lambda ring: ring.submit(Op.NOP, -1, n=n, wait=wait)


def _single(ring: Ring) -> object:
    buf = bytearray(8)
    pin = ffi.from_buffer(buf)
    return ring.rw_one(Op.READ, 0, pin, 8, 0, 0, 0, pin)


@pytest.mark.parametrize(
    "call",
    [_batch(1, False), _batch(3, True), _batch(12, False), _batch(12, True), _single],
    ids=["one-op batch", "waited batch", "batch of 3 ring sizes", "waited batch of 3 ring sizes", "rw_one"],
)
def test_a_refused_submission_is_a_submission_error_and_leaves_the_ring_clean(
    disabled_ring: Ring, call: Callable[[Ring], object]
) -> None:
    ring = disabled_ring
    if not ring.flags & SetupFlag.R_DISABLED:
        pytest.fail(f"the kernel dropped R_DISABLED: {ring.dropped}")
    with pytest.raises(SubmissionError) as info:
        call(ring)
    assert info.value.errno == errno.EBADFD
    _settled(ring)
    ring.close()  # no op to wait for: no error


# An op the helper cannot prepare, in the middle of a batch: a clear error, nothing left queued.
#
# ``us_submit_batch`` prepares the ops one by one and submits whenever the SQ is
# full, so a batch larger than the ring is partly in the kernel when op *i* turns
# out to be one it cannot prepare (an opcode the kernel has but uringstack does
# not build, here ``IORING_OP_OPENAT``).  The ops already submitted must stay
# owned and awaited; those only queued since must not reach the kernel (the
# helper's contract: on error nothing not yet submitted is); the caller gets
# ``SubmissionError(EINVAL)``.  Before, the helper submitted the queued ops in a
# follow-up submission whose error it ignored: on a ring that refuses
# submissions they stayed queued and counted in flight, the caller's wait ran
# into its timeout, and the batch was never finished.
OPENAT = 18  # IORING_OP_OPENAT: below IORING_OP_LAST, but not an op the helper prepares


def test_an_unpreparable_op_on_a_ring_that_refuses_submissions(disabled_ring: Ring) -> None:
    ring = disabled_ring
    if not ring.flags & SetupFlag.R_DISABLED:
        pytest.fail(f"the kernel dropped R_DISABLED: {ring.dropped}")
    with pytest.raises(SubmissionError) as info:
        ring.submit([Op.NOP, Op.NOP, OPENAT], -1)
    assert info.value.errno == errno.EINVAL
    _settled(ring)
    ring.close()  # nothing to wait for: no error


def test_ops_submitted_before_an_unpreparable_op_are_awaited_the_rest_never_run(tmp_path: pathlib.Path) -> None:
    ring = Ring(entries=4)
    ring.wait_tick = 0.2
    ring.wait_timeout = 3.0
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # ops 0..3 fill the SQ and are submitted when op 4 needs an SQE; 4 is only queued (with a
        # sixth op the CQ cap, Ring.cq_cap = 6 here, would submit it before the OPENAT's SQE)
        n = 5
        bufs = [bytes([65 + i]) * 8 for i in range(n)]
        pins = [ffi.from_buffer(b) for b in bufs]
        with pytest.raises(SubmissionError) as info:
            ring.submit(
                [Op.WRITE] * n + [OPENAT],
                fd,
                addrs=[address_of(p) for p in pins] + [0],
                lens=[8] * n + [0],
                offsets=[8 * i for i in range(n)] + [0],
                keep=[pins, bufs],
            )
        assert info.value.errno == errno.EINVAL
        _settled(ring)  # the submitted writes were awaited before the error was raised
        assert os.pread(fd, 64, 0) == b"".join(bufs[:4])  # the queued ones never reached the kernel
        ring.submit(Op.NOP, -1, wait=True)
        ring.reap()
        _settled(ring)
    finally:
        os.close(fd)
        ring.close()
