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
from collections.abc import Callable, Iterator

import pytest

from uringstack.errors import SubmissionError
from uringstack.ring import MAX_SLOTS, Ring
from uringstack.ring.flags import Op, SetupFlag
from uringstack.ring.native import ffi


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
    assert ring.inflight == 0 and ring._inflight == {}
    assert sorted(ring._free_slots) == list(range(MAX_SLOTS))
    ring.close()  # no op to wait for: no error
