"""O_DIRECT read-ahead: a prepared batch's buffers are reused only after its completion was reaped.

An earlier read-ahead handed a buffer to a new read while the previous read
into it was still in flight, and tests hung.  Here every prepared batch the
read-ahead makes is wrapped in a spy that records each start and each reap:
starting a batch again before the previous run's ``wait()`` returned is a
violation, whatever the timing of the device.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.fileobj.stream import CHUNK, PER_BATCH
from uringstack.stack import Stack

from .conftest import open_direct_or_skip

pytestmark = pytest.mark.timeout(60)


class SpyPending:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reaped = False

    def done(self) -> bool:
        return bool(self.inner.done())

    def wait(self) -> list[int]:
        got: list[int] = self.inner.wait()
        self.reaped = True
        return got


class SpyPrepared:
    """A PreparedIO that logs restarts of buffers whose last run was never reaped."""

    def __init__(self, inner: Any, violations: list[str], starts: list[Sequence[int]]) -> None:
        self.inner = inner
        self.buffers = inner.buffers
        self.n = inner.n
        self.last: SpyPending | None = None
        self.violations = violations
        self.starts = starts

    def start(self, offsets: Sequence[int]) -> SpyPending:
        if self.last is not None and not self.last.reaped:
            self.violations.append(f"restarted at {list(offsets)} before the run in flight was reaped")
        self.starts.append(list(offsets))
        self.last = SpyPending(self.inner.start(offsets))
        return self.last

    def close(self) -> None:
        self.inner.close()


def _open_spied(path: pathlib.Path, mode: str, stack: Stack) -> tuple[Any, list[str], list[Sequence[int]]]:
    f = open_direct_or_skip(path, mode, stack)
    handle = f.raw.handle
    real = handle.prepare_reads
    violations: list[str] = []
    starts: list[Sequence[int]] = []

    def prepare_reads(buffers: Any) -> SpyPrepared:
        return SpyPrepared(real(buffers), violations, starts)

    handle.prepare_reads = prepare_reads
    return f, violations, starts


def test_buffers_are_reused_only_after_their_completion_was_reaped(tmp_path: pathlib.Path, stack: Stack) -> None:
    path = tmp_path / "f"
    model = bytearray(os.urandom(5 * CHUNK * PER_BATCH + 12345))
    path.write_bytes(model)
    f, violations, starts = _open_spied(path, "r+b", stack)
    with f:

        def read(n: int) -> None:
            pos = f.tell()
            assert f.read(n) == bytes(model[pos : pos + n]), f"read of {n} at {pos}"

        for _ in range(6):
            read(300_000)  # sequential: batches started ahead, several in flight
        f.seek(len(model) // 2 + 4096)  # away from the window while batches are in flight
        for _ in range(3):
            read(200_000)
        f.seek(1000)  # back, again with reads in flight
        read(100_000)
        read(CHUNK + 1)
        pos = f.tell()
        f.seek(pos)
        f.write(b"w" * 8192)  # a write invalidates the window (its reads in flight)
        f.flush()
        model[pos : pos + 8192] = b"w" * 8192
        f.seek(pos - 4096)
        while f.tell() < len(model):
            read(250_000)
        assert f.read(10) == b""  # at end of file: again later
        assert f.read(10) == b""
    assert len(starts) > 3 * 3, starts  # the batches were restarted many times: the rule was exercised
    assert violations == []


def test_read_ahead_starts_no_read_past_the_end_of_the_file(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A small O_DIRECT file costs one read-ahead request, not a whole window of them past its end."""
    path = tmp_path / "f"
    data = os.urandom(10_000)
    path.write_bytes(data)
    f, violations, starts = _open_spied(path, "rb", stack)
    with f:
        assert f.read() == data
        assert f.read(10) == b""
    assert [off for batch in starts for off in batch] == [0], starts
    assert violations == []


@pytest.mark.parametrize("piece", [1_000_000, CHUNK + 4096, 3 * 4096])
def test_a_read_across_the_end_of_the_window_at_the_end_of_the_file(
    tmp_path: pathlib.Path, stack: Stack, piece: int
) -> None:
    """A file of whole chunks read in pieces that do not divide them: the read that crosses
    the end of the window's last batch, which ends at the end of the file, returns what is
    left (before: the window restarted at its start, IndexError)."""
    path = tmp_path / "f"
    data = os.urandom(2 * CHUNK * PER_BATCH)
    path.write_bytes(data)
    f, violations, starts = _open_spied(path, "rb", stack)
    with f:
        got = []
        while chunk := f.read(piece):
            got.append(chunk)
        assert b"".join(got) == data
    assert violations == []
    assert sorted(off for batch in starts for off in batch) == list(range(0, len(data), CHUNK))


def test_read_ahead_sees_data_appended_after_it_reached_the_end(tmp_path: pathlib.Path, stack: Stack) -> None:
    """The window ends where the file ended when it was read ahead; a read there asks the kernel again,
    so data appended by another descriptor is returned at once, as the built-in returns it."""
    path = tmp_path / "f"
    first = os.urandom(CHUNK + 5000)
    path.write_bytes(first)
    f, violations, _ = _open_spied(path, "rb", stack)
    with f:
        assert f.read(len(first)) == first
        more = os.urandom(7000)
        with open(path, "ab") as w:
            w.write(more)
        assert f.read(len(more)) == more, "a read at the old end of file returned nothing (the stale window's EOF)"
        assert f.read(10) == b""
    assert violations == []


def _vm_flags(address: int) -> list[str]:
    """The ``VmFlags`` of the mapping of this process that holds *address* (from /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_read_ahead_buffers_ask_for_transparent_huge_pages(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Each 4 MiB read-ahead buffer is advised ``MADV_HUGEPAGE`` (smaps flag ``hg``): with 4 KiB pages an
    O_DIRECT read of it pins 1024 pages and the block layer splits it; the data read stays the file's."""
    if not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        skip_without("transparent huge pages (this kernel has no /sys/kernel/mm/transparent_hugepage)")
    from uringstack.ring.buffers import address_of
    from uringstack.ring.native import ffi

    path = tmp_path / "f"
    data = os.urandom(2 * CHUNK + 4096)
    path.write_bytes(data)
    f, violations, _ = _open_spied(path, "rb", stack)
    with f:
        assert f.read(CHUNK // 2) == data[: CHUNK // 2]
        ra = f.raw._readahead
        assert ra is not None
        bufs = [buf for b in list(ra._window) + ra._idle for buf in b.prepared.buffers]
        assert bufs, "no read-ahead buffer was made"
        for buf in bufs:
            assert len(buf) >= 2 << 20
            assert "hg" in _vm_flags(address_of(ffi.from_buffer(buf))), "read-ahead buffer not advised MADV_HUGEPAGE"
        assert f.read() == data[CHUNK // 2 :]
    assert violations == []


def test_large_direct_reads_ask_for_transparent_huge_pages(tmp_path: pathlib.Path, stack: Stack) -> None:
    """A direct read without read-ahead (unbuffered, or not sequential) of 2 MiB or more reads into a buffer
    advised ``MADV_HUGEPAGE``; a small one does not ask; both return the file's bytes at unaligned offsets."""
    if not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        skip_without("transparent huge pages (this kernel has no /sys/kernel/mm/transparent_hugepage)")
    from uringstack.ring.buffers import address_of
    from uringstack.ring.native import ffi

    path = tmp_path / "f"
    data = os.urandom(3 * CHUNK)
    path.write_bytes(data)
    with open_direct_or_skip(path, "rb", stack, buffering=0) as f:
        handle: Any = f.handle
        real = handle.start_read_many
        seen: list[tuple[int, bool]] = []

        def start_read_many(offsets: Any, buffers: Any) -> Any:
            for buf in buffers:
                seen.append((len(buf), "hg" in _vm_flags(address_of(ffi.from_buffer(buf)))))
            return real(offsets, buffers)

        handle.start_read_many = start_read_many
        for pos, size in ((CHUNK + 100, 2 * (2 << 20) + 5), (7, 4096), (0, CHUNK)):
            f.seek(pos)
            assert f.read(size) == data[pos : pos + size], (pos, size)
    assert [hg for n, hg in seen] == [n >= 2 << 20 for n, hg in seen], seen
    assert any(hg for _, hg in seen), seen


def test_write_behind_buffers_of_a_mebibyte_share_huge_pages(tmp_path: pathlib.Path, stack: Stack) -> None:
    """Direct 1 MiB writes are copied into slices of huge-page-advised 2 MiB mappings (a 1 MiB write of
    4 KiB pages is split in two requests on virtio), recycled only after their write completed: the file
    holds every byte written, in order, also when consecutive writes carry the same bytes."""
    if not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        skip_without("transparent huge pages (this kernel has no /sys/kernel/mm/transparent_hugepage)")
    from uringstack.ring.buffers import address_of
    from uringstack.ring.native import ffi

    path = tmp_path / "f"
    mib = 1 << 20
    chunks = [os.urandom(mib) if i % 3 else b"\x07" * mib for i in range(20)]
    with open_direct_or_skip(path, "wb", stack) as f:
        handle: Any = f.raw.handle
        real = handle.start_write_many
        flags: list[bool] = []
        addresses: set[int] = set()

        def start_write_many(offsets: Any, buffers: Any) -> Any:
            for buf in buffers:
                address = address_of(ffi.from_buffer(buf))
                addresses.add(address)
                flags.append(len(buf) == mib and "hg" in _vm_flags(address))
            return real(offsets, buffers)

        handle.start_write_many = start_write_many
        for chunk in chunks:
            f.write(chunk)
    assert path.read_bytes() == b"".join(chunks)
    assert len(flags) == len(chunks) and all(flags), flags
    assert len(addresses) < len(chunks), "write-behind buffers were not recycled"
