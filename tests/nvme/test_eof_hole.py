"""Known defect iopoll-file-read-eof-zero: a polled O_DIRECT read across the end of a file over a hole.

On Debian's 5.10 and 6.1 such a read on an IOPOLL ring returns 0 instead of
the bytes up to the end of the file (ext4 zero-fills a hole without a bio and
the polled completion loses the count); the caller takes it for the end of the
file.  Found by tests/fileobj/test_differential.py on 5.10, where ``readline``
stopped 49,559 bytes short.  The probe's table rules the pattern out there, so
the storage ring serves files on a pollable disk; block devices stay polled.
Both tests run on every kernel of the VM matrix: the first proves the public
API reads to the end, the second that the table is right for this kernel (the
gate bypassed, the defect shows exactly where the table says it applies).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import uringstack
from uringstack import open_stack
from uringstack.probe.defects import POLLED_FILE_READS
from uringstack.probe.model import Capabilities
from uringstack.ring.buffers import aligned_buffer
from uringstack.stack import Stack

from .conftest import BLK

pytestmark = pytest.mark.nvme

SIZE = 9_666_967  # ends inside a block
READS = ((8 << 20, 4 << 20), (9_617_408, 100 << 10))  # each across the end: SIZE - offset bytes


def _hole_file(directory: Path) -> Path:
    path = directory / "eof-hole"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, SIZE)  # all hole
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with open_stack(overrides={"core.cores": [0]}) as s:
        yield s


def test_reads_across_the_end_of_a_file_return_the_bytes_up_to_it(
    stack: Stack, mounted_ext4: Path, caps: Capabilities
) -> None:
    path = _hole_file(mounted_ext4)
    defect = caps.defect_ruling_out(POLLED_FILE_READS)
    with stack.open(path, direct=True) as h:
        if defect is not None:
            assert h.backend == "uring", h.backend_reason  # (the storage ring)
        else:
            assert h.backend == "iopoll", h.backend_reason
        for offset, size in READS:
            assert h.read_into(aligned_buffer(size), offset) == SIZE - offset
            assert h.start_read_many([offset], [aligned_buffer(size)]).wait() == [SIZE - offset]
    with uringstack.open(path, "rb", direct=True, stack=stack) as f:
        f.seek(1 << 20)
        assert len(f.readline()) == SIZE - (1 << 20)  # (no newline in a hole: to the end)
    with open_stack(overrides={"core.cores": [0]}) as s, s.open(mounted_ext4 / "hello") as h:
        assert h.backend == "uring"  # buffered: never polled


def test_the_defect_table_is_right_for_this_kernel(mounted_ext4: Path, caps: Capabilities) -> None:
    """With the gate bypassed ([core] accept_kernel_defects), the polled read comes back
    0 exactly on the kernels the table names, and right on the others."""
    path = _hole_file(mounted_ext4)
    ruled_out = caps.defect_ruling_out(POLLED_FILE_READS)
    accept = [ruled_out.id] if ruled_out is not None else []
    overrides = {"core.cores": [0], "core.accept_kernel_defects": accept}
    with open_stack(overrides=overrides) as s, s.open(path, direct=True) as h:
        assert h.backend == "iopoll", h.backend_reason
        got = [h.start_read_many([offset], [aligned_buffer(size)]).wait()[0] for offset, size in READS]
    want = [SIZE - offset for offset, _ in READS]
    if ruled_out is None:
        assert got == want, f"kernel {os.uname().release}: the table does not name it, yet reads came back {got}"
    else:
        assert got == [0, 0], f"kernel {os.uname().release}: the table names {ruled_out.id}, yet reads gave {got}"


def test_block_devices_stay_polled_and_read_to_their_end(stack: Stack) -> None:
    """The table rules out files only: a polled read across the end of the namespace's block
    device (which has no holes) returns the bytes up to its end on every kernel."""
    with stack.open(BLK, direct=True, writable=False) as h:
        assert h.backend == "iopoll", h.backend_reason
        end = h.size()
        for before_end, size in ((4096, 8192), (4096, 4 << 20), (0, 4096)):
            got = h.start_read_many([end - before_end], [aligned_buffer(size)]).wait()[0]
            assert got == before_end, (end, before_end, size, got)
