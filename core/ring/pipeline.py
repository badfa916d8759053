"""C arrays filled in one copy: column contents for :class:`~uringstack.ring.columns.BatchColumns`.

``filled`` repeats one value, ``from_bytes`` takes native-endian bytes; both
build the whole ``ctype[n]`` at the C level, so a caller filling thousands of
ops (the NVMe passthrough backend's command blocks) does no per-op Python work.
"""

from __future__ import annotations

from typing import Any

from uringstack.ring.native import ffi


def filled(ctype: str, value: int, n: int) -> Any:
    """A cdata ``ctype[n]`` with every element *value* (one C-level copy)."""
    arr = ffi.new(f"{ctype}[]", n)
    if value:
        one = ffi.new(f"{ctype}[1]", [value])
        size = ffi.sizeof(ctype)
        pattern = ffi.buffer(one)[:] * n
        ffi.memmove(arr, pattern, size * n)
    return arr


def from_bytes(ctype: str, data: bytes | bytearray | memoryview, n: int) -> Any:
    """A cdata ``ctype[n]`` initialised from raw native-endian bytes."""
    arr = ffi.new(f"{ctype}[]", n)
    if len(data) != ffi.sizeof(ctype) * n:
        raise ValueError(f"{len(data)} bytes do not make {n} {ctype}")
    ffi.memmove(arr, data, len(data))
    return arr
