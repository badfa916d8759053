"""A request whose submitting thread exited still completes, and another thread reaps it.

io_uring ties each request to the thread whose call submitted it.  When that thread
exits with a request still waiting on poll (a read of an empty pipe or socket), some
kernels end the request with ``-ECANCELED`` as it wakes: measured (session 41) on
Debian's 5.10 and 6.1 and on the host's 6.18; Debian's 6.12 completed it normally.
docs/api.md ("A thread that exits with I/O in flight") says so.  Either way the ring
must not lose it: it is reaped by the thread that waits for it, with one of those two
results (a lost completion would fail the wait's bound).  The result is printed, so
the suite's log records what each kernel did.
"""

from __future__ import annotations

import errno
import os
import platform
import threading

from uringstack.ring import Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.pins import pin_buffer

ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "the current position": a pipe has no offsets


def test_a_waiting_read_submitted_by_a_thread_that_exits_completes(ring: Ring, pipe: tuple[int, int]) -> None:
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
    got = ring.wait(started[0])
    print(f"kernel {platform.release()}: a read whose submitter exited: {got}")
    assert got in ([1], [-errno.ECANCELED]), got
    if got == [-errno.ECANCELED]:
        # cancelled before it read: the byte is still there for a read by a thread that lives
        batch = ring.submit(Op.READ, r, addrs=address_of(pin), lens=1, offsets=ANY_POS, keep=[buf, pin])
        assert ring.wait(batch) == [1]
    assert buf == b"y"
