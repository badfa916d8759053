"""Closing a file object without losing what it holds to a raising signal (Ctrl-C).

``io.IOBase.close`` and ``io.BufferedWriter.close`` flush, then close the file
even when the flush raised.  The built-in ``open()``'s flush runs in C, where
no Python signal handler runs, so a Ctrl-C there cannot cut it short.  A stack
file's flush runs Python (the buffered layer's ``flush()``, the raw file's
held bytes and write-behind): a ``KeyboardInterrupt`` landing in it made the
close drop the bytes of writes that had returned.  Here the flush runs by
itself first, to its end, and the file is closed after it.
"""

from __future__ import annotations

from collections.abc import Callable

from uringstack.ring.interrupts import despite_signals, run_to_end


def close_flushed(flush: Callable[[], object], close: Callable[[], object], rescue: Callable[[], object]) -> None:
    """``flush()`` run to its end through raising signals, then ``close()``; then the first exception.

    A raising signal that cuts the flush short makes it run again
    (``run_to_end``) until it returns or fails; what it held is written once
    (the raw file's writes raise only when not made, and the buffered layer
    keeps its buffer when a raw write raises).  Then *close* closes the file
    (its own flush finds nothing left), and if a signal cuts that short,
    *rescue* (safe to run again) closes what it left open, so the file never
    stays open without its buffer.  The first exception raised then
    propagates: the signal's, the flush's failure, or the close's own."""
    first = run_to_end(flush)
    try:
        close()
    except BaseException:
        despite_signals(rescue)
        if first is None:
            raise
        try:
            raise first  # (the close's own exception becomes its __context__)
        finally:
            first = None  # no cycle through this frame
    if first is not None:
        try:
            raise first
        finally:
            first = None
