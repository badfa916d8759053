"""A closed NVMe passthrough handle's backend object (``handle.io``) refuses I/O with
:class:`RingClosedError`, as every other backend does (tests/stack/test_raw_io_closed.py,
test_closed_io.py), not with ``UringIOError(EBADF)``.

Runs inside ../shared/nvme-vm (scripts/test-nvme.sh), on kernels where the probe allows
passthrough.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from uringstack import open_stack
from uringstack.errors import RingClosedError
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.io_backend import PreparesRW

from .conftest import NG

pytestmark = pytest.mark.nvme

BS = 4096
CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "start_rw read": lambda io, buf: io.start_rw(False, [0], [buf]),
    "start_rw write, wait": lambda io, buf: io.start_rw(True, [0], [buf], wait=True),
    "start_sync": lambda io, buf: io.start_sync(True, wait=True),
    "start_write_durable dsync": lambda io, buf: io.start_write_durable(0, buf, "dsync", wait=True),
    "start_write_durable fdatasync": lambda io, buf: io.start_write_durable(0, buf, "fdatasync", wait=True),
}


@pytest.mark.parametrize("what", ["handle", "stack"])
def test_a_closed_passthrough_file_io_raises_ring_closed(passthrough: None, what: str) -> None:
    s = open_stack(overrides={"core.cores": [0]})
    try:
        h = s.open(NG)
        assert h.backend == "nvme_passthrough", h.backend
        io = h.io
        buf = aligned_buffer(BS)
        assert isinstance(io, PreparesRW)
        prepared = io.prepare_rw(False, [buf])
        for call in CALLS.values():
            call(io, buf).wait()  # works while open
        prepared.start([0], wait=True).wait()
        if what == "handle":
            h.close()
        else:
            s.close()
        for name, call in CALLS.items():
            with pytest.raises(RingClosedError, match=f"{NG} is closed"):
                call(io, buf)
                pytest.fail(f"{name} on a closed FileIO did not raise")
        with pytest.raises(RingClosedError, match=f"{NG} is closed"):
            prepared.start([0], wait=True)
    finally:
        s.close()
