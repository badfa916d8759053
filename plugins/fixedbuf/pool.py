"""A registered buffer pool for one ring: page-aligned mmap memory handed out as leases."""

from __future__ import annotations

import contextlib
import mmap
import threading
from typing import Any

from uringstack.ring import Ring
from uringstack.ring.buffers import RegisteredBuffer, address_of
from uringstack.ring.native import ffi


class BufferPool:
    """``count`` buffers of ``buffer_size`` bytes registered with *ring*.

    A lease returns to the pool on :meth:`release`; if the kernel may still be
    using it (its last batch has not completed) the return is deferred until
    that batch finished, so a buffer is never handed out twice at once.
    """

    def __init__(self, ring: Ring, buffer_size: int, count: int) -> None:
        self.ring = ring
        self.buffer_size = buffer_size
        self.count = count
        self._mem = mmap.mmap(-1, buffer_size * count, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = memoryview(self._mem)
        self._slices = [view[i * buffer_size : (i + 1) * buffer_size] for i in range(count)]
        # register_buffers pins the pages (and may fail with ENOMEM on memlock)
        self._pins: Any = ring.register_buffers(self._slices)
        base = address_of(ffi.from_buffer(self._mem))
        self._all = [RegisteredBuffer(self._slices[i], i, base + i * buffer_size, id(ring)) for i in range(count)]
        self._free = list(reversed(self._all))
        self._deferred: list[RegisteredBuffer] = []
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.buffer_size * self.count

    def available(self) -> int:
        with self._lock:
            self._reclaim()
            return len(self._free)

    def _reclaim(self) -> None:
        if self._deferred:
            still = [b for b in self._deferred if b.in_flight()]
            self._free.extend(b for b in self._deferred if not b.in_flight())
            self._deferred = still

    def lease(self) -> RegisteredBuffer:
        """A free registered buffer; :class:`BufferError` when all are leased."""
        with self._lock:
            if not self._free:
                self._reclaim()
            if not self._free:
                raise BufferError(
                    f"all {self.count} registered buffers are leased; release some or raise [fixedbuf] count"
                )
            return self._free.pop()

    def owns(self, buf: RegisteredBuffer) -> bool:
        """True when *buf* is one of this pool's buffers (a sub-range's parent counts)."""
        return buf.ring_id == id(self.ring) and 0 <= buf.index < len(self._all) and self._all[buf.index] is buf

    def release(self, buf: RegisteredBuffer) -> None:
        """Give *buf* back (once).  Releasing a buffer twice is an error, not a no-op."""
        if not self.owns(buf):
            raise ValueError("buffer does not belong to this pool")
        with self._lock:
            if buf in self._free or buf in self._deferred:
                raise ValueError(f"registered buffer {buf.index} released twice")
            (self._deferred if buf.in_flight() else self._free).append(buf)

    def close(self) -> None:
        """Unregister (after in-flight I/O drained) and unmap."""
        if not self.ring.closed and self.ring.registered_buffers:
            self.ring.unregister_buffers()
        self._pins = None
        self._all.clear()
        self._free.clear()
        self._deferred.clear()
        for s in self._slices:
            s.release()
        self._slices = []
        with contextlib.suppress(BufferError):  # a caller still holds a view of a lease:
            self._mem.close()  # the mapping goes when that view does
