"""``FileHandle.ring``: the worker's ring of an io_uring backend, ``None`` for a backend without one."""

from __future__ import annotations

import pathlib

from uringstack.ring.io_backend import RingFileIO
from uringstack.stack import Stack
from uringstack.wal.faults import WrappedFileIO


def test_ring_is_the_workers_storage_ring_or_none(stack: Stack, tmp_path: pathlib.Path) -> None:
    with stack.open(tmp_path / "f", create=True) as h:
        if h.backend == "uring":
            assert isinstance(h.io, RingFileIO)
            assert h.ring is h.worker.rings["storage"]
        else:
            assert not isinstance(h.io, RingFileIO)
            assert h.ring is None


def test_a_backend_without_a_ring_attribute_has_no_ring(stack: Stack, tmp_path: pathlib.Path) -> None:
    # A wrapper that forwards the FileIO calls but has no `ring` is a plain FileIO.
    with stack.open(tmp_path / "f", create=True) as h:
        assert not isinstance(WrappedFileIO(h.io), RingFileIO)
