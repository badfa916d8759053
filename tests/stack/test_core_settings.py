"""``[core]`` settings that change what a stack builds: ``direct`` and ``ring_entries``."""

from __future__ import annotations

import fcntl
import os
import pathlib

import pytest

from uringstack.errors import AlignmentError
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import open_stack


def test_core_direct_is_the_default_of_open(tmp_path: pathlib.Path) -> None:
    """``core.direct = true``: ``Stack.open`` without ``direct=`` opens with O_DIRECT
    (aligned I/O works, misaligned is refused with the reason); false: it does not."""
    path = tmp_path / "f"
    path.write_bytes(os.urandom(8192))
    with open_stack(overrides={"core.cores": [0], "core.direct": True}) as stack, stack.open(path) as h:
        assert h.direct
        assert fcntl.fcntl(h.fd, fcntl.F_GETFL) & os.O_DIRECT  # the descriptor's own flags
        buf = aligned_buffer(4096)
        assert h.read_into(buf, 4096) == 4096 and bytes(buf) == path.read_bytes()[4096:]
        with pytest.raises(AlignmentError):
            h.read_into(bytearray(100), 1)
    with open_stack(overrides={"core.cores": [0], "core.direct": False}) as stack, stack.open(path) as h:
        assert not h.direct and not fcntl.fcntl(h.fd, fcntl.F_GETFL) & os.O_DIRECT
        small = bytearray(100)
        assert h.read_into(small, 1) == 100 and bytes(small) == path.read_bytes()[1:101]


def test_core_ring_entries_sizes_the_storage_rings() -> None:
    with open_stack(overrides={"core.cores": [0], "core.ring_entries": 16, "sqpoll.mode": "off"}) as stack:
        assert stack.workers[0].rings["storage"].sq_entries == 16
    with open_stack(overrides={"core.cores": [0], "core.ring_entries": 64, "sqpoll.mode": "off"}) as stack:
        assert stack.workers[0].rings["storage"].sq_entries == 64
