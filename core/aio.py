"""``uringstack.aio.open``: aiofiles' interface, its I/O awaited on the stack (no thread per call).

``async with uringstack.aio.open(path, "rb") as f: data = await f.read()``.
The file is opened as the built-in ``open()`` opens it (through
:class:`uringstack.FileIO`, same flags and errors), then every read and write
is ``await handle.read(...)`` / ``await handle.write(...)`` on its stack
handle: they join the batch the loop submits each iteration (see docs/api.md, asyncio).  Binary
files are buffered like ``io.BufferedReader``/``BufferedWriter``; text files
decode and translate newlines like ``io.TextIOWrapper``.  The descriptor's
offset is the file position wherever someone can see it (``fileno()``,
``raw``, ``detach()``, a file opened from a descriptor): see
:class:`AsyncBinaryFile`.

Metadata calls (``uringstack.aio.os``) run in the loop's default executor, as
aiofiles' do: the stack's contract has no metadata operations.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import io
import locale
import operator
import os
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, AnyStr, Generic, TypeVar

from uringstack.errors import RingClosedError, transferred
from uringstack.fileobj.arguments import (
    SSIZE_LIMIT,
    buffer_view,
    check_stack_arguments,
    index_argument,
    size_argument,
    whence_argument,
)
from uringstack.fileobj.fileio import FileIO, Opener

if TYPE_CHECKING:
    from types import TracebackType

    from uringstack.stack import Stack
    from uringstack.stack.handle import FileHandle

CHUNK = 64 * 1024
"""Bytes a buffered read asks the stack for at least (aiofiles' reads are one
``read`` call of the wrapped file, 8 KiB buffered)."""

MIN_READ = 4096
"""The first read after open or seek asks for at least this much."""
F = TypeVar("F", "AsyncBinaryFile", "AsyncTextFile")
_OFFSET_LIMIT = 1 << 63  # an offset lseek (and an SQE) takes
_LOW64 = (1 << 64) - 1  # a text cookie's byte position (AsyncTextFile._cookie)
_SEEK_LAST = max(os.SEEK_END, getattr(os, "SEEK_HOLE", os.SEEK_END))  # SEEK_DATA 3, SEEK_HOLE 4


def _closed() -> ValueError:
    return ValueError("I/O operation on closed file")


class _Turns:
    """One operation at a time on a file, in call order: ``asyncio.Lock``'s guarantee, cheaper.

    An uncontended ``async with asyncio.Lock()`` costs about 1 us in CPython
    3.11 (four coroutine steps), as much as a cached 4 KiB read's own work in
    the stack; the hot methods take a free turn inline instead
    (``if turns.busy: await turns.wait()`` else ``turns.busy = True``, then
    ``turns.release()`` in a ``finally``), the others with ``async with``.  A
    released turn passes straight to the oldest waiter (``busy`` stays True), so
    no caller overtakes one that waits."""

    __slots__ = ("_waiters", "busy")

    def __init__(self) -> None:
        self.busy = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        """Wait until the turn passes to this caller (``busy`` was True)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # the turn reached this task as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """End this caller's turn: the oldest live waiter's begins, else the file is free."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.busy = False

    async def __aenter__(self) -> None:
        if self.busy:
            await self.wait()
        else:
            self.busy = True

    async def __aexit__(self, *exc: object) -> None:
        self.release()


async def _read_lines(readline: Callable[[], Awaitable[AnyStr]], hint: int) -> list[AnyStr]:
    """``readline()`` until it returns nothing, or the lines' length reaches *hint* (when positive)."""
    hint = size_argument(hint)  # (before the first line: a bad hint loses none)
    lines: list[AnyStr] = []
    total = 0
    while line := await readline():
        lines.append(line)
        total += len(line)
        if 0 < hint <= total:
            break
    return lines


class _LineReader(Generic[AnyStr]):
    """``async for`` over a file's ``readline``, as aiofiles has it.

    The binary and the text file each define ``readline`` (and ``readlines``,
    whole in one turn); this class only declares its type."""

    readline: Callable[..., Awaitable[AnyStr]]

    def __aiter__(self) -> _LineReader[AnyStr]:
        return self

    async def __anext__(self) -> AnyStr:
        if line := await self.readline():
            return line
        raise StopAsyncIteration


class AsyncBinaryFile(_LineReader[bytes]):
    """A binary file whose reads and writes are awaited on the stack.

    ``buffering=0`` writes straight through; otherwise writes collect in a
    buffer of *buffer_size* bytes that ``flush()`` (and ``close()``) writes.
    Reads fill a read buffer in :data:`CHUNK` steps.  Operations on one file
    are serialised (one at a time, in call order).

    The position is this object's; the descriptor's offset is moved to it
    lazily: at once after every operation while the descriptor is shared (the
    file was opened from a descriptor, or ``fileno()``/``raw`` handed it out),
    otherwise when ``fileno()``, ``raw`` or ``detach()`` hands it out.  Nobody
    else can see the descriptor's offset before that, and the ``lseek`` per
    operation it saves is a tenth of a cached 4 KiB read's cost.
    """

    def __init__(self, raw: FileIO, buffer_size: int) -> None:
        handle = raw.handle
        if handle is None:
            raise io.UnsupportedOperation(f"{raw.name!r} is not a regular file or block device")
        # _Detached after detach(): every later use raises "underlying buffer has been detached"
        self._file: FileIO | _Detached = raw
        self._h: FileHandle = handle  # raw.handle for the file's life: closing raw closes it
        self._fd = raw.fileno()
        self._can_read = raw.readable()
        self._can_write = raw.writable()
        self._appending = raw._appending  # (the descriptor's O_APPEND, which the mode may not say)
        self._buffer_size = buffer_size
        self._turns = _Turns()
        self._rbuf = b""  # read-ahead bytes starting at self._pos
        self._wbuf = bytearray()  # bytes to write at self._pos - len(self._wbuf)
        # Bytes write() took and kept (less those a failed flush gave back): the text layer
        # compares it around a write to know whether a write that raised took none
        self._taken = 0
        self._writing: asyncio.Future[None] | None = None  # the buffer's write, in flight (_flush_unlocked)
        self._pos = raw.tell()
        self._append_from = self._pos  # where an append that wrote nothing leaves the position
        self._readsize = MIN_READ
        self._fd_shared = isinstance(raw.name, int)  # the caller holds the descriptor: keep its offset
        self._sync_layer: _SyncLayer | None = None  # (set by open: see _SyncLayer)

    # --- description ---------------------------------------------------------------
    @property
    def name(self) -> Any:
        return self._file.name

    @property
    def mode(self) -> str:
        return self._file.mode

    @property
    def closed(self) -> bool:
        return self._file.closed

    @property
    def raw(self) -> FileIO:
        if isinstance(self._file, _Detached):
            raise _Detached.error()
        self._share_fd()
        return self._file

    def fileno(self) -> int:
        fd = self._file.fileno()
        self._share_fd()
        return fd

    def readable(self) -> bool:
        return self._file.readable()

    def writable(self) -> bool:
        return self._file.writable()

    def seekable(self) -> bool:
        return self._file.seekable()

    def isatty(self) -> bool:
        return self._file.isatty()

    def _share_fd(self) -> None:
        """The descriptor is handed out: move its offset to the position, and keep it there from now on."""
        if not self._file.closed:
            self._fd_shared = True
            self._sync_offset()

    def _sync_offset(self) -> None:
        """Keep the descriptor's offset where this object's position is (as the built-in's)."""
        os.lseek(self._live_fd(), self._pos, os.SEEK_SET)

    def _moved(self) -> None:
        """The position changed: the descriptor follows at once only if someone else can see it."""
        if self._fd_shared:
            os.lseek(self._live_fd(), self._pos, os.SEEK_SET)

    def _live_fd(self) -> int:
        """The descriptor, for a syscall made after an await: the closed-file ``ValueError``
        once the file closed meanwhile (``stack.close()``, ``handle.close()`` close its
        handle and descriptor), whose number may be another file's by now.  Until
        session 27 an operation in flight across ``stack.close()`` moved that other
        file's offset (and an append took its size as the position)."""
        if self._file.closed:
            raise _closed()
        return self._fd

    # --- reading ---------------------------------------------------------------------
    async def _fill(self, want: int) -> bool:
        """Read at least *want* more bytes into the read buffer; False at end of file."""
        data = await self._read_ahead(want, self._pos + len(self._rbuf))
        if not data:
            return False
        self._rbuf += data
        return True

    async def _read_ahead(self, want: int, offset: int) -> bytes:
        """One stack read at *offset* of *want* bytes or more (the read-ahead size)."""
        # Random access reads what was asked (a page at least); each further
        # sequential fill doubles, up to CHUNK.
        size = self._readsize
        self._readsize = min(size * 2, CHUNK)
        try:
            # The handle refuses the read once it is closed, and closing the
            # raw file (or its stack) closes the handle: that is the closed check here.
            return await self._h.read(want if want > size else size, offset)
        except RingClosedError:
            raise _closed() from None

    async def _prepare_read(self) -> None:
        self._check_buffered_readable()
        if self._file.closed:
            raise _closed()
        if not self._can_read:
            raise io.UnsupportedOperation("File not open for reading")
        if self._wbuf or self._writing is not None:
            await self._flush_unlocked()

    def _check_buffered_readable(self) -> None:
        """A buffered file not open for reading refuses a read before anything else (an
        ``io.BufferedWriter`` has no read: closed or not, whatever the argument)."""
        if not self._can_read and self._buffer_size > 1:
            raise io.UnsupportedOperation("File not open for reading")

    def _take(self, n: int) -> bytes:
        out, self._rbuf = self._rbuf[:n], self._rbuf[n:]
        self._pos += len(out)
        return out

    def _read_size(self, size: Any) -> int:
        """*size* as the built-in's ``read`` takes it, or its error: None is -1; below -1 is
        a ``ValueError`` when buffered (``io.BufferedReader``), all the rest unbuffered."""
        self._check_buffered_readable()
        n = size_argument(size)
        if n < -1 and self._buffer_size > 1:
            raise ValueError("read length must be non-negative or -1")
        return n

    async def read(self, size: int = -1) -> bytes:
        """Up to *size* bytes (all the rest when negative); short only at end of file."""
        if type(size) is not int or not -1 <= size < SSIZE_LIMIT:
            size = self._read_size(size)  # (before the turn: the built-in checks it first)
        turns = self._turns
        if turns.busy:
            await turns.wait()
        else:
            turns.busy = True
        try:
            # the checks of _prepare_read, in one test when all pass
            if self._file.closed or not self._can_read or self._wbuf or self._writing is not None:
                await self._prepare_read()
            if size < 0:
                end = os.fstat(self._live_fd()).st_size
                while await self._fill(max(end - self._pos - len(self._rbuf), CHUNK)):
                    pass
                out = self._take(len(self._rbuf))
            elif not self._rbuf and size:
                # Nothing buffered (a read after open or seek): one stack read, no
                # buffer copy; _read_ahead inlined (a coroutine less per read).
                ask = self._readsize
                self._readsize = ask * 2 if ask < CHUNK // 2 else CHUNK
                try:
                    data = await self._h.read(size if size > ask else ask, self._pos)
                except RingClosedError:
                    raise _closed() from None
                n = len(data)
                if n >= size:  # (a sequential read-ahead may bring more)
                    out = data if n == size else data[:size]
                    if n > size:
                        self._rbuf = data[size:]
                    self._pos += size
                else:
                    # short: end of file, unless the file grew since; read on as below
                    self._rbuf = data
                    while n and len(self._rbuf) < size and await self._fill(size - len(self._rbuf)):
                        pass
                    out = self._take(size)
            else:
                while len(self._rbuf) < size and await self._fill(size - len(self._rbuf)):
                    pass
                out = self._take(size)
            if self._fd_shared:  # (self._moved(), inlined: a call less per read)
                os.lseek(self._live_fd(), self._pos, os.SEEK_SET)
            return out
        finally:
            if turns._waiters:
                turns.release()
            else:  # (release() with nobody waiting, inlined)
                turns.busy = False

    async def read1(self, size: int = -1) -> bytes:
        """At most one stack read: what is buffered, else up to *size* bytes."""
        self._check_buffered_readable()
        size = index_argument(size)
        async with self._turns:
            await self._prepare_read()
            if not self._rbuf:
                await self._fill(size if size > 0 else CHUNK)
            out = self._take(len(self._rbuf) if size < 0 else size)
            self._moved()
            return out

    async def readall(self) -> bytes:
        return await self.read(-1)

    async def peek(self, size: int = 0) -> bytes:
        """Buffered bytes without moving the position (reads once if none are buffered)."""
        size = index_argument(size)
        async with self._turns:
            await self._prepare_read()
            if not self._rbuf:
                await self._fill(max(size, 1))
            return self._rbuf

    async def readinto(self, b: Any) -> int:
        m = buffer_view(b, True)  # (before the read: bytes read into a read-only buffer were lost)
        self._check_buffered_readable()
        data = await self.read(len(m))
        m[: len(data)] = data
        return len(data)

    async def readline(self, size: int = -1) -> bytes:
        """One line, ending in ``b"\\n"`` unless at end of file or *size* was reached."""
        size = size_argument(size)
        async with self._turns:
            return await self._readline(size)

    async def readlines(self, hint: int = -1) -> list[bytes]:
        """The lines left (until their length reaches *hint*, when positive), in one turn:
        no other task's operation falls between two of them."""
        hint = size_argument(hint)
        if self._file.closed:  # (before a line is read: io's readlines iterates, which checks this)
            raise _closed()
        async with self._turns:
            return await _read_lines(self._readline, hint)

    async def _readline(self, size: int = -1) -> bytes:
        await self._prepare_read()
        start = 0
        while True:
            nl = self._rbuf.find(b"\n", start)
            if nl >= 0:
                n = nl + 1
                break
            if 0 <= size <= len(self._rbuf):
                n = size
                break
            start = len(self._rbuf)
            if not await self._fill(CHUNK):
                n = len(self._rbuf)
                break
        if 0 <= size < n:
            n = size
        out = self._take(n)
        self._moved()
        return out

    # --- writing -----------------------------------------------------------------------
    async def write(self, b: Any) -> int:
        """Buffer (or, unbuffered, write) all of *b*; returns ``len(b)``."""
        if not self._can_write and self._buffer_size > 1:
            # io.BufferedReader has no write: refused whatever the argument (unbuffered,
            # io.FileIO checks the argument first)
            raise io.UnsupportedOperation("File not open for writing")
        data = bytes(buffer_view(b, False))
        async with self._turns:
            if self._file.closed:
                raise _closed()
            if not self._can_write:
                raise io.UnsupportedOperation("File not open for writing")
            if not data:
                # (before the append's jump to the end: an empty write leaves the position,
                # as write(2) and the built-in's do; it moved an "a+" file's to its end)
                return 0
            if self._rbuf:
                self._rbuf = b""  # the position is where the reader got to
            if self._appending and not self._wbuf:
                if self._writing is not None:
                    # An earlier append's write still in flight (its caller was cancelled): the
                    # end of the file is known once it landed (it raises here if it failed).
                    # Until session 27 these bytes took the size before it as their place:
                    # tell() was inside it, and the flush's offset (the position minus what
                    # is buffered) could be negative, the buffered bytes then lost.
                    await self._settle()
                self._append_from = self._pos
                self._pos = os.fstat(self._live_fd()).st_size
            self._wbuf += data
            self._taken += len(data)
            self._pos += len(data)
            if len(self._wbuf) >= self._buffer_size:
                try:
                    await self._flush_unlocked()
                except Exception:
                    written = self._write_failed(len(data))
                    if written is None:
                        raise  # (here, not in the helper: see FileIO.write)
                    return written
            else:
                self._moved()
            return len(data)

    def _write_failed(self, n: int) -> int | None:
        """The flush of a :meth:`write` of *n* bytes failed (its bytes were the last buffered):
        take back what of them did not reach the file, as ``io.BufferedWriter.write`` does.

        The flush kept what it could not write (:meth:`_flush_unlocked`).  If that
        includes all *n* bytes, they are not taken (the call raises, the bytes
        buffered before it stay for the next flush).  Else everything before them and
        their first part reached the file: an unbuffered file returns that part, as
        ``io.FileIO`` does (``write(2)``); a buffered one keeps the rest if it fits
        the buffer and returns *n*, else raises with the rest dropped, as the
        built-in's does after the first part of a write larger than its buffer.
        The position is after the bytes the file now holds, plus those buffered.
        What to return, or None: the caller raises the flush's failure."""
        kept = len(self._wbuf)
        if kept >= n:
            del self._wbuf[kept - n :]
            self._taken -= n
            self._pos -= n
            if self._appending and not self._wbuf:
                # nothing of it written: write(2) on O_APPEND moves the position only when it
                # wrote, so an "a+" file read from its middle stays there, as the built-in's
                self._pos = self._append_from
            self._moved()
            return None
        if self._buffer_size > 1 and kept <= self._buffer_size:
            self._moved()
            return n
        self._wbuf = bytearray()
        self._pos -= kept
        self._moved()
        if self._buffer_size > 1:
            return None
        return n - kept

    async def writelines(self, lines: Any) -> None:
        if self._file.closed:  # (before the lines are looked at, as io's writelines)
            raise _closed()
        for line in lines:
            await self.write(line)

    async def _flush_unlocked(self) -> None:
        """Write the buffer; a cancelled caller (``wait_for``'s timeout, a task group,
        ``Task.cancel``) loses none of it.

        A write queued for the loop's next submission is dropped when its await
        is cancelled, and one already submitted is cancelled in the kernel if it
        has not started, else lands (the await returns once it is over): which
        is not known.  So the bytes stay in the buffer until the write returned, and
        the next flush (``close()`` too) writes them again at the same offset,
        over themselves if the first landed.  An ``O_APPEND`` file appends
        wherever the offset says, so there the write is a task of its own that
        the caller awaits shielded: it runs to its end, and the next operation
        waits for it and raises its failure (a task and its wake-ups cost 26-45
        µs of CPU a flush, measured, so only appends pay it).

        A write that failed keeps what did not reach the file buffered (its
        first part may have: ``UringIOError.transferred``), for the next flush
        to write, as ``io.BufferedWriter`` does: a full disk or the file size
        limit may pass, and ``close()``, whose flush fails the same way, closes
        the file all the same.  Before session 25 the buffer was dropped, and
        a ``close()`` after the disk had room again reported success without
        the bytes."""
        if self._writing is not None:
            await self._settle()
        if not self._wbuf:
            return
        data = bytes(self._wbuf)
        start = self._pos - len(data)
        if self._appending:
            self._wbuf = bytearray()
            self._writing = write = asyncio.ensure_future(self._append_at(data, start))
            write.add_done_callback(functools.partial(self._append_dropped, data))
            await self._settle()
            return
        try:
            await self._write_at(data, start)
        except Exception as exc:
            del self._wbuf[: transferred(exc)]  # (the turn is held: nothing was added meanwhile)
            raise
        self._wbuf = bytearray()  # (the turn is held: nothing was added meanwhile)
        self._moved()

    async def _append_at(self, data: bytes, start: int) -> None:
        """An append's flush (a task of its own): what it could not write goes back to the
        front of the buffer, ahead of anything buffered since, for the next flush.

        The write is submitted by this task's first step (not queued for the loop's next
        submission, which a cancellation drops: appended again, the bytes would be twice
        in the file), so once it ran, the write lands whatever happens to the task.  A
        cancellation after that (``asyncio.run`` cancels every task when its main
        coroutine returns) waits for the write's result in this thread and ends the task
        normally; one before it (the task never ran) gives the bytes back to the buffer
        (:meth:`_append_dropped`).  Until session 27 such a write was dropped at a loop's
        end and its bytes, acknowledged by ``write()``, were lost."""
        try:
            try:
                pending = self._h.start_write_many([start], [data])
            except RingClosedError:
                raise _closed() from None
            try:
                results = await pending.wait_async()
            except asyncio.CancelledError:
                results = pending.wait()  # (one write, already in the kernel's hands)
            self._h.finish_writes([start], [data], results)
        except Exception as exc:
            self._wbuf[:0] = data[transferred(exc) :]
            raise

    def _append_dropped(self, data: bytes, write: asyncio.Future[None]) -> None:
        """An append's task ended: cancelled before its first step, it submitted nothing, so
        its bytes go back to the front of the buffer (the next flush, ``close()`` or the
        file's finalizer writes them)."""
        if write.cancelled():
            self._wbuf[:0] = data

    async def _write_at(self, data: bytes, start: int) -> None:
        try:
            await self._h.write(data, start)
        except RingClosedError:
            raise _closed() from None

    async def _settle(self) -> None:
        """Wait for an append's write in flight (``_writing``) and raise its failure; a
        cancelled caller leaves it running, kept for the next operation to wait for."""
        write = self._writing
        assert write is not None
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            if not write.done():
                raise  # this caller was cancelled: the write goes on
            self._writing = None
            task = asyncio.current_task()
            if not write.cancelled() or (task is not None and task.cancelling()):
                raise
            # the write's task was cancelled before it submitted anything: its bytes are
            # buffered again (_append_dropped) and the position holds; not this caller's
            # cancellation (it raised one nobody asked for in close())
            return
        except BaseException:
            self._writing = None  # (what did not land is buffered again, _append_at: the position holds)
            raise
        self._writing = None
        self._pos = os.fstat(self._live_fd()).st_size  # O_APPEND wrote at the end
        self._moved()

    async def flush(self) -> None:
        """Write the buffer; returns once the data reached the kernel."""
        async with self._turns:
            if self._file.closed:
                raise _closed()
            await self._flush_unlocked()

    # --- positioning ------------------------------------------------------------------
    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        turns = self._turns
        if (
            not turns.busy
            and whence == os.SEEK_SET
            and type(offset) is int
            and 0 <= offset < _OFFSET_LIMIT
            and not self._wbuf
            and self._writing is None
            and not self._file.closed
        ):
            # An absolute seek with nothing to write first awaits nothing, so it
            # needs no turn, and lseek would only check what is checked here.
            self._pos = offset
            self._rbuf = b""
            self._readsize = MIN_READ
            if self._fd_shared:  # (self._moved(), inlined)
                os.lseek(self._fd, offset, os.SEEK_SET)
            return offset
        if type(whence) is not int or not 0 <= whence <= _SEEK_LAST:
            whence = whence_argument(whence)
            if self._buffer_size > 1 and not 0 <= whence <= _SEEK_LAST:
                raise ValueError(f"whence value {whence} unsupported")  # io.BufferedRandom's check
        async with turns:
            if self._file.closed:
                raise _closed()
            if self._buffer_size > 1 and (type(offset) is not int or not -_OFFSET_LIMIT <= offset < _OFFSET_LIMIT):
                offset = operator.index(offset)
                if not -_OFFSET_LIMIT <= offset < _OFFSET_LIMIT:
                    raise ValueError(f"cannot fit '{type(offset).__name__}' into an offset-sized integer")
            await self._flush_unlocked()
            if whence == os.SEEK_CUR:
                offset, whence = self._pos + offset, os.SEEK_SET
            self._pos = os.lseek(self._live_fd(), offset, whence)
            self._rbuf = b""
            self._readsize = MIN_READ
            return self._pos

    async def tell(self) -> int:
        """The position, once the operations called before this one ran (their turns, in call order)."""
        turns = self._turns
        if turns.busy:
            # another task's operation is running or waiting: the position is the one after
            # them (before, tell() returned it at once, before a write or seek called earlier)
            async with turns:
                if self._file.closed:
                    raise _closed()
                return self._pos
        if self._file.closed:
            raise _closed()
        return self._pos

    async def truncate(self, size: int | None = None) -> int:
        async with self._turns:
            if self._file.closed:
                raise _closed()
            await self._flush_unlocked()
            self._rbuf = b""
            size = self._pos if size is None else size
            return self._file.truncate(size)

    # --- lifetime ------------------------------------------------------------------------
    def detach(self) -> FileIO:
        """The synchronous :class:`uringstack.FileIO` underneath, at this file's position
        (as aiofiles's ``detach`` returns the synchronous file); this object is unusable after."""
        raw = self.raw  # moves the descriptor's offset to the position
        if self._wbuf and not raw.closed:
            # The buffered bytes belong before the position (raw.write writes at the offset).
            os.lseek(self._fd, self._pos - len(self._wbuf), os.SEEK_SET)
            raw.write(self._wbuf)  # synchronous: detach() is not a coroutine in aiofiles either
            self._wbuf = bytearray()
        self._file = _Detached()
        return raw

    async def close(self) -> None:
        """Write what is buffered, then close (the file is closed even if that write failed).

        Cancelled (or interrupted by a raising signal) while it writes, it
        still writes what is buffered (synchronously: no caller is left to
        await), closes, then raises; an append's write in flight is let land
        first, and the file closes then (:meth:`_close_after`)."""
        async with self._turns:
            if self._file.closed:
                return
            try:
                await self._flush_unlocked()
            except Exception:
                self._file.close()
                raise
            except BaseException:
                write = self._writing
                if write is not None and not write.done():
                    write.add_done_callback(self._close_after)
                else:
                    self._close_after(None)
                raise
            self._file.close()

    def _close_after(self, write: asyncio.Future[None] | None) -> None:
        """A cancelled ``close()``'s rest (or an unclosed file's, collected), once its
        append's write (if any) landed: what is still buffered, written synchronously,
        then the close.  No caller is left to raise a failure to: the loop's exception
        handler reports it (with no loop running, it is raised: from ``__del__``,
        Python prints it)."""
        self._writing = None
        failure = None if write is None or write.cancelled() else write.exception()
        try:
            if self._wbuf and not self._file.closed and failure is None:
                self._write_buffered()
        except Exception as exc:
            failure = exc
        finally:
            with contextlib.suppress(Exception):
                self._file.close()
        if failure is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise failure from None  # (collected with no loop running: Python prints it as unraisable)
            loop.call_exception_handler(
                {"message": f"uringstack.aio: closing {self!r} after a cancelled close()", "exception": failure}
            )

    def _flush_sync(self) -> None:
        """Write what is buffered, with no loop to await on: the file's handle is closing
        (``handle.close()``, :class:`_SyncLayer`).  A failure is raised (by the closer)."""
        file = self._file
        if isinstance(file, FileIO) and not file.closed and self._wbuf:
            self._write_buffered()

    def _write_buffered(self) -> None:
        """What is buffered, written synchronously where it belongs (it ends at the
        position); the buffer is emptied once the write succeeded."""
        data = bytes(self._wbuf)
        self._h.write_from(data, self._pos - len(data))
        self._wbuf = bytearray()

    def _close_sync(self) -> None:
        """:meth:`close` with no loop to await on (``stack.close()``, interpreter exit:
        :class:`_SyncLayer`): what is buffered is written, then the file closes."""
        file = self._file
        if isinstance(file, FileIO) and not file.closed:
            self._close_after(None)

    def __del__(self) -> None:
        # As the built-in file's finalizer (which aiofiles' wrapped file has): an
        # unclosed file writes its buffer and closes, with a ResourceWarning.
        file = self.__dict__.get("_file")
        if not isinstance(file, FileIO) or file.closed:
            return
        warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=2, source=self)
        self._close_after(None)

    async def __aenter__(self) -> AsyncBinaryFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<uringstack.aio.AsyncBinaryFile wrapping {self._file!r}>"


class _SyncLayer:
    """An async file as the closers that cannot await see it: ``stack.close()`` and the
    default stack's exit call :meth:`close`, ``handle.close()`` calls :meth:`flush`
    (through the raw file's layers, as for ``uringstack.open``'s buffered layer).  Until
    session 27 none of them knew the async file: what it held buffered was lost.

    The file holds this object (the closers hold it weakly); it holds the file weakly,
    so an unreferenced file is still collected (and its finalizer writes its buffer)."""

    __slots__ = ("__weakref__", "_file", "raw")

    def __init__(self, file: AsyncBinaryFile, raw: FileIO) -> None:
        self._file = weakref.ref(file)
        self.raw = raw  # (what FileIO._handle_flushing checks a layer is over)

    def flush(self) -> None:
        file = self._file()
        if file is not None:
            file._flush_sync()

    def close(self) -> None:
        file = self._file()
        if file is not None:
            file._close_sync()


class AsyncTextFile(_LineReader[str]):
    """Text over :class:`AsyncBinaryFile`: decoding and newlines as ``io.TextIOWrapper``."""

    def __init__(
        self, binary: AsyncBinaryFile, encoding: str, errors: str | None, newline: str | None, mode: str
    ) -> None:
        if newline not in (None, "", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline!r}")
        # _Detached after detach(), like the binary file's raw file
        self.buffer: AsyncBinaryFile | _Detached = binary
        self._turns = _Turns()
        self.encoding = encoding
        self.errors = errors or "strict"
        self.mode = mode
        self._newline = newline
        self._encoder = codecs.getincrementalencoder(encoding)(self.errors)
        self._decoder_factory = codecs.getincrementaldecoder(encoding)
        self._fresh_flags = self._new_decoder().getstate()[1]  # a new decoder's (see _cookie)
        cr = codecs.getincrementalencoder(encoding)(self.errors)
        cr.setstate(0)  # (no byte order mark)
        self._cr_size = len(cr.encode("\r"))
        self._restart(binary._pos)

    def _new_decoder(self) -> Any:
        decoder: Any = self._decoder_factory(self.errors)
        if self._newline is None or self._newline == "":
            decoder = io.IncrementalNewlineDecoder(decoder, translate=self._newline is None)
        return decoder

    def _reset_decoder(self) -> None:
        self._decoder = self._new_decoder()
        self._chars = ""
        self._eof = False
        # Decoded chunks whose text was not all returned yet, oldest first:
        # (byte offset of data, decoder state before it, data, characters it gave),
        # and how many characters of the oldest one were returned (for tell()).
        self._chunks: deque[tuple[int, Any, bytes, int]] = deque()
        self._front_used = 0

    def _restart(self, pos: int, flags: int | None = None) -> None:
        """Decode and encode afresh from byte *pos*, as ``io.TextIOWrapper``'s ``seek``.

        The decoder starts in state ``(b"", flags)``; by default a new
        decoder's at 0 and flags 0 elsewhere (no byte order mark to look
        for: a new UTF-16 decoder raises ``UnicodeError`` on text without one)."""
        self._reset_decoder()
        if flags is None:
            flags = self._fresh_flags if pos == 0 else 0
        if flags != self._fresh_flags:
            self._decoder.setstate((b"", flags))
        self._encode_from(pos)

    def _encode_from(self, pos: int) -> None:
        """Set the encoder up for writing at byte *pos*, as ``io.TextIOWrapper`` does at open and seek.

        An encoder that starts with a byte order mark (UTF-16, UTF-32,
        ``utf-8-sig``) writes it only at the start of the file: elsewhere it
        starts as if the mark were written. Without this, appending to a
        UTF-16 file put a second mark in the middle of it, and writing at 0
        after a seek wrote over the file's mark instead of writing it."""
        if pos == 0:
            self._encoder.reset()
        else:
            self._encoder.setstate(0)

    def _check_readable(self) -> None:
        if self.buffer.closed:
            raise _closed()
        if not self.buffer._can_read:
            raise io.UnsupportedOperation("not readable")

    def _consume(self, n: int) -> str:
        out, self._chars = self._chars[:n], self._chars[n:]
        left = len(out)
        while self._chunks:
            avail = self._chunks[0][3] - self._front_used
            if left < avail or (left == avail and len(self._chunks) == 1 and self._chars == ""):
                self._front_used += left
                break
            left -= avail
            self._chunks.popleft()
            self._front_used = 0
        return out

    @property
    def name(self) -> Any:
        return self.buffer.name

    @property
    def closed(self) -> bool:
        return self.buffer.closed

    @property
    def _file(self) -> FileIO:
        return self.buffer.raw

    @property
    def newlines(self) -> Any:
        return getattr(self._decoder, "newlines", None)

    def fileno(self) -> int:
        return self.buffer.fileno()

    def readable(self) -> bool:
        return self.buffer.readable()

    def writable(self) -> bool:
        return self.buffer.writable()

    def seekable(self) -> bool:
        return self.buffer.seekable()

    def isatty(self) -> bool:
        return self.buffer.isatty()

    def detach(self) -> FileIO:
        """The synchronous :class:`uringstack.FileIO` underneath, positioned after the text
        returned so far (aiofiles returns the synchronous buffer); this object is unusable after."""
        binary = self.buffer
        if self._chunks or self._chars:
            raise io.UnsupportedOperation("detach() with decoded text not yet read; seek() first")
        self.buffer = _Detached()
        return binary.detach()

    async def _more(self) -> bool:
        """Decode one more chunk into the pending text; False at end of file."""
        if self._eof:
            return False
        start = await self.buffer.tell()
        state = self._decoder.getstate()
        data = await self.buffer.read1(CHUNK)
        self._eof = not data
        text = self._decoder.decode(data, final=self._eof)
        if data:
            self._chunks.append((start, state, data, len(text)))
        self._chars += text
        return bool(data)

    async def _read(self, size: int = -1) -> str:
        self._check_readable()  # (read(0) too, as the built-in)
        if size is None or size < 0:
            data = await self.buffer.read()
            text: str = self._chars + self._decoder.decode(data, final=True)
            self._restart(await self.buffer.tell())
            self._eof = True
            return text
        while len(self._chars) < size and await self._more():
            pass
        return self._consume(size)

    def _line_end(self, start: int) -> int:
        """Index just after the first line ending at or after *start*, or -1."""
        chars = self._chars
        if self._newline is None or self._newline == "\n":
            i = chars.find("\n", start)
            return i + 1 if i >= 0 else -1
        if self._newline == "":
            for i in range(start, len(chars)):
                if chars[i] == "\n":
                    return i + 1
                if chars[i] == "\r":
                    if i + 1 < len(chars):
                        return i + 2 if chars[i + 1] == "\n" else i + 1
                    return -1 if not self._eof else i + 1
            return -1
        i = chars.find(self._newline, start)
        return i + len(self._newline) if i >= 0 else -1

    async def _readline(self, size: int = -1) -> str:
        self._check_readable()
        start = 0
        while True:
            end = self._line_end(start)
            if end >= 0:
                break
            if 0 <= size <= len(self._chars):
                end = size
                break
            start = max(0, len(self._chars) - 1)
            if not await self._more():
                end = self._line_end(0)
                if end < 0:
                    end = len(self._chars)
                break
        if 0 <= size < end:
            end = size
        return self._consume(end)

    async def _write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self.buffer.closed:  # (before "not writable", as io.TextIOWrapper)
            raise _closed()
        text = s
        if self._newline not in (None, "", "\n"):
            text = text.replace("\n", self._newline)
        elif self._newline is None and os.linesep != "\n":
            text = text.replace("\n", os.linesep)
        await self._unread()
        encoder, buffer = self._encoder, self.buffer
        state, taken = encoder.getstate(), getattr(buffer, "_taken", None)
        data = encoder.encode(text)
        try:
            await buffer.write(data)
        except BaseException:
            if taken is not None and buffer._taken == taken:
                # None of the bytes were taken (a cancelled wait, a closed file, an earlier
                # failure raised): the encoder goes back to before them, or a stateful
                # encoding's next write lacks their shift sequence (iso2022_jp's return to
                # ASCII was lost after a cancelled write, session 32)
                encoder.setstate(state)
            raise
        if self._fresh_flags and self._decoder.getstate()[1] == self._fresh_flags:
            # a new decoder (written from 0): what follows is read past the start (see _restart)
            self._decoder.setstate((b"", 0))
        return len(s)

    async def writelines(self, lines: Any) -> None:
        if self.buffer.closed:  # (before the lines are looked at, as io's writelines)
            raise _closed()
        async with self._turns:
            for line in lines:
                await self._write(line)

    async def _unread(self) -> None:
        """Drop decoded text not yet returned, moving the binary position back to it (a write goes there)."""
        if self._chars or self._chunks or self._eof:
            pos, flags, _ = self._uncookie(await self._tell())
            if self._newline in (None, ""):
                flags &= ~1  # a '\r' held back is returned (skip): written over after it, not read
            await self.buffer.seek(pos)
            self._restart(pos, None if pos == 0 else flags)

    async def flush(self) -> None:
        async with self._turns:
            await self.buffer.flush()

    def _cookie(self, pos: int, flags: int, skip: int) -> int:
        """What :meth:`tell` returns: byte position *pos*, where a decoder in state
        ``(b"", flags)`` starts and gives *skip* characters already returned.

        As ``io.TextIOWrapper``'s cookies: the byte position, and above bit 64
        the decoder's flags (a ``'\r'`` the newline decoder held back, a
        UTF-16 byte order found) and the characters to skip. So a plain byte
        offset is a new decoder at 0 and, elsewhere, a decoder with flags 0
        (UTF-16 and UTF-32 in the machine's byte order, with no mark to find):
        what the built-in's ``seek`` makes of one. Before, every offset got a
        new decoder, and one expecting a byte order mark mid-file raised
        ``UnicodeError``."""
        if not skip and flags & 1 and self._newline in (None, "") and pos >= self._cr_size:
            # a '\r' the newline decoder held back, not returned: the position is before
            # it (where a write goes), and a decoder there reads it again (none before
            # byte 0: there the flag came from a cookie seek() was given, kept as given)
            pos -= self._cr_size
            flags &= ~1
        if pos == 0 and flags == self._fresh_flags:
            flags = 0
        return pos | flags << 64 | skip << 128

    def _uncookie(self, cookie: int) -> tuple[int, int, int]:
        """*cookie* as ``(pos, flags, skip)`` (see :meth:`_cookie`)."""
        pos, flags = cookie & _LOW64, cookie >> 64 & _LOW64
        if pos == 0 and flags == 0:
            flags = self._fresh_flags
        return pos, flags, cookie >> 128

    async def _tell(self) -> int:
        """Where the next character to be read is: a cookie for :meth:`seek`.

        Found as ``io.TextIOWrapper`` finds it: re-decode the chunk the next
        character came from, from the decoder state saved before that chunk,
        to the first point where the decoder holds no partial character and has
        given as many characters as were returned (else the last point before it
        gave more, with the characters to skip). A plain byte offset
        unless the decoder's state there is not a new decoder's, or characters
        must be skipped (see :meth:`_cookie`). Before, it was always a byte
        offset, one byte past a ``'\r'`` the newline decoder held back: a
        write after a read then went one byte too far, and a ``seek`` to it
        lost a character."""
        if not self._chunks:
            pos = await self.buffer.tell()
            buffered, flags = self._decoder.getstate()
            return self._cookie(pos - len(buffered), flags, 0)
        start, state, data, _ = self._chunks[0]
        want = self._front_used
        best = (start - len(state[0]), state[1], want)
        decoder = self._new_decoder()
        decoder.setstate(state)
        got = 0
        # (want 0 too: past a byte order mark, which gives no character, as the built-in's
        # position is; before, such a file's truncate(None) after a read cut the mark off)
        for k in range(len(data)):
            got += len(decoder.decode(data[k : k + 1]))
            if got > want:
                break
            buffered, flags = decoder.getstate()
            if not buffered:
                best = (start + k + 1, flags, want - got)
                if got == want:
                    break
        return self._cookie(*best)

    async def _seek(self, cookie: int, whence: int = os.SEEK_SET) -> int:
        if self.buffer.closed:  # (before the cookie is looked at, as io.TextIOWrapper)
            raise _closed()
        if whence not in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END):  # (lseek's EINVAL, as TextIOWrapper says it)
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if whence == os.SEEK_CUR and cookie != 0:
            raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
        if whence == os.SEEK_END and cookie != 0:
            raise io.UnsupportedOperation("can't do nonzero end-relative seeks")
        if whence == os.SEEK_CUR:
            cookie, whence = await self._tell(), os.SEEK_SET
        if whence != os.SEEK_SET:
            pos = await self.buffer.seek(cookie, whence)
            self._restart(pos)
            return pos
        if cookie < 0:
            raise ValueError(f"negative seek position {cookie}")
        pos, flags, skip = self._uncookie(cookie)
        await self.buffer.seek(pos)
        self._restart(pos, flags)
        if skip:
            while len(self._chars) < skip and await self._more():
                pass
            self._consume(skip)
        return cookie

    async def _truncate(self, size: int | None = None) -> int:
        await self._unread()
        return await self.buffer.truncate(size)

    async def close(self) -> None:
        async with self._turns:
            await self.buffer.close()

    # The public operations: each one whole, in call order (the binary file's turns are
    # per binary call; a text operation makes several, with its own state between them).
    async def read(self, size: int = -1) -> str:
        """Up to *size* characters (all the rest when negative)."""
        size = size_argument(size)
        async with self._turns:
            return await self._read(size)

    async def readline(self, size: int = -1) -> str:
        """One line, its ending translated as *newline* asks; at most *size* characters."""
        size = index_argument(size)  # (io.TextIOWrapper's takes no None, unlike the binary files')
        async with self._turns:
            return await self._readline(size)

    async def readlines(self, hint: int = -1) -> list[str]:
        """The lines left (until their length reaches *hint*, when positive), in one turn."""
        async with self._turns:
            return await _read_lines(self._readline, hint)

    async def write(self, s: str) -> int:
        """Encode and write *s* where the text read so far ends; returns ``len(s)``."""
        async with self._turns:
            return await self._write(s)

    async def tell(self) -> int:
        """A cookie for :meth:`seek` (see :meth:`_tell`)."""
        async with self._turns:
            return await self._tell()

    async def seek(self, cookie: int, whence: int = os.SEEK_SET) -> int:
        """To a :meth:`tell` cookie (or a byte offset), the start, or with *whence* 2 the end."""
        whence = whence_argument(whence)
        async with self._turns:
            return await self._seek(cookie, whence)

    async def truncate(self, size: int | None = None) -> int:
        """Cut (or extend) the file to *size* bytes, by default where the text read so far ends."""
        async with self._turns:
            return await self._truncate(size)

    async def __aenter__(self) -> AsyncTextFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<uringstack.aio.AsyncTextFile wrapping {self.buffer!r}>"


class _Detached:
    """What a detached file holds instead of what it wrapped: any use raises, as in ``io``."""

    @staticmethod
    def error() -> ValueError:
        return ValueError("underlying buffer has been detached")

    def __getattr__(self, name: str) -> Any:
        raise self.error()


class OpenContext(Awaitable[F], Generic[F]):
    """What :func:`open` returns: ``await`` it for the file, or ``async with`` it."""

    __slots__ = ("_coro", "_obj")
    _coro: Awaitable[F]
    _obj: F | None

    def __init__(self, coro: Awaitable[F]) -> None:
        self._coro = coro
        self._obj = None

    def __await__(self) -> Generator[Any, None, F]:
        if self._obj is None:
            self._obj = yield from self._coro.__await__()
        return self._obj

    async def __aenter__(self) -> F:
        return await self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            # closing must finish even when the task is being cancelled
            await asyncio.shield(obj.close())


def open(
    file: int | str | bytes | os.PathLike[str] | os.PathLike[bytes],
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Opener | None = None,
    *,
    stack: Stack | None = None,
    loop: Any = None,
    executor: Any = None,
) -> OpenContext[Any]:
    """aiofiles' ``open``: ``async with uringstack.aio.open(path) as f`` or ``f = await ...open(path)``.

    Arguments and errors are the built-in ``open()``'s; *loop* and *executor*
    are accepted for aiofiles compatibility and ignored (no thread pool).
    """

    async def _open() -> Any:
        return _open_sync(file, mode, buffering, encoding, errors, newline, closefd, opener, stack)

    return OpenContext(_open())


def _open_sync(
    file: Any,
    mode: str,
    buffering: int,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
    closefd: bool,
    opener: Opener | None,
    stack: Stack | None,
) -> Any:
    from uringstack.fileobj.openfile import check_mode

    raw_mode, binary = check_mode(file, mode, buffering, encoding, errors, newline)
    check_stack_arguments("uringstack.aio.open()", stack, None)
    raw = FileIO(file, raw_mode, closefd, opener=opener, stack=stack)
    try:
        if raw.handle is None:
            raise io.UnsupportedOperation(f"uringstack.aio.open serves regular files and block devices, not {file!r}")
        if raw.handle.direct:
            # (an opener's or a given descriptor's O_DIRECT: the async layers read and write
            # at any offset and length, which O_DIRECT refuses; each op failed, close() too)
            raise io.UnsupportedOperation(
                f"uringstack.aio.open does not serve O_DIRECT descriptors ({file!r}): use "
                "uringstack.open(..., direct=True), or a stack handle's aligned read_many_async"
            )
        if buffering == 0 and not binary:
            raise ValueError("can't have unbuffered text I/O")
        size = 1 if buffering == 0 else (buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE)
        binary_file = AsyncBinaryFile(raw, size)
        layer = binary_file._sync_layer = _SyncLayer(binary_file, raw)
        raw._layered(layer, None)  # flushed if the handle is closed behind it
        if stack is None:
            from uringstack.fileobj.default_stack import track

            track(layer, raw=False)  # closed (written) at exit, before the stack
        if raw._home is not None:
            raw._home.close_with_stack(layer, outer=True)  # closed before the raw file's handle
        if binary:
            return binary_file
        encoding = io.text_encoding(encoding)
        if encoding == "locale":  # what io.TextIOWrapper resolves itself
            encoding = locale.getencoding()
        return AsyncTextFile(binary_file, encoding, errors, newline, mode)
    except BaseException:
        raw.close()
        raise
