"""Reading the benchmark file once before measuring: the page cache, or the device's own cache.

Buffered runs read a hot page cache (:func:`warm_file`). Interleaved O_DIRECT runs
read the file once with O_DIRECT (:func:`warm_device`) so the device's own cache (the
host's page cache of a VM's disk image) holds it before the first slice: otherwise the
side that runs first warms the image for the side that runs after it (docs/bench.md).
"""

from __future__ import annotations

import mmap
import os
import time
from typing import Any

from uringstack.ring.interrupts import close_stored, open_stored

CHUNK = 1 << 20


def read_through(path: str, size: int, *, direct: bool) -> int:
    """Read the first *size* bytes of *path* sequentially in 1 MiB reads; returns the bytes read."""
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT requires
    done = 0
    fds: list[int] = []  # (stored as opened: Ctrl-C right after the open leaks nothing)
    try:
        fd = open_stored(fds, path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECT if direct else 0))
        while done < size:
            n = os.preadv(fd, [buf], done)
            if n <= 0:
                break
            done += n
    finally:
        close_stored(fds)
        buf.close()
    return done


def warm_file(path: str, size: int) -> float:
    """Read *path* (the first *size* bytes) once so buffered rows and fio read a hot page
    cache; returns the seconds it took (a second pass over a hot file is fast)."""
    t0 = time.perf_counter()
    read_through(path, size, direct=False)
    return time.perf_counter() - t0


def warm_device(path: str, size: int) -> dict[str, Any]:
    """Read the first *size* bytes of *path* once with O_DIRECT, past the page cache, so the
    device's own cache holds what the rounds read; returns what it read and how fast."""
    t0 = time.perf_counter()
    done = read_through(path, size, direct=True)
    secs = time.perf_counter() - t0
    return {"bytes": done, "seconds": round(secs, 3), "mb_s": round(done / secs / 1e6, 1) if secs > 0 else None}
