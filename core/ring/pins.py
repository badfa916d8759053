"""Pinning a caller's buffer for the kernel: its memory kept alive, unresizable, until let go."""

from __future__ import annotations

from typing import Any

from uringstack.ring._exports import Export
from uringstack.ring.native import ffi


def pin_buffer(buf: Any, writable: bool = False) -> Any:
    """*buf*'s memory as a ``char[]`` cdata (``ffi.from_buffer``) that holds its export: the
    memory stays alive and cannot be resized, closed or released until the pin is dropped
    or ``ffi.release``d.  Refused as pinning it directly is (``TypeError`` for no buffer,
    ``BufferError`` for a read-only one asked *writable* or a non-contiguous one).

    The one way the library pins a caller's buffer.  A ``memoryview`` is pinned through an
    :class:`~uringstack.ring._exports.Export` (C), which the garbage collector does not track:
    CPython 3.11 clears a memoryview found in a garbage cycle even while a pin exports it,
    and the pin's release then crashes the interpreter (gh-77894, fixed in 3.12.7).  A
    traceback whose frames hold both the caller's view and the library's pin of it makes
    such a cycle whenever the exception is kept (caught after Ctrl-C or an I/O error, in
    a REPL's last traceback): seen as a segfault in a collection, in session 28's NVMe
    probe and session 40's stress run (tests/ring/test_pinned_views_collected.py)."""
    # (ffi.from_buffer's arguments positionally: its keyword form costs twice as much, 0.9
    # against 0.5 us per pin measured, and a batch await pins every buffer)
    return ffi.from_buffer("char[]", Export(buf, writable) if type(buf) is memoryview else buf, writable)
