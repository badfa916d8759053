"""Buffers the kernel can DMA into: page-aligned allocations and registered-buffer leases.

O_DIRECT and NVMe passthrough need buffers, offsets and lengths aligned to the
device's logical block size.  Anonymous ``mmap`` memory is page aligned
(4096 bytes, a multiple of every logical block size in practice), so
:func:`aligned_buffer` is the simple, safe way to get one.
"""

from __future__ import annotations

import mmap
from typing import Any

from uringstack.errors import AlignmentError
from uringstack.native import ffi

PAGE_SIZE = mmap.PAGESIZE


def aligned_buffer(size: int, alignment: int = PAGE_SIZE) -> mmap.mmap:
    """A zero-filled, writable buffer of *size* bytes whose address is *alignment*-aligned."""
    if size <= 0:
        raise ValueError(f"buffer size must be positive, got {size}")
    if alignment <= 0 or alignment & (alignment - 1) or PAGE_SIZE % alignment:
        raise ValueError(f"alignment must be a power of two dividing the page size, got {alignment}")
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def address_of(pin: Any) -> int:
    """Integer address of a cdata obtained from ``ffi.from_buffer``."""
    return int(ffi.cast("uintptr_t", pin))


def check_alignment(op: str, filename: str, addr: int, length: int, offset: int, block: int) -> None:
    """Raise :class:`AlignmentError` naming what is misaligned, before anything is submitted."""
    bad = []
    if addr % block:
        bad.append(f"buffer address {addr:#x} is not a multiple of {block}")
    if length % block:
        bad.append(f"length {length} is not a multiple of {block}")
    if offset % block:
        bad.append(f"offset {offset} is not a multiple of {block}")
    if bad:
        raise AlignmentError(
            f"{op} on {filename} (O_DIRECT, logical block size {block}): "
            + "; ".join(bad)
            + ". Use uringstack.aligned_buffer() or a registered-buffer lease."
        )


class RegisteredBuffer:
    """A slice of memory registered with one ring (a fixed buffer).

    Plugins (fixedbuf) create these; the I/O path turns reads and writes on
    them into READ_FIXED/WRITE_FIXED.  ``ring_id`` is ``id()`` of the ring the
    memory is registered with: a lease used on another ring falls back to a
    plain READ/WRITE, which is correct, just not faster.
    """

    __slots__ = ("addr", "index", "ring_id", "size", "view")

    def __init__(self, view: memoryview, index: int, addr: int, ring_id: int) -> None:
        self.view = view
        self.index = index
        self.addr = addr
        self.ring_id = ring_id
        self.size = len(view)

    def __len__(self) -> int:
        return self.size

    def __buffer__(self, flags: int) -> memoryview:  # PEP 688: usable where a buffer is expected
        return self.view
