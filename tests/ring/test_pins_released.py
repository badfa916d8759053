"""Pins are let go when a call raises after pinning (session 28).

A pin left in the raising frame, held by a caller that keeps the exception,
crashed the interpreter when the garbage collector freed a memoryview of an
mmap before cffi's pin of it (a cffi bug; NVMe probe: 3 of 3 runs of a
passthrough handle's zero-length write segfaulted in ``gc.collect()``). The
tests/nvme group runs that case in the VM; here, the export is gone: an mmap
with an export cannot be closed.
"""

from __future__ import annotations

import mmap
import pathlib

import pytest

from uringstack.errors import AlignmentError
from uringstack.ring.buffers import pin_buffers
from uringstack.stack import Stack, open_stack


def test_pin_buffers_lets_go_of_what_it_pinned_when_a_later_buffer_is_refused() -> None:
    m = mmap.mmap(-1, 4096)
    view = memoryview(m)[:100]
    with pytest.raises(TypeError) as kept:  # (the error kept, with its frames)
        pin_buffers([view, 42], writable=True)
    view.release()
    m.close()  # BufferError while a pin still exports it
    del kept


@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_refused_o_direct_buffer_keeps_no_export(tmp_path: pathlib.Path, backend: str) -> None:
    (tmp_path / "d").write_bytes(b"\0" * 8192)
    stack: Stack
    with (
        open_stack(overrides={"core.backend": backend, "core.cores": [0]}) as stack,
        stack.open(tmp_path / "d", direct=True) as h,
    ):
        for call in (lambda v: h.read_many([0], [v]), lambda v: h.prepare_reads([v]), lambda v: h.read_into(v, 0)):
            m = mmap.mmap(-1, 8192)
            view = memoryview(m)[:100]  # a length O_DIRECT refuses, found after the pin
            with pytest.raises(AlignmentError) as kept:  # (the error kept, with its frames)
                call(view)
            view.release()
            m.close()
            del kept
