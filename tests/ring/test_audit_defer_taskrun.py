"""A DEFER_TASKRUN ring's completions are found by ``reap``/``try_reap``, not only by a blocking wait.

With ``IORING_SETUP_DEFER_TASKRUN`` the kernel posts a completion only when
the submitting task enters the kernel with GETEVENTS; a non-blocking reap
learns that such work is pending from ``IORING_SQ_TASKRUN`` in the SQ flags,
which the kernel sets only with ``IORING_SETUP_TASKRUN_FLAG``.  Without that
flag ``try_reap`` (the asyncio reaper's call) and ``reap`` found nothing,
ever: a batch that completed stayed undelivered until someone blocked in
``wait``.  A read from a pipe completes through task work once written to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from tests.requires import skip_without
from uringstack.errors import RingSetupError
from uringstack.ring import Batch, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op, SetupFlag
from uringstack.ring.native import ffi


@pytest.mark.parametrize("how", ["try_reap", "reap"])
def test_a_completed_batch_is_reaped_without_a_blocking_wait(pipe: tuple[int, int], how: str) -> None:
    try:
        ring = Ring(entries=8, flags=SetupFlag.DEFER_TASKRUN)
    except RingSetupError as exc:
        skip_without(f"a kernel that accepts IORING_SETUP_DEFER_TASKRUN (6.1+): {exc}")
    try:
        if not ring.flags & SetupFlag.DEFER_TASKRUN:
            skip_without(f"a kernel that accepts IORING_SETUP_DEFER_TASKRUN (6.1+): dropped {ring.dropped}")
        r, w = pipe
        buf = bytearray(8)
        pin = ffi.from_buffer(buf)
        batch = ring.submit(Op.READ, r, addrs=address_of(pin), lens=8, offsets=0, keep=[pin, buf])
        os.write(w, b"12345678")
        reap: Callable[[], list[Batch]] = getattr(ring, how)
        got: list[Batch] = []
        deadline = time.monotonic() + 3
        while not got and time.monotonic() < deadline:
            got = reap()
            time.sleep(0.01)
        assert got == [batch], f"{how} never found the completed read"
        assert batch.results == [8] and buf == b"12345678"
    finally:
        ring.close()
