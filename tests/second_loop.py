"""A second event loop's view of a ring: the first loop, on its own thread, holds the ring."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from uringstack.ring import aio
from uringstack.ring.buffers import aligned_buffer
from uringstack.ring.polling import is_polled

FILL = 0xAA
"""What :func:`filled` buffers hold: a refused read must leave it there."""


class FirstLoop:
    """A loop on another thread that made the handle's ring its own (an awaited read), then idles."""

    def __init__(self, h: Any) -> None:
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(h),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _main(self, h: Any) -> None:
        await h.read(4096, 0)
        if h.ring is not None and not is_polled(h.ring):
            # a read that completed inside its submission made no bridge (nothing to wake):
            # this loop takes the ring as any await that waits would
            aio.bridge_for(h.ring)
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def filled(size: int) -> Any:
    """An aligned buffer of *size* bytes of :data:`FILL`."""
    buf = aligned_buffer(size)
    buf[:] = bytes([FILL]) * size
    return buf
