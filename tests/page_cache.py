"""What a file holds in the page cache, asked without reading it (``mincore(2)``)."""

from __future__ import annotations

import ctypes
import mmap
import os
import time


def resident_pages(fd: int, offset: int, length: int) -> int:
    """Pages of [offset, offset + length) of *fd*'s file in the page cache, by ``mincore(2)``
    over a mapping never touched: asked without reading (a read, ``RWF_NOWAIT`` too,
    may start read-ahead and so fill the cache it asks about)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    page = mmap.PAGESIZE
    start = offset - offset % page
    size = offset + length - start
    # (private and writable only so ctypes can take its address: nothing is written)
    m = mmap.mmap(fd, size, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    try:
        vec = ctypes.create_string_buffer(-(-size // page))
        anchor = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(anchor)
        if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(b & 1 for b in vec.raw)
    finally:
        del anchor
        m.close()


def evict(fd: int, offset: int, length: int, tries: int = 20) -> bool:
    """Drop [offset, offset + length) of *fd*'s file from the page cache; True once
    ``mincore`` finds none of it there.  ``POSIX_FADV_DONTNEED`` drops only pages nobody
    holds at that moment (writeback, a reader, another process's mapping on a loaded
    host), so it is asked again, a few milliseconds apart, up to *tries* times."""
    for _ in range(tries):
        os.fsync(fd)  # (only clean pages are dropped)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if not resident_pages(fd, offset, length):
            return True
        time.sleep(0.005)
    return False
