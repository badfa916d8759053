"""Types of the C extension ``uringstack.fileobj._fastio`` (source: ``_fastio.c``)."""

from typing import Any

class CachedReadInto:
    """``readinto(b)`` of a buffered io_uring ``uringstack.FileIO`` whose page-cache copy runs in C."""

    def __init__(self, fd: int, lock: Any, backend: Any, tracker: Any, file: Any, max_count: int) -> None: ...
    def __call__(self, b: Any, /) -> int | None: ...
    def disarm(self) -> None:
        """Send every later call to the file's Python step."""
    @property
    def armed(self) -> bool:
        """True while calls copy cached reads here (not disarmed, not in a fork child)."""

class HeldWrite:
    """``write(b)`` of a write-only ``uringstack.open()`` file: large ``bytes`` kept for one gathered write, in C."""

    def __init__(
        self,
        writer: Any,
        raw: Any,
        held: Any,
        fd: int,
        hold_min: int,
        backend: Any = None,
        tracker: Any = None,
        max_count: int = 0,
    ) -> None: ...
    def __call__(self, b: Any, /) -> int: ...
    @property
    def direct_writes(self) -> int:
        """How many chunks were written here, with no Python step."""
    @property
    def direct(self) -> bool:
        """True while a chunk that would be written at once may be written here."""
