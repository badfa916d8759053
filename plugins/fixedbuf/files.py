"""The fixed-file table of one ring: slots for open handles, reused on close."""

from __future__ import annotations

import threading

from uringstack.ring import Ring


class FixedFileTable:
    """A sparse registered file table; an opened handle takes a slot, closing frees it.

    Every change to the kernel's table (a slot set, a slot cleared, the table
    unregistered) is made under the table's lock, and none after :meth:`close`:
    ``stack.close()`` in one thread takes the table down while another thread
    may be closing a handle, and clearing a slot of a table the ring no longer
    has fails with ENXIO (until session 44 that reached the handle's closer as
    a ``PluginError``)."""

    def __init__(self, ring: Ring, slots: int) -> None:
        self.ring = ring
        self.slots = slots
        ring.register_files([-1] * slots)
        self._free = list(range(slots - 1, -1, -1))
        self._lock = threading.Lock()
        self._closed = False

    def attach(self, fd: int) -> int | None:
        """Put *fd* in a free slot and return the slot, or ``None`` when the table is full
        or closed (the handle then works with its plain descriptor)."""
        with self._lock:
            if self._closed or not self._free:
                return None
            slot = self._free.pop()
            try:
                self.ring.update_files(slot, [fd])
            except BaseException:
                self._free.append(slot)  # (the kernel refused it: the slot is still free)
                raise
        return slot

    def detach(self, slot: int) -> None:
        """Clear *slot* so it can be reused (after the handle's I/O completed); nothing to
        clear once the table is closed: the slot went with it."""
        with self._lock:
            if not self._closed:
                self.ring.update_files(slot, [-1])
            self._free.append(slot)

    def free_slots(self) -> int:
        with self._lock:
            return len(self._free)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if not self.ring.closed and self.ring.registered_files:
                self.ring.unregister_files()
