"""A closed IOPOLL handle's backend object (``handle.io``) refuses I/O.

The host's tests/stack/test_raw_io_closed.py covers the uring and fallback
backends; the IOPOLL FileIO sends syncs and RWF_DSYNC writes to the storage
ring by plain fd, so after close that number may already be another file's.
Runs inside ../shared/nvme-vm (scripts/test-nvme.sh).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from uringstack import open_stack
from uringstack.errors import RingClosedError
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack

from .conftest import BLK

pytestmark = pytest.mark.nvme

BS = 4096
CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "start_rw write": lambda io, buf: io.start_rw(True, [0], [buf], wait=True),
    "start_sync": lambda io, buf: io.start_sync(True, wait=True),
    "start_write_durable dsync": lambda io, buf: io.start_write_durable(0, buf, "dsync", wait=True),
    "start_write_durable fdatasync": lambda io, buf: io.start_write_durable(0, buf, "fdatasync", wait=True),
}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0]}) as s:
        yield s


@pytest.mark.parametrize("call", list(CALLS))
def test_a_closed_iopoll_file_io_refuses_io(stack: Stack, call: str) -> None:
    h = stack.open(BLK, direct=True)
    assert h.backend == "iopoll", h.backend
    io = h.io
    buf = aligned_buffer(BS)
    CALLS[call](io, buf)  # works while open (and fills any cached state)
    h.close()
    with pytest.raises(RingClosedError, match="closed"):
        CALLS[call](io, buf)
