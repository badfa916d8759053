"""A ring's close cancels what is in flight at once, on every kernel of the matrix.

Before 5.19 the kernel refuses ``IORING_ASYNC_CANCEL_ANY`` (-EINVAL): a close
that cancelled with it alone cancelled nothing there, and on Debian 11's 5.10
every close with an op that could not complete on its own (a read of an idle
pipe, a hung device) waited its whole ``close_timeout`` and reported the op
lost.  Such kernels get a cancel per op (``uringstack.ring.CANCEL_EACH``).
This group runs on 5.10, 6.1 and 6.12 (scripts/test-nvme.sh).
"""

from __future__ import annotations

import os
import time

import pytest

from uringstack.ring import Ring
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

pytestmark = pytest.mark.nvme

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets


def test_close_cancels_reads_of_an_idle_pipe_at_once() -> None:
    r, w = os.pipe()
    try:
        ring = Ring(entries=8)
        ring.close_timeout = 20.0
        bufs = [bytearray(1) for _ in range(3)]
        pins = [ffi.from_buffer(b, require_writable=True) for b in bufs]
        batches = [
            ring.submit(Op.READ, r, addrs=int(ffi.cast("uintptr_t", pin)), lens=1, offsets=ANY_POS, keep=[pin])
            for pin in pins
        ]
        began = time.monotonic()
        ring.close()  # raised ETIMEDOUT after close_timeout on 5.10, the reads "lost"
        took = time.monotonic() - began
        assert took < 5, f"close took {took:.1f} s: the reads were not cancelled"
        assert all(b.finished and b.results == [-125] for b in batches), [b.results for b in batches]
    finally:
        os.close(r)
        os.close(w)
