"""A raising signal anywhere in ``Ring.close()`` still frees the ring, once, and keeps what the kernel may touch.

``close()`` cancels what is in flight, waits (bounded) for it, collects it, and
then frees the ring (``io_uring_queue_exit``: unmaps it and closes its
descriptor).  A signal handler that raises (Ctrl-C) can run at any point CPython
runs handlers at (tests/signal_points.py).  Cut short there, the ring is
already marked closed, so no later ``close()`` would free it: its descriptor and
mappings stayed for the life of the process.  Freed twice, the second close of
its descriptor number could close another file opened since.  And the buffers of
a batch the drain did not finish must outlive the ring (the kernel may still
write into them).

Each run sends a real signal at one point of the close path while a read the
kernel holds (an empty pipe) and a completed batch are in flight, then checks:
the ring's descriptor is closed, the held read's buffers are kept (its batch is
finished or orphaned), and a second ``close()`` returns.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

import uringstack.ring as ring_module
from tests.signal_points import Interrupt, code_of, signal_at, sweep
from uringstack.ring import Batch, Ring
from uringstack.ring.buffers import address_of
from uringstack.ring.flags import Op
from uringstack.ring.native import ffi

_NAMES = ("close", "_drain_all_locked", "_collect_done", "_exit_locked")
CLOSE = code_of(Batch.release, *(f for name in _NAMES if (f := getattr(Ring, name, None)) is not None))


def _is_ring(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[io_uring]"
    except FileNotFoundError:
        return False


class CountingExits:
    """The binding, counting ``io_uring_queue_exit`` calls (a second one for the same ring
    would close its descriptor number again: by then possibly another file's)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.exits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def io_uring_queue_exit(self, ring: Any) -> None:
        self.exits += 1
        self._real.io_uring_queue_exit(ring)


def test_a_signal_anywhere_in_close_frees_the_ring_once_and_keeps_held_buffers(
    hot_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingExits(ring_module.lib)
    monkeypatch.setattr(ring_module, "lib", counting)

    def once(at: int) -> str | None:
        r, w = os.pipe()
        ring = Ring(entries=16)
        counting.exits = 0
        ring.close_timeout = 2.0
        fd = ring.fd
        try:
            buf = bytearray(8)
            pin = ffi.from_buffer(buf, require_writable=True)
            ring.submit(Op.READ, hot_fd, addrs=address_of(pin), lens=8, offsets=0, keep=[pin, buf])
            held_buf = bytearray(8)
            held_pin = ffi.from_buffer(held_buf, require_writable=True)
            held = ring.submit(Op.READ, r, addrs=address_of(held_pin), lens=8, offsets=0, keep=[held_pin, held_buf])
            assert _is_ring(fd)
            with signal_at(CLOSE, at) as sent, contextlib.suppress(Interrupt):
                ring.close()
            if not ring.closed:  # cut short before it began (at its entry): nothing was done yet
                ring.close()
            assert not _is_ring(fd), f"a signal {sent.where} left the ring's descriptor open"
            kept = held.finished or any(b is held for b in ring_module._ORPHANED)
            assert kept, f"a signal {sent.where}: the held read is neither finished nor kept"
            ring.close()  # a second close returns (and frees nothing twice)
            # A repeat of the freeing step, as despite_signals makes after a signal that
            # landed right after it (the counting wrapper, a Python function, hides that
            # point from the sweep), frees nothing twice either.
            ring._exit_locked()
            assert counting.exits == 1, f"a signal {sent.where}: the ring was freed {counting.exits} time(s)"
            return sent.where
        finally:
            os.close(r)
            os.close(w)

    assert sweep(once) > 5
