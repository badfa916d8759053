"""``uringstack.open()``: the built-in ``open()``, layered over :class:`uringstack.FileIO`.

Argument checks follow the C built-in (order and messages) and buffering and
text layering ``_pyio.open``, rule for rule, so every mode string the built-in
rejects is rejected with the same exception.  What differs is underneath: the raw file
does its I/O through a stack, sequential reads run ahead with several chunk
reads in flight, and sequential writes are written behind (the call returns
once the write is started).  ``flush()`` still returns only once the data
reached the kernel, so ``f.flush(); os.fsync(f.fileno())`` keeps its meaning,
and a write that failed in flight is raised by ``flush()`` or ``close()``.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Literal, overload

from uringstack.fileobj._fastio import HeldWrite
from uringstack.fileobj.arguments import check_stack_arguments, type_name
from uringstack.fileobj.closing import close_flushed
from uringstack.fileobj.fileio import FileIO, Opener, PathArg
from uringstack.stack.uring_backend import MAX_RW_COUNT

if TYPE_CHECKING:
    from _typeshed import (
        OpenBinaryMode,
        OpenBinaryModeReading,
        OpenBinaryModeUpdating,
        OpenBinaryModeWriting,
        OpenTextMode,
    )

    from uringstack.stack import Stack

STREAM_BUFFER_SIZE = 64 * 1024
"""Default buffer of the buffered layer over a stack file (the built-in uses
``st_blksize``, 4 KiB here): one stack request per 64 KiB, not per 4 KiB.
64 KiB, ``shutil.copyfileobj``'s chunk: ``io.BufferedReader`` reads whole
multiples of its buffer straight into the caller's object, so copyfileobj's
``read(65536)`` is one read into the ``bytes`` returned, not a fill of the
buffer and a copy out of it (128 KiB did that).  Larger costs every read after
a seek a larger fill (1 MiB: a random ``read(100)`` 3.8x dearer, measured; see
docs/api.md)."""
UPDATE_BUFFER_SIZE = 128 * 1024
"""Default buffer of a ``+`` mode file (:class:`BufferedRandom`): its writes are
buffered too, and one stack request per 64 KiB written instead of per 128 KiB
was not measured, so it keeps the former read buffer size."""
WRITE_BUFFER_SIZE = 1 << 20
"""Default buffer of a write-only file: a stack request costs more fixed time
than a ``write(2)``, so write-only files (sequential by nature) batch 1 MiB.
Re-measured with the single-op path (~5 µs a request): 32 KiB, 256 KiB, 2 and
4 MiB cost ``shutil.copyfileobj`` as much or more CPU (docs/api.md)."""


HOLD_MIN = 64 * 1024
"""A ``bytes`` object this large written to a write-only stack file is kept, not copied
(``shutil.copyfileobj``'s chunk size: ``BufferedWriter.write``)."""

_write = io.BufferedWriter.write
_flush = io.BufferedWriter.flush


class BufferedWriter(io.BufferedWriter):
    """``io.BufferedWriter`` whose ``flush()`` returns once the data reached the kernel,
    and which keeps large ``bytes`` objects instead of copying them into its buffer."""

    def __init__(self, raw: FileIO, buffer_size: int = io.DEFAULT_BUFFER_SIZE) -> None:
        super().__init__(raw, buffer_size)
        self._hold = raw._hold if isinstance(raw, FileIO) and raw._enable_holding(buffer_size) else None
        if self._hold is not None and type(self) is BufferedWriter:
            # this class's write with no Python frame per call (copyfileobj calls it per chunk):
            # the same steps, in C, an instance attribute over the method (_fastio.c)
            # (and a chunk written at once is written there too, where the backend would
            # write it in this thread: FileIO._direct_write_parts)
            direct = raw._direct_write_parts()
            backend, tracker = direct if direct is not None else (None, None)
            vars(self)["write"] = HeldWrite(self, raw, raw._held, raw._fd, HOLD_MIN, backend, tracker, MAX_RW_COUNT)

    def write(self, b: Any) -> int:
        """``io.BufferedWriter.write``; an immutable ``bytes`` of ``HOLD_MIN`` bytes or more is
        handed to the raw file without the copy into the buffer.

        The raw file keeps the object (``bytes`` cannot change, the reference keeps it
        alive) and writes what it holds with one gathered write once a buffer's worth is
        held, or before any other use of the file (``FileIO._hold``): the same moments
        the buffer would be written.  What the buffer holds goes out first, so the
        order of writes is kept.  ``bytearray``/``memoryview`` are copied as before:
        the caller may change them after ``write`` returns."""
        hold = self._hold
        if hold is not None and type(b) is bytes and len(b) >= HOLD_MIN:
            try:
                _flush(self)  # the buffer's data first (nothing to do when empty)
            except ValueError:
                return _write(self, b)  # closed or detached: the built-in's error, in its words
            return hold(b)
        return _write(self, b)

    def flush(self) -> None:
        super().flush()
        self.raw.flush()  # the raw file's write-behind

    def close(self) -> None:
        """``io.BufferedWriter.close``, whose flush a raising signal (Ctrl-C) does not cut short."""
        raw = self.raw
        if not raw.closed:
            close_flushed(self.flush, functools.partial(_close_with_c_flush, self, _flush, super().close), raw.close)


class TextBufferedWriter(BufferedWriter):
    """The buffered layer under a write-only text file: :class:`BufferedWriter` whose
    ``write`` is ``io.BufferedWriter``'s, in C.

    ``io.TextIOWrapper`` takes its pending text out of its own buffer before it
    hands it to the buffer's ``write`` (``_textiowrapper_writeflush`` in
    ``Modules/_io/textio.c``): a ``write`` in Python, at whose entry a raising
    signal (Ctrl-C) can land, would lose that text.  The C ``write`` copies it
    into the buffer with no Python code run when the buffer has room, which
    :meth:`TextIOWrapper.close` makes sure of first.  (Holding large ``bytes``
    objects saves a copy only for large text writes.)"""

    def __init__(self, raw: FileIO, buffer_size: int = io.DEFAULT_BUFFER_SIZE) -> None:
        io.BufferedWriter.__init__(self, raw, buffer_size)
        self._hold = None

    write = _write  # type: ignore[assignment]


class TextIOWrapper(io.TextIOWrapper):
    """``io.TextIOWrapper`` whose ``close()`` a raising signal (Ctrl-C) does not cut short."""

    def close(self) -> None:
        buffer = self.buffer
        if not buffer.closed:
            close_flushed(self._flush_to_kernel, super().close, buffer.close)

    def _flush_to_kernel(self) -> None:
        # The buffer's bytes first, so the pending text then goes into an empty
        # buffer with a copy in C (see TextBufferedWriter), not through a raw write.
        self.buffer.flush()
        self.flush()


class BufferedRandom(io.BufferedRandom):
    """``io.BufferedRandom`` whose ``flush()`` returns once the data reached the kernel, and
    whose ``read1()`` writes what is buffered before it reads (Python 3.11's does not)."""

    def __init__(self, raw: FileIO, buffer_size: int = io.DEFAULT_BUFFER_SIZE) -> None:
        super().__init__(raw, buffer_size)
        self._read1_default = buffer_size  # (what read1(-1) reads at most, as the C layer)

    def read1(self, size: int | None = -1) -> bytes:
        """Up to *size* bytes with at most one raw read, as ``io.BufferedRandom.read1``.

        Python 3.11's ``read1`` (CPython gh-115059, fixed in 3.12.3 and 3.13) reads
        the raw file at its position while writes are still in the buffer: it
        returns the bytes those writes cover, as they were, and the writes then
        land after what it read, not where they were made.  ``TextIOWrapper``
        reads through ``read1``, so on a ``+`` mode text file ``read()``,
        ``seek(0)``, ``write(...)``, ``readline()`` returned the old text and put
        the new at the end.  The built-in ``open()`` does it too, for writes under
        its 4 KiB buffer; this layer's 128 KiB buffer made it reach far more writes.
        ``readinto1`` flushes first (and returns read-ahead before reading, as a
        correct ``read1`` does): one copy more per call."""
        if size is None or size < 0:
            size = self._read1_default
        if size == 0 or self.closed:  # (closed: the C read1's own error, "read of closed file")
            return super().read1(0)
        chunk = bytearray(size)
        n = self.readinto1(chunk)
        del chunk[n:]
        return bytes(chunk)

    def flush(self) -> None:
        super().flush()
        self.raw.flush()  # the raw file's write-behind

    def close(self) -> None:
        """``io.BufferedRandom.close``, whose flush a raising signal (Ctrl-C) does not cut short."""
        raw = self.raw
        if not raw.closed:
            close = functools.partial(_close_with_c_flush, self, io.BufferedRandom.flush, super().close)
            close_flushed(self.flush, close, raw.close)


def _close_with_c_flush(layer: Any, c_flush: Any, close: Callable[[], object]) -> None:
    """Run the built-in layer's *close* with its own flush, *c_flush*, as the one it calls.

    ``io.BufferedWriter.close`` (and ``BufferedRandom``'s) calls ``self.flush()``
    once more, then takes the buffer's lock and closes the raw file under it.
    This module's ``flush`` is Python (the buffer's flush, then the raw file's):
    between its writing the buffer and close taking the lock, another
    thread's write took the lock and was copied into the buffer, its length
    returned, then dropped with the raw file (a stress of three writer threads
    against ``close()``: accepted small writes missing after 8-14 of 30-40
    rounds, against 0-2 of 40-100 with the built-in ``open()``).  The built-in's flush is
    C, and close takes the lock right after it: the built-in's own window,
    no wider.  The raw file's close writes what it holds itself."""
    vars(layer)["flush"] = c_flush.__get__(layer)  # a C bound method: close calls it with no Python frame
    try:
        close()
    finally:
        vars(layer).pop("flush", None)


def check_mode(
    file: Any, mode: str, buffering: int, encoding: str | None, errors: str | None, newline: str | None
) -> tuple[str, bool]:
    """Check open()'s arguments as the built-in does; returns (FileIO mode, binary).

    The order and the messages are the C implementation's (``Modules/_io/_iomodule.c``;
    ``_pyio`` words some differently): argument types first, then the mode character
    by character, then the combinations.  A mode without r, w, a or x is left to
    :class:`FileIO`, which refuses it with its own message, as the built-in does."""
    if not isinstance(mode, str):
        raise TypeError(f"open() argument 'mode' must be str, not {type_name(mode)}")
    if "\0" in mode:
        raise ValueError("embedded null character")
    if not isinstance(buffering, int):
        raise TypeError(f"'{type(buffering).__name__}' object cannot be interpreted as an integer")
    for name, value in (("encoding", encoding), ("errors", errors), ("newline", newline)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"open() argument '{name}' must be str or None, not {type_name(value)}")
    if not isinstance(file, int):
        file = os.fspath(file)
    if not isinstance(file, (str, bytes, int)):
        raise TypeError(f"invalid file: {file!r}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: '{mode}'")
    creating = "x" in modes
    reading = "r" in modes
    writing = "w" in modes
    appending = "a" in modes
    updating = "+" in modes
    text = "t" in modes
    binary = "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        warnings.warn(
            "line buffering (buffering=1) isn't supported in binary mode, the default buffer size will be used",
            RuntimeWarning,
            2,
        )
    raw_mode = (
        ((creating and "x") or "")
        + ((reading and "r") or "")
        + ((writing and "w") or "")
        + ((appending and "a") or "")
        + ((updating and "+") or "")
    )
    return raw_mode, binary


# The overloads are the built-in open()'s (typeshed's): the mode and buffering
# literals decide the layer returned.
@overload
def open(
    file: int | PathArg,
    mode: OpenTextMode = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> io.TextIOWrapper: ...
@overload
def open(
    file: int | PathArg,
    mode: OpenBinaryMode,
    buffering: Literal[0],
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> FileIO: ...
@overload
def open(
    file: int | PathArg,
    mode: OpenBinaryModeUpdating,
    buffering: Literal[-1, 1] = -1,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> BufferedRandom: ...
@overload
def open(
    file: int | PathArg,
    mode: OpenBinaryModeWriting,
    buffering: Literal[-1, 1] = -1,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> BufferedWriter: ...
@overload
def open(
    file: int | PathArg,
    mode: OpenBinaryModeReading,
    buffering: Literal[-1, 1] = -1,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> io.BufferedReader: ...
@overload
def open(
    file: int | PathArg,
    mode: str,
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> IO[Any] | FileIO: ...
def open(
    file: int | PathArg,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    direct: bool = False,
    stack: Stack | None = None,
) -> IO[Any] | FileIO:
    """Open *file* like the built-in ``open()`` and return the same kind of object.

    ``rb`` gives an ``io.BufferedReader``, ``wb``/``ab``/``xb`` a
    :class:`BufferedWriter`, ``+`` modes a :class:`BufferedRandom`, text modes
    an ``io.TextIOWrapper`` over them, ``buffering=0`` the raw
    :class:`uringstack.FileIO`.  *stack* defaults to the process-wide stack.
    ``direct=True`` opens with ``O_DIRECT`` (aligned internal buffers; see
    :class:`uringstack.FileIO`).  Buffered layers read ahead on sequential
    reads and write behind on sequential writes.
    """
    raw_mode, binary = check_mode(file, mode, buffering, encoding, errors, newline)
    check_stack_arguments("open()", stack, direct)
    if not isinstance(file, int):
        file = os.fspath(file)
    updating = "+" in mode
    creating, writing, appending = "x" in mode, "w" in mode, "a" in mode
    raw = FileIO(
        file,
        raw_mode,
        closefd,
        opener=opener,
        stack=stack,
        direct=direct,
    )
    result: IO[Any] | FileIO = raw
    try:
        line_buffering = False
        if buffering == 1 or (buffering < 0 and raw.isatty()):
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
            if raw.handle is not None:
                if updating:
                    buffering = UPDATE_BUFFER_SIZE
                elif creating or writing or appending:  # write-only
                    buffering = WRITE_BUFFER_SIZE
                else:
                    buffering = STREAM_BUFFER_SIZE
            bs = os.fstat(raw.fileno()).st_blksize
            if raw.handle is None and bs > 1:
                buffering = bs
        if buffering < 0:
            raise ValueError("invalid buffering size")
        if buffering == 0:
            if binary:
                return raw
            raise ValueError("can't have unbuffered text I/O")
        if raw.handle is not None and raw.handle.direct:  # (an O_DIRECT descriptor is direct too)
            block = raw.block_size
            buffering = max(block, -(-buffering // block) * block)  # whole blocks go O_DIRECT
        raw._enable_streaming(readahead=True, writebehind=True)
        buffer: BufferedRandom | BufferedWriter | io.BufferedReader
        if updating:
            buffer = BufferedRandom(raw, buffering)
        elif creating or writing or appending:
            buffer = BufferedWriter(raw, buffering) if binary else TextBufferedWriter(raw, buffering)
        else:
            buffer = io.BufferedReader(raw, buffering)
        result = buffer
        text = None
        if not binary:
            encoding = io.text_encoding(encoding)
            text = TextIOWrapper(buffer, encoding, errors, newline, line_buffering)
            # The built-in open() sets the mode as given ("t" and all) on the instance;
            # typeshed declares IO.mode read-only, so through the instance dict.
            vars(text)["mode"] = mode
            result = text
        raw._layered(buffer, text)  # flushed if the handle is closed behind them
        if stack is None:
            from uringstack.fileobj.default_stack import track

            track(result, raw=False)
        if raw._home is not None:
            raw._home.close_with_stack(result, outer=True)  # its buffer is flushed before raw closes
        return result
    except BaseException:
        result.close()
        raise
