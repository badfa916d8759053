"""The fallback backend holds a queued op's buffer as io_uring's pins do.

``start_read_many``/``start_write_many`` queue their ops on a thread pool.
Until session 27 the queue held the caller's objects without a buffer
export: a bytearray could be cleared under a queued read (``wait()`` then
returned 0: a silent empty read), a memoryview or mmap released or closed
(a ``ValueError`` from the pool thread), and a registered lease released
while a queued read still wrote into it went to the next lease at once.
Now each queued op holds an export until it ran (``BufferError`` for the
caller, as on io_uring) and a lease it uses counts as in flight.
"""

from __future__ import annotations

import mmap
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.ring.buffers import RegisteredBuffer
from uringstack.stack import open_stack

from .conftest import GatedReads

SIZE = 1 << 16
DATA = os.urandom(SIZE)

MAKERS: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "bytearray.clear": (lambda: bytearray(SIZE), lambda b: b.clear()),
    "memoryview.release": (lambda: memoryview(bytearray(SIZE)), lambda b: b.release()),
    "mmap.close": (lambda: mmap.mmap(-1, SIZE), lambda b: b.close()),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_queued_reads_buffer_cannot_be_freed_until_it_ran(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads, kind: str
) -> None:
    make, free = MAKERS[kind]
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [0]}) as stack, stack.open(path) as h:
        buf = make()
        pending = h.start_read_many([0], [buf])
        with pytest.raises(BufferError):
            free(buf)
        gated_fallback_reads.gate.set()
        assert pending.wait() == [SIZE]
        assert bytes(buf) == DATA
        free(buf)  # let go once the op ran, before wait() returned


def test_a_registered_lease_in_a_queued_read_is_not_handed_out_again(
    tmp_path: pathlib.Path, gated_fallback_reads: GatedReads
) -> None:
    """A lease of an io_uring stack's registered buffers, read into by a fallback handle:
    released while the read is queued, its memory must not go to the next lease."""
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with open_stack(overrides={"core.cores": [0], "fixedbuf.mode": "auto", "fixedbuf.count": 8}) as uring:
        fallback = open_stack(overrides={"core.backend": "fallback", "core.cores": [0]})
        with fallback, uring.open(path) as registering, fallback.open(path) as h:
            (lease,) = registering.lease_buffers(1, SIZE)
            if not isinstance(lease, RegisteredBuffer):
                skip_without(f"registered buffers (fixedbuf on an io_uring stack; leased {type(lease).__name__})")
            memory = lease.addr
            pending = h.start_read_many([0], [lease])
            registering.release_buffers([lease])
            others = registering.lease_buffers(7, SIZE)
            assert memory not in {b.addr for b in others}, "the queued read's memory was leased again"
            with pytest.raises(BufferError):  # all 8 leased or held by the queued read
                registering.lease_buffers(1, SIZE)
            gated_fallback_reads.gate.set()
            assert pending.wait() == [SIZE]
            again = registering.lease_buffers(1, SIZE)  # free once the read ran
            assert again[0].addr == memory
            registering.release_buffers(others + again)
