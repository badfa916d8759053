"""An SQE flag that suppresses the completion is refused before submission.

With ``IOSQE_CQE_SKIP_SUCCESS`` the kernel posts no CQE for an op that
succeeds: the ring's bookkeeping would wait for a completion that never
comes, report "a hung device" after ``Ring.wait_timeout``, keep the batch's
buffers for the life of the process and make ``close()`` time out.  Both
submission paths (``us_submit_batch``, ``us_rw_one``) refuse it with EINVAL,
with nothing reaching the kernel.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from uringstack.errors import SubmissionError
from uringstack.ring import MAX_SLOTS, Ring
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

IOSQE_CQE_SKIP_SUCCESS = 1 << 6  # include/uapi/linux/io_uring.h


def _untouched(ring: Ring) -> None:
    assert ring.inflight == 0 and ring._inflight == {}
    assert len(ring._free_slots) == MAX_SLOTS
    assert ring.counters()["submitted"] == 0


@pytest.mark.parametrize("wait", [False, True])
def test_a_batch_with_cqe_skip_success_is_refused(ring: Ring, wait: bool) -> None:
    ring.wait_timeout = 3.0
    ring.close_timeout = 1.0
    with pytest.raises(SubmissionError) as info:
        ring.submit(Op.NOP, -1, n=3, sqe_flags=[0, IOSQE_CQE_SKIP_SUCCESS, 0], wait=wait)
    assert info.value.errno == errno.EINVAL
    _untouched(ring)
    assert ring.run(Op.NOP, -1, n=2) == [0, 0]  # the ring goes on working


def test_a_single_op_with_cqe_skip_success_is_refused(ring: Ring, tmp_path: Path) -> None:
    ring.wait_timeout = 3.0
    ring.close_timeout = 1.0
    path = tmp_path / "f"
    path.write_bytes(b"x" * 64)
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(64)
        pin = ffi.from_buffer(buf)
        with pytest.raises(SubmissionError) as info:
            ring.rw_one(Op.READ, fd, pin, 64, 0, IOSQE_CQE_SKIP_SUCCESS, 0, pin)
        assert info.value.errno == errno.EINVAL
        _untouched(ring)
        assert ring.rw_one(Op.READ, fd, pin, 64, 0, 0, 0, pin) == 64
    finally:
        os.close(fd)
