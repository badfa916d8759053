"""The fixed-file table of one ring: slots for open handles, reused on close."""

from __future__ import annotations

import threading

from uringstack.ring import Ring


class FixedFileTable:
    """A sparse registered file table; an opened handle takes a slot, closing frees it."""

    def __init__(self, ring: Ring, slots: int) -> None:
        self.ring = ring
        self.slots = slots
        ring.register_files([-1] * slots)
        self._free = list(range(slots - 1, -1, -1))
        self._lock = threading.Lock()

    def attach(self, fd: int) -> int | None:
        """Put *fd* in a free slot and return the slot, or ``None`` when the table is full."""
        with self._lock:
            if not self._free:
                return None
            slot = self._free.pop()
        self.ring.update_files(slot, [fd])
        return slot

    def detach(self, slot: int) -> None:
        """Clear *slot* so it can be reused (after the handle's I/O completed)."""
        self.ring.update_files(slot, [-1])
        with self._lock:
            self._free.append(slot)

    def free_slots(self) -> int:
        with self._lock:
            return len(self._free)

    def close(self) -> None:
        if not self.ring.closed and self.ring.registered_files:
            self.ring.unregister_files()
