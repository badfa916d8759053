"""The kernel fact docs/api.md states for a thread that exits with I/O in flight.

io_uring ties each request to the thread whose call submitted it.  When that thread
exits, the kernel ends its requests still waiting on poll (a read of an empty pipe or
socket) with ``-ECANCELED`` when they wake (5.10's ``__io_async_wake`` cancels when
its task-work add fails; later kernels' poll checks ``PF_EXITING``).  Found while
chasing ``ECANCELED`` reads in stress runs (session 41).  This test pins the
claim on every kernel the suite runs on (the host, and the NVMe VM's 5.10, 6.1 and
6.12): if a kernel behaved otherwise, the docs would be wrong there.
"""

from __future__ import annotations

import errno
import os
import threading

from uringstack.ring import Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.pins import pin_buffer

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "the current position": a pipe has no offsets


def test_a_waiting_read_submitted_by_a_thread_that_exits_is_cancelled(ring: Ring, pipe: tuple[int, int]) -> None:
    r, w = pipe
    buf = bytearray(1)
    pin = pin_buffer(buf, True)
    started = []
    submitter = threading.Thread(
        target=lambda: started.append(
            ring.submit(Op.READ, r, addrs=address_of(pin), lens=1, offsets=ANY_POS, keep=[buf, pin])
        )
    )
    submitter.start()
    submitter.join()  # exited with its read waiting for data
    os.write(w, b"y")
    assert ring.wait(started[0]) == [-errno.ECANCELED]
    # The same read submitted by a thread that lives gets its byte.
    batch = ring.submit(Op.READ, r, addrs=address_of(pin), lens=1, offsets=ANY_POS, keep=[buf, pin])
    assert ring.wait(batch) == [1]
    assert buf == b"y"  # (the first byte: the cancelled read took nothing)
