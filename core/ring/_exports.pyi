"""Types of the C extension ``uringstack.ring._exports`` (source: ``_exports.c``)."""

from typing import Any

class Export:
    """*obj*'s buffer (asked writable if *writable*), exported again as plain bytes by an
    object the garbage collector does not track (CPython gh-77894: see ``_exports.c``)."""

    def __init__(self, obj: Any, writable: bool = False) -> None: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
