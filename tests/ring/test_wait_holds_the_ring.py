"""A known limit, kept as a strict xfail: a thread blocked in a wait holds its ring.

``Ring.wait`` (every synchronous handle call, ``pending.wait()``) and
``Ring.rw_one`` (a single read or write: ``read_into``, ``FileIO``) wait in the
kernel holding the ring's lock, which every submission and reap on that ring
takes too.  So blocking calls from several threads on handles that share a
worker's ring run one at a time, wait included: measured in session 38, four
threads of 4 KiB O_DIRECT ``read_into`` on one handle (one worker) made 5-6k
reads/s, as many as one thread, where four threads of ``os.preadv`` made 22k;
and an op the device never completes holds back every other thread's
submission on that ring until it completes or its wait gives up
(``core.wait_timeout_s``, 60 s).  docs/api.md ("Handles") says what to use
instead.  The tests fail (XPASS, strict) once waits let go of the ring.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from uringstack.ring import Ring
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets
SECOND_THREAD_S = 3.0  # a NOP takes microseconds, even under the VM's emulation

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.xfail(
        strict=True,
        reason="a blocked wait holds the ring's lock: another thread's call on the ring waits for the "
        "waited op (docs/api.md, Handles)",
    ),
]


def _second_thread_finishes(ring: Ring, other: Callable[[], object]) -> bool:
    """Whether *other* ends within SECOND_THREAD_S in a second thread while a first thread waits
    on *ring* for a read from an empty pipe (let go afterwards, whatever the answer)."""
    r, w = os.pipe()
    buf = bytearray(1)
    pin = ffi.from_buffer(buf, require_writable=True)
    batch = ring.submit(Op.READ, r, addrs=int(ffi.cast("uintptr_t", pin)), lens=1, offsets=ANY_POS, keep=[pin])
    waiting = threading.Thread(target=ring.wait, args=(batch,))
    done = threading.Event()
    second = threading.Thread(target=lambda: (other(), done.set()))
    try:
        waiting.start()
        # the first thread is in its wait (or about to be: either way it holds the ring for it)
        waiting.join(0.3)
        second.start()
        return done.wait(SECOND_THREAD_S)
    finally:
        os.write(w, b"x")
        waiting.join(10)
        second.join(10)
        os.close(r)
        os.close(w)


def test_another_threads_submission_does_not_wait_for_a_blocked_wait() -> None:
    ring = Ring(entries=8)
    try:
        assert _second_thread_finishes(ring, lambda: ring.run(Op.NOP, -1))
    finally:
        ring.close()


def test_another_threads_single_op_does_not_wait_for_a_blocked_wait(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(b"d" * 4096)
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(4096)
    pin = ffi.from_buffer(buf, require_writable=True)
    ring = Ring(entries=8)
    try:
        assert _second_thread_finishes(ring, lambda: ring.rw_one(Op.READ, fd, pin, 4096, 0, 0, 0, pin))
    finally:
        ring.close()
        os.close(fd)
