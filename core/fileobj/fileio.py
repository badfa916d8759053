"""``uringstack.FileIO``: ``io.FileIO``'s constructor and behaviour, its I/O through a stack.

The file is opened exactly as ``io.FileIO`` opens it (same flags, *opener*,
*closefd*, same errors), then handed to a stack (``Stack.open(..., adopt_fd=)``)
so every read and write goes through the stack's handle: io_uring, or the
fallback thread pool, whatever the stack chose (how a waited buffered write
is served, inline or by the ring, is the backend's decision: see
``uringstack.stack.uring_backend``).  The file position stays the kernel's
(reads at the file position where the backend can, else ``lseek``
bookkeeping around positional I/O), so ``fileno()``, ``dup`` and
``os.lseek`` users see what they would with the built-in.

Pipes, ttys, sockets and character devices have no offsets for a stack to
serve: on them ``FileIO`` reads and writes the descriptor with
``os.readv``/``os.write``, as ``io.FileIO`` does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import operator
import os
import stat
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.errors import AlignmentError, RingClosedError, transferred
from uringstack.fileobj._fastio import CachedReadInto
from uringstack.fileobj.arguments import (
    C_INT_LIMIT,
    SSIZE_LIMIT,
    buffer_view,
    check_stack_arguments,
    size_argument,
    type_name,
    whence_argument,
)
from uringstack.fileobj.closing import close_flushed
from uringstack.fileobj.stream import ReadAhead, WriteBehind, direct_buffer, finish_read
from uringstack.ring.interrupts import FAILURES, close_popped, close_stored, despite_signals, open_stored
from uringstack.ring.native import ffi
from uringstack.ring.pins import pin_buffer
from uringstack.stack.uring_backend import MAX_RW_COUNT, UringFileIO

if TYPE_CHECKING:
    from _typeshed import MaybeNone

    from uringstack.stack import Stack
    from uringstack.stack.handle import FileHandle

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]
"""A file name, as ``os.open`` and ``io.FileIO`` take it."""
Opener = Callable[[PathArg, int], int]
"""``opener(name, flags) -> fd``: called with the name exactly as given, as ``io.FileIO`` does."""
_CLOSED_MSG = "I/O operation on closed file"
_BAD_MODE = "Must have exactly one of create/read/write/append mode and at most one plus"
_RAW_CHUNK = 1 << 20  # readall()'s request size on a growing or unknown-size file
# The backend steps a waited buffered write takes, which the C write step mirrors
_DIRECT_WRITE_STEPS = ("start_rw", "writes_inline", "write_inline")


def _serves_any_thread(backend: Any) -> bool:
    """Whether *backend* has a ring that any thread may use: where a C step may stand in
    for its Python step (a SINGLE_ISSUER ring checks the caller's thread per op)."""
    ring = getattr(backend, "ring", None)
    return ring is not None and not ring._single_issuer


def _closed_error() -> ValueError:
    return ValueError(_CLOSED_MSG)


def _drop_handle(handle: FileHandle) -> None:
    """Close the handle of a file whose construction failed (safe to run again)."""
    with contextlib.suppress(*FAILURES):  # (nothing was written through it: the construction's error is the one to see)
        handle.close()


def _serve_reopened(fd: int, flags: int, open_handle: Callable[[int], FileHandle]) -> FileHandle:
    """``open_handle(own)``, *own* a second open of *fd*'s file with *flags*: the stack serves a
    duplicate of it (``Stack.open(adopt_fd=)``), so *own* is closed here whatever happens
    (stored by C as it is opened, closed by ``close_popped``: never twice, never leaked)."""
    reopened: list[int] = []
    try:
        return open_handle(open_stored(reopened, f"/proc/self/fd/{fd}", flags))
    finally:
        close_stored(reopened)


def _drop_locals(exc: BaseException) -> None:
    """Clear the locals of the finished frames in *exc*'s traceback (the failed call's, below ours).

    A failed read or write leaves its exception referring to those frames,
    whose locals hold the caller's ``memoryview`` (``io.BufferedWriter`` and
    ``BufferedReader`` pass one over their buffer) and the cffi pin of it,
    which exports the view.  Kept by the caller in a reference cycle (stored,
    logged, a test's ``pytest.raises``), the garbage collector of Python 3.11
    crashes the interpreter breaking it (CPython gh-77894, fixed in 3.12: a
    view cleared while exported).  So a failure leaves no pin in its frames:
    this clears the inner ones, and the caller deletes its own pin before it
    raises (an op still in flight keeps its pin in the handle's tracker, not in
    a frame).  The traceback's lines stay."""
    traceback.clear_frames(exc.__traceback__)


def _take_lock(lock: threading.RLock) -> None:
    """Wait for *lock*, which another thread holds, inside the ``try`` whose ``finally`` releases it.

    The hot paths take the file's lock with ``acquire(False)`` as the first
    statement of that ``try`` (``with lock:`` costs ~1,000 instructions more a
    call): a raising signal (Ctrl-C) can land only after the lock was taken,
    where the ``finally`` releases it.  A plain ``acquire()`` before the
    ``try``, as before, left the lock held for good when a signal landed right
    after it, and every later use of the file (its ``close()`` too) hung.  The
    wait here can be cut short by a signal before the lock is taken; it is
    then taken anyway (the holder's operation ends first) before the
    exception propagates, so the ``finally`` always has it to release.  The
    caller's ``acquire(False)`` failed, so this thread did not own the lock
    before: owning it now means it was taken here."""
    try:
        lock.acquire()
    except BaseException:
        despite_signals(_acquire_unless_owned, lock)
        raise


def _acquire_unless_owned(lock: threading.RLock) -> None:
    if not lock._is_owned():  # type: ignore[attr-defined]
        lock.acquire()


class _Held:
    """What a write-only file holds for one gathered write (:meth:`FileIO._hold`).

    Its own slotted object, not ``FileIO`` attributes: a ``FileIO`` is an
    ``io.RawIOBase`` subclass, whose instance attributes the 3.11 interpreter
    cannot specialize (~200 instructions a read), and copyfileobj reaches
    ``_hold`` with every chunk; a slot is read in a few."""

    __slots__ = ("chunks", "limit", "lock", "nbytes", "pos")

    def __init__(self, limit: int, lock: threading.RLock) -> None:
        self.chunks: list[bytes] = []  # in file order
        self.nbytes = 0  # their total length: not 0 while anything is held
        self.pos = 0  # file offset of chunks[0]
        self.limit = limit  # written once this many bytes are held
        self.lock = lock  # the file's own lock (FileIO._lock), not another one


class _ReadHere:
    """What :meth:`FileIO.readinto`'s read at the file position uses: the handle and the file's lock.

    Present (``FileIO._here``) only where that read serves the file: readable,
    buffered (not O_DIRECT, so no read-ahead), ``closefd=True`` (with a dup, the
    handle's position would not be the caller's descriptor's), and a backend
    that reads at the file position (dropped for good the first time it says
    it cannot).  One slotted object, so the hot read checks one ``FileIO``
    attribute instead of six (~180 instructions each: see :class:`_Held`)."""

    __slots__ = ("handle", "lock")

    def __init__(self, handle: FileHandle, lock: threading.RLock) -> None:
        self.handle = handle
        self.lock = lock  # the file's own lock (FileIO._lock)


def _reopen_flags(status: int) -> int:
    """Flags that open the file again through ``/proc/self/fd`` as the descriptor with status
    flags *status* (``F_GETFL``) was opened, without ``O_DIRECT`` (the caller adds it).

    Its access mode and ``O_APPEND``/``O_SYNC``/``O_DSYNC`` kept: a second descriptor without
    them appended at offset 0 and made an ``O_SYNC`` caller's writes through it not durable.
    ``O_TMPFILE`` stays with the first open (it would make another file)."""
    return (status | os.O_CLOEXEC) & ~(os.O_DIRECT | os.O_TMPFILE | os.O_CREAT | os.O_EXCL | os.O_TRUNC)


def _check_raw_mode(mode: str) -> None:
    """io.FileIO's mode check, character by character as the C one runs, with its messages."""
    rwa = plus = False
    for c in mode:
        if c in "xrwa":
            if rwa:
                raise ValueError(_BAD_MODE)
            rwa = True
        elif c == "+":
            if plus:
                raise ValueError(_BAD_MODE)
            plus = True
        elif c != "b":
            raise ValueError(f"invalid mode: {mode[:200]}")
    if not rwa:
        raise ValueError(_BAD_MODE)


class FileIO(io.RawIOBase):
    """Raw binary file, like ``io.FileIO``, doing its I/O through a uringstack stack.

    ``FileIO(name_or_fd, mode="r", closefd=True, opener=None, *, stack=None, direct=False)``:
    *stack* defaults to the process-wide stack (built on first use, closed at
    exit).  ``direct=True`` adds ``O_DIRECT``: reads go through aligned internal
    buffers (any size and offset work); a write whose offset or length is not
    a multiple of ``block_size`` goes through a second, buffered descriptor of
    the same file for that call.
    """

    _fd = -1
    _created = False
    _readable = False
    _writable = False
    _append_mode = False  # "a" in the mode: the mode string, and the move to the end at open
    _appending = False  # the descriptor has O_APPEND: where its writes land (os.fdopen-style fds may differ)
    _seekable: bool | None = None
    _closefd = True
    _handle: FileHandle | None = None
    _buffered_handle: FileHandle | None = None
    _handle_fd_apart = False  # the handle serves a descriptor opened apart, not a dup of ours (_adopt)
    _readahead: ReadAhead | None = None
    _writebehind: WriteBehind | None = None
    _closed_flag = False
    _home: Stack | None = None  # the stack serving the file (the default one included)
    _held: _Held | None = None  # a write-only buffered file whose writer may hand over bytes (_hold)
    _here: _ReadHere | None = None  # readinto's read at the file position, where it serves the file
    # The layers uringstack.open put over this file (the buffer, the text layer or None), held
    # weakly: flushed when the handle is closed behind the file (_handle_flushing)
    _layers: tuple[weakref.ref[io.BufferedIOBase], weakref.ref[io.TextIOWrapper] | None] | None = None

    def __init__(
        self,
        file: int | PathArg,
        mode: str = "r",
        closefd: bool = True,
        opener: Opener | None = None,
        *,
        stack: Stack | None = None,
        direct: bool = False,
    ) -> None:
        # Argument checks in the order and words of the C io.FileIO (Modules/_io/fileio.c).
        if not isinstance(mode, str):
            raise TypeError(f"FileIO() argument 'mode' must be str, not {type_name(mode)}")
        if "\0" in mode:
            raise ValueError("embedded null character")
        check_stack_arguments("FileIO()", stack, direct)
        if self._fd >= 0:
            try:
                self.close()
            finally:
                self._fd = -1
                self._closed_flag = False
                self._handle_fd_apart = False
                self._here = self._held = None  # (the new file's are set up below)
                self._disarm_cached_reads()
        if isinstance(file, float):
            raise TypeError("integer argument expected, got float")
        path: PathArg | None = None
        if isinstance(file, int):
            fd = file
            if fd < 0:
                raise ValueError("negative file descriptor")
        else:
            fd = -1
            path = file
        _check_raw_mode(mode)
        if "x" in mode:
            self._created = True
            self._writable = True
            flags = os.O_EXCL | os.O_CREAT
        elif "r" in mode:
            self._readable = True
            flags = 0
        elif "w" in mode:
            self._writable = True
            flags = os.O_CREAT | os.O_TRUNC
        else:
            self._writable = True
            self._append_mode = True
            flags = os.O_APPEND | os.O_CREAT
        if "+" in mode:
            self._readable = True
            self._writable = True
        if self._readable and self._writable:
            flags |= os.O_RDWR
        elif self._readable:
            flags |= os.O_RDONLY
        else:
            flags |= os.O_WRONLY
        flags |= os.O_CLOEXEC
        if direct:
            flags |= os.O_DIRECT
        self._lock = threading.RLock()
        self._direct = direct
        if stack is not None and stack.closed:
            # Before the open: "w" truncated (and "x" created) the file, then the stack's
            # refusal came (session 32); a thread opening while another closes the stack
            # still meets _adopt's check, after the open, as a built-in file racing a close
            raise ValueError("I/O operation on a closed stack: the file was not opened")

        # The descriptor this call opened, until the handle's own (Stack.open serves a
        # duplicate) takes its place: in a list that C stores it in as open(2) returns it
        # (list.extend over a map), so a raising signal handler (Ctrl-C) finds no point
        # between the open and the store, and the cleanup below always sees it.
        opened: list[int] = []
        try:
            if path is not None:
                if not closefd:
                    raise ValueError("Cannot use closefd=False with file name")
                if opener is None:
                    fd = open_stored(opened, path, flags, 0o666)
                else:
                    fd = opener(path, flags)
                    if not isinstance(fd, int):
                        raise TypeError("expected integer from opener")
                    if fd < 0:
                        raise OSError("Negative file descriptor")
                    opened.append(fd)
            self._closefd = closefd
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
            self._blksize = st.st_blksize if st.st_blksize > 1 else io.DEFAULT_BUFFER_SIZE
            self.name = file
            status = fcntl.fcntl(fd, fcntl.F_GETFL)
            # The descriptor's flags, not the mode, decide what its writes do (a caller's fd,
            # os.fdopen-style, may differ): O_APPEND appends whatever the offset; and a second
            # descriptor of the file (_adopt, _buffered) keeps them (O_APPEND, O_SYNC, O_DSYNC)
            self._appending = bool(status & os.O_APPEND)
            self._reopen_with = _reopen_flags(status)  # (a second descriptor's flags, O_DIRECT apart)
            if self._append_mode:
                # As io.FileIO: position at the end now, not only at the first write.
                try:
                    os.lseek(fd, 0, os.SEEK_END)
                except OSError as e:
                    if e.errno != errno.ESPIPE:
                        raise
            if stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode):
                if not direct and status & os.O_DIRECT:
                    # A descriptor (given, or from the opener) that is O_DIRECT already: served
                    # as such (aligned internal buffers), where taken as buffered every
                    # unaligned read or write failed with EINVAL, as with the built-in open()
                    direct = self._direct = True
                self._handle = self._adopt(fd, file, stack)
                if opened and opener is None and not self._handle_fd_apart:
                    # One descriptor per file, as the built-in's: the handle's duplicate
                    # (the same open file description) is this file's from now on.
                    fd = self._handle.fd
                    close_popped(opened)
            elif direct:
                raise ValueError(f"direct=True needs a regular file or block device, not {file!r}")
        except BaseException:
            # The handle (if made) closes its own descriptor; ours is closed here, and only
            # here: no descriptor this call opened is ever the handle's.
            if self._handle is not None:
                despite_signals(_drop_handle, self._handle)
            close_stored(opened)
            raise
        self._fd = fd
        self._stack = stack
        if self._handle is not None and self._readable and not direct and closefd:
            self._here = _ReadHere(self._handle, self._lock)
            self._arm_cached_reads(self._handle)
        if stack is None:
            from uringstack.fileobj.default_stack import track

            track(self, raw=True)

    def _arm_cached_reads(self, handle: FileHandle) -> None:
        """Make this file's ``readinto`` the C page-cache step where it serves (``_fastio.c``).

        ``io.BufferedReader`` (and so ``hashlib.file_digest``, ``shutil.copyfileobj``)
        calls ``raw.readinto`` once per chunk; the Python method's frames cost
        ~1.5-1.9 µs a call more than ``io.FileIO``'s, which is what the C object
        removes.  It is an instance attribute (the class's method stays, and takes
        every call the C step hands back: :meth:`_readinto_fallback`).  Only on a
        backend whose Python step copies cached reads (``read_cached``: io_uring's)
        on a ring any thread may use (a SINGLE_ISSUER ring checks the caller's
        thread per read); the C step reads the backend's switches per call, as
        the Python step does (``_reads_cached_inline``, ``completion_hook``)."""
        backend = handle._io
        if handle._cached is not None and _serves_any_thread(backend):
            vars(self)["readinto"] = CachedReadInto(self._fd, self._lock, backend, handle._inflight, self, MAX_RW_COUNT)

    def _disarm_cached_reads(self) -> None:
        """Take the C step away (closed, or the backend stopped reading at the file
        position): ``readinto`` is the class's method again, and a reference to the C
        object someone kept hands every call to it."""
        fast = vars(self).get("readinto")
        if isinstance(fast, CachedReadInto):
            del vars(self)["readinto"]
            fast.disarm()

    def _readinto_fallback(self, b: Any, copied: int | None) -> int | None:
        """What the C ``readinto`` step (``_fastio.CachedReadInto``) hands back to Python.

        *copied* -1: the whole of :meth:`readinto` (not a plain buffer, the file's lock
        held by another thread, closed, or the copy failed: the Python step retries it
        and reports, or remembers a refusal, which takes the C step away).  Otherwise
        the C step, holding the file's lock, copied *copied* bytes (the position moved
        past them) or, ``None``, found none of it cached: the ring reads the rest, or
        all of it, at the file position."""
        if copied == -1:
            try:
                return FileIO.readinto(self, b)
            finally:
                if self._here is None:  # closed, or no reads at the position: for good
                    self._disarm_cached_reads()
        here = self._here
        if here is None:  # closed while the C step copied
            raise _closed_error()
        n = self._read_at_position(here, b, len(b) if type(b) is bytearray else b.nbytes, copied)
        assert n is not None  # (the C step is armed only where the backend reads at the position)
        return n

    def _read_at_position(self, here: _ReadHere, b: Any, want: int, copied: int | None = -1) -> int | None:
        """:meth:`readinto`'s read at the file position (``FileHandle._read_here``, *copied*
        as there) under the file's lock (the C step's callers hold it already: a
        ``threading.RLock``), a closed handle's error made the built-in's."""
        lock = here.lock
        try:
            if not lock.acquire(False):  # (see _take_lock: a signal cannot leave it held)
                _take_lock(lock)
            # (no write-behind to drain: it exists only under O_DIRECT)
            return here.handle._read_here(b, want, None, copied)
        except RingClosedError as exc:
            _drop_locals(exc)
            raise _closed_error() from None
        except BaseException as exc:
            _drop_locals(exc)
            raise
        finally:
            lock.release()

    def _adopt(self, fd: int, file: Any, stack: Stack | None) -> FileHandle:
        """Hand *fd* to the stack: the handle serves (and closes) a duplicate, *fd* stays ours."""
        if stack is None:
            from uringstack.fileobj.default_stack import default_stack

            stack = default_stack()
        if stack.closed:
            raise _closed_error()
        path = f"/proc/self/fd/{fd}" if isinstance(file, int) else os.fsdecode(file)

        def open_handle(own: int) -> FileHandle:
            return stack.open(path, direct=self._direct, writable=self._writable, adopt_fd=own)

        if self._direct and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            # A descriptor the caller opened without O_DIRECT: the handle gets an O_DIRECT one
            # of its own on the same file (F_SETFL would change the caller's open file
            # description too).  Served as it was, the handle's aligned reads went through the
            # page cache, or failed with EOPNOTSUPP on an IOPOLL ring, which takes only O_DIRECT.
            self._handle_fd_apart = True
            handle = _serve_reopened(fd, self._reopen_with | os.O_DIRECT, open_handle)
        else:
            handle = open_handle(fd)
        try:
            self._home = stack
            stack.close_with_stack(self, outer=False)  # closed before its handle when the stack closes
            # closed behind us (handle.close(), a fork child's stack): what we hold is written
            # first (owner: this file's finalizer closes the handle: see FileHandle.__del__)
            handle.watch_close(self._handle_closing, flush=self._handle_flushing, owner=True)
        except BaseException:
            despite_signals(_drop_handle, handle)
            raise
        return handle

    def _layered(self, buffer: io.BufferedIOBase | Any, text: io.TextIOWrapper | None) -> None:
        """``uringstack.open`` put *buffer* (and *text* over it) on this file: see :meth:`_handle_flushing`.

        *buffer* is anything with ``raw`` (this file) and a synchronous ``flush()``:
        ``uringstack.aio.open`` registers its async file's ``_SyncLayer``."""
        self._layers = (weakref.ref(buffer), None if text is None else weakref.ref(text))

    def _handle_flushing(self) -> None:
        """The handle's close begins (``FileHandle.watch_close``'s *flush*): write what we hold.

        The layers ``uringstack.open`` built over this file (the text layer's
        pending text, the buffer's bytes) and this file's own held and
        written-behind bytes reach the kernel while the handle still serves
        I/O, so closing the handle directly loses nothing; a failure is raised
        by ``handle.close()``.  Nothing to do once this file closed itself (its
        ``close()`` flushed) or a layer was detached from it (``detach()``
        flushed it)."""
        if self._closed_flag:
            return
        layers = self._layers
        if layers is not None:
            buffer = layers[0]()
            text = layers[1]() if layers[1] is not None else None
            # (a detached layer's raw, or buffer, is None)
            if buffer is not None and getattr(buffer, "raw", None) is self:
                if text is not None and getattr(text, "buffer", None) is buffer:
                    text.flush()  # its pending text, then the buffer's bytes, then ours
                else:
                    buffer.flush()
        with self._lock:
            self._drain()
            # closed from here on, set under the lock: a write that waited for it finds the
            # file closed (_hold and write check again once they hold it), so nothing is
            # held after this drain for the handle's close to drop.  (Not after a failure or
            # a signal: a signal's rerun of this flush must still write; _handle_closing
            # sets it then.)
            self._closed_flag = True

    def _handle_closing(self) -> None:
        """The handle's close began (``FileHandle.watch_close``): this file is closed from now on.

        ``closed`` then reads one flag, with no Python frame (``io.BufferedReader``
        and ``BufferedWriter`` read it before every call); the descriptor went with
        the handle (a dup of it with ``closefd=False``)."""
        self._closed_flag = True
        self._disarm_cached_reads()

    def _buffered(self) -> FileHandle:
        """A second, non-O_DIRECT handle on the same file, for unaligned writes under ``direct``."""
        if self._buffered_handle is None:
            assert self._handle is not None and self._home is not None
            home, path = self._home, self._handle.path
            handle = _serve_reopened(
                self._fd,
                self._reopen_with,
                lambda own: home.open(path, direct=False, writable=self._writable, adopt_fd=own),
            )
            self._buffered_handle = handle
            # closed by this file's close (or finalizer), which may still write through it
            handle._leave_close_to_owner()
        return self._buffered_handle

    # --- streaming (set up by uringstack.open) ---------------------------------------
    def _enable_streaming(self, *, readahead: bool, writebehind: bool) -> None:
        """Turn on read-ahead and write-behind (``uringstack.open`` does, for its buffered layers).

        Only under O_DIRECT: without it the page cache already reads ahead
        (the kernel's readahead follows sequential reads on any backend) and
        writes behind (dirty pages), and doing it again here would cost a
        second copy of every byte."""
        if self._handle is None or not self._direct:
            return
        if readahead and self._readable:
            self._readahead = ReadAhead(self._handle)
        if writebehind and self._writable and not self._appending:
            self._writebehind = WriteBehind(self._handle)

    def _enable_holding(self, limit: int) -> bool:
        """Let :meth:`_hold` keep ``bytes`` objects for one gathered write of up to *limit* bytes.

        Only a write-only, non-append, buffered (not O_DIRECT) file on a stack
        handle: appends would land in the order the kernel runs them, and
        O_DIRECT has write-behind.  True when enabled."""
        if self._handle is None or self._direct or self._readable or self._appending:
            return False
        self._held = _Held(limit, self._lock)
        return True

    def _direct_write_parts(self) -> tuple[Any, Any] | None:
        """The backend and in-flight tracker through which the C write step writes a chunk
        itself (``_fastio.HeldWrite``: what :meth:`_release` would write at once), or None.

        Only a plain io_uring file's backend (its ``start_rw``, ``writes_inline`` and
        ``write_inline`` not replaced by a subclass: the C step mirrors them) on a ring
        any thread may use, as for :meth:`_arm_cached_reads`; the C step reads the
        backend's switches per call (``_inline_writes``, ``completion_hook``, ``closed``)."""
        handle = self._handle
        if handle is None or self._held is None:
            return None
        backend = handle._io
        kind = type(backend)
        if (
            not isinstance(backend, UringFileIO)
            or not _serves_any_thread(backend)
            or any(getattr(kind, name) is not getattr(UringFileIO, name) for name in _DIRECT_WRITE_STEPS)
        ):
            return None
        return backend, handle._inflight

    def _hold(self, b: bytes) -> int:
        """Take *b* (an immutable ``bytes``) as the next write without copying it.

        The object is kept, not copied: the reference keeps it alive and
        ``bytes`` cannot change.  Held data is written, in order, with one
        gathered write (``handle.writev_from``) once *limit* bytes are held,
        and before anything else reaches the descriptor through this object:
        any other write, ``seek``, ``tell``, ``truncate``, ``fileno()``,
        ``flush()``, ``close()``.  So it behaves as the buffered writer's
        own buffer does (the data reaches the kernel at the next flush, and a
        failed write is raised there), minus the copy into that buffer.
        A smaller write that reaches this file while it holds data (the
        writer's buffer written out before the next large ``bytes``) is held
        too, as a copy, so the gathered write goes on."""
        held = self._held
        if self._closed_flag or held is None:
            raise _closed_error()
        size = len(b)
        lock = held.lock
        try:
            if not lock.acquire(False):  # (see _take_lock: a signal cannot leave it held)
                _take_lock(lock)
            if self._closed_flag or self._held is not held:
                # closed since the check above (while this waited for the lock, say): its
                # descriptor may be gone, so the built-in's error, not EBADF from the lseek
                raise _closed_error()
            chunks = held.chunks
            if not chunks:
                held.pos = os.lseek(self._fd, 0, os.SEEK_CUR)
            # _keep, inline: copyfileobj's every chunk comes here.  No call between the
            # two stores, so a raising signal lands before both or after both: a list
            # made anew, not append()ed to (a call, after which a signal could land).
            held.chunks = [*chunks, b]
            n = held.nbytes = held.nbytes + size
            if n >= held.limit:
                self._release()
        finally:
            lock.release()
        return size

    def _hold_copy(self, held: _Held, pin: Any) -> bytes:
        """Hold a copy of *pin*'s bytes after what is held, below the limit (the caller
        holds ``_lock`` and writes what is held first where it would reach the limit);
        the copy (what :meth:`_unmake` looks for)."""
        data: bytes = ffi.buffer(pin)[:]
        size = len(data)
        held.chunks = [*held.chunks, data]  # (no call between the stores: see _hold)
        held.nbytes = held.nbytes + size
        return data

    def _writes_pending(self) -> bool:
        """Whether writes this object returned from have not all reached the kernel (held, or
        written behind and in flight): what :meth:`_drain` waits for."""
        wb = self._writebehind
        return self._holds() or (wb is not None and len(wb) > 0)

    def _holds(self) -> bool:
        """Whether :meth:`_hold` kept bytes not written yet (the callers that move or expose
        the position write them first)."""
        held = self._held
        return held is not None and held.nbytes > 0

    def _release(self, handle: FileHandle | None = None) -> None:
        """Write what :meth:`_hold` kept (the caller holds ``_lock``); raise its failure.

        Through *handle* when given (a close, after the file was marked closed),
        else through the live handle.

        The held objects are let go once the write returned, and after a failed
        write (an ``OSError``): then they are dropped, as a failed write-behind's
        data is, and the error is raised here.  A write cut short by anything
        else (a raising signal: Ctrl-C) keeps them, and the position where it
        was: the next release writes the same bytes at the same offset again,
        so what write() accepted is neither lost nor moved."""
        held = self._held
        if held is None or not held.nbytes:
            return
        chunks, n, pos = held.chunks, held.nbytes, held.pos
        try:
            (handle if handle is not None else self._live_handle()).writev_from(chunks, pos)
        except RingClosedError:
            raise _closed_error() from None
        except OSError as exc:
            held.chunks = []
            held.nbytes = 0
            part = transferred(exc)
            if part > 0:
                # what reached the file stays in it: the position goes after it (as io.FileIO's
                # after the short write it would have made), so the next write does not land on it
                os.lseek(self._fd, pos + part, os.SEEK_SET)
            raise
        # no call between these stores (a signal lands before or after them all)
        held.chunks = []
        held.nbytes = 0
        os.lseek(self._fd, pos + n, os.SEEK_SET)

    # --- state ---------------------------------------------------------------------------
    if TYPE_CHECKING:

        @property
        def closed(self) -> bool:
            """True after close(), and once the file's handle was closed (its stack's close included)."""
            ...

    else:
        # A getter in C, no Python frame: io.BufferedReader/BufferedWriter read it before
        # every call (a Python property cost ~1,400 instructions each time).  Read-only, as
        # io.FileIO's.  One flag: close() sets it, and so does the handle's close
        # (_handle_closing), whoever closes it.
        closed = property(
            operator.attrgetter("_closed_flag"),
            doc="True after close(), and once the file's handle was closed (its stack's close included).",
        )

    def _checkClosed(self, msg: str | None = None) -> None:
        if self._closed_flag:
            raise _closed_error()

    def _checkReadable(self) -> None:
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")

    def _checkWritable(self) -> None:
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")

    def __getstate__(self) -> Any:
        raise TypeError(f"cannot pickle {self.__class__.__name__!r} object")

    def __repr__(self) -> str:
        class_name = f"{self.__class__.__module__}.{self.__class__.__qualname__}"
        if self.closed:
            return f"<{class_name} [closed]>"
        try:
            name = self.name
        except AttributeError:
            return f"<{class_name} fd={self._fd} mode={self.mode!r} closefd={self._closefd!r}>"
        return f"<{class_name} name={name!r} mode={self.mode!r} closefd={self._closefd!r}>"

    @property
    def closefd(self) -> bool:
        """True if the file descriptor will be closed by close()."""
        return self._closefd

    @property
    def mode(self) -> str:
        """The mode as ``io.FileIO`` reports it (``rb``, ``wb``, ``rb+``, ``ab``, ``xb+``, ...)."""
        if self._created:
            return "xb+" if self._readable else "xb"
        if self._append_mode:
            return "ab+" if self._readable else "ab"
        if self._readable:
            return "rb+" if self._writable else "rb"
        return "wb"

    @property
    def handle(self) -> FileHandle | None:
        """The stack handle serving this file (``None`` for pipes, ttys and sockets)."""
        return self._handle

    @property
    def block_size(self) -> int:
        """The O_DIRECT alignment of the file (its device's logical block size)."""
        return self._handle.block_size if self._handle is not None else 1

    def readable(self) -> bool:
        self._checkClosed()
        return self._readable

    def writable(self) -> bool:
        self._checkClosed()
        return self._writable

    def seekable(self) -> bool:
        self._checkClosed()
        if self._seekable is None:
            try:
                self.tell()
            except OSError:
                self._seekable = False
            else:
                self._seekable = True
        return self._seekable

    def fileno(self) -> int:
        """The descriptor, once every write this object returned from reached the kernel.

        Callers fsync it (``os.fsync(f.fileno())``) or read it through another
        descriptor: writes still in flight (write-behind) would escape both."""
        self._checkClosed()
        if self._writes_pending():
            with self._lock:
                self._drain()
        return self._fd

    def isatty(self) -> bool:
        self._checkClosed()
        return os.isatty(self._fd)

    # --- reading ---------------------------------------------------------------------
    def _live_handle(self) -> FileHandle:
        handle = self._handle
        assert handle is not None
        if self._closed_flag:
            raise _closed_error()
        return handle

    def readinto(self, b: Any) -> int | None:
        """Read up to ``len(b)`` bytes into *b* at the current position; 0 at end of file.

        ``None`` only on a non-blocking pipe or socket with nothing to read, as ``io.FileIO``.

        The position lives in the descriptor, never in this object: a dup of
        the descriptor, ``os.read`` on ``fileno()``, a child process or
        ``os.lseek`` see and move the same offset as with the built-in.  On
        io_uring (buffered) the read is one read at the file position (offset
        -1: the kernel reads there and moves it, as read(2) does; Linux 5.6+,
        probed), its page-cache part copied by this thread (the backend's
        ``read_cached``, into *b* unpinned), the rest through the ring (``read_here``,
        *b* pinned for it), so a short read is returned as read(2) returns it;
        elsewhere (and with ``closefd=False``, whose handle reads a dup)
        ``lseek`` before and after a positional read (two ``lseek``
        cost ~0.6 µs of the ~5 µs fixed cost of a hot read, measured).

        Where it serves (:meth:`_arm_cached_reads`), this method is reached through
        a C step installed as the instance's ``readinto``, which copies reads the
        page cache holds in full itself and hands the rest here
        (:meth:`_readinto_fallback`)."""
        # _checkClosed and _checkReadable, inline: this is every buffered read's path (a
        # closed handle raises RingClosedError in the handle's own check, made into ours)
        if self._closed_flag:
            buffer_view(b, True)
            raise _closed_error()
        here = self._here
        if here is not None:
            # The length without a pin (ffi.from_buffer costs as much as the rest of
            # this check): the handle pins the buffer only for a read that goes to the
            # ring.  bytearray and writable contiguous memoryview (what io.BufferedReader
            # and hashlib.file_digest pass) are always plain writable bytes.
            t = type(b)
            if t is bytearray:
                want = len(b)
            elif t is memoryview and not b.readonly and b.c_contiguous:
                want = b.nbytes
            else:
                want = 0  # (the pinned path below: it also serves empty buffers)
            if want:
                n = self._read_at_position(here, b, want)
                if n is not None:
                    return n  # read at, and moved, the descriptor's position
                # the backend cannot read at the file position (fallback, a kernel
                # before 5.6): for good, so the lseek path below from now on
                self._here = None
                self._disarm_cached_reads()
        if not self._readable:
            buffer_view(b, True)
            self._checkClosed()  # (a handle closed behind this object: closed comes first)
            raise io.UnsupportedOperation("File not open for reading")
        handle = self._handle
        if handle is not None and not self._direct and self._readahead is None:
            try:
                # One pin gives the length and is the handle's (positional: the keyword form costs more).
                pin = pin_buffer(b, True)
            except (TypeError, BufferError):
                pass  # the general path below raises what io.FileIO-like callers expect
            else:
                if not len(pin):
                    return 0
                pos = end = -1  # (see _unread)
                try:
                    with self._lock:
                        try:
                            # (closefd=False: the handle reads a dup, which would outlive the
                            # caller's descriptor; lseek on ours fails as the built-in's read would)
                            n = handle._read_here(b, len(pin), pin) if self._here is not None else None
                            if n is not None:
                                return n  # read at, and moved, the descriptor's position
                            pos = os.lseek(self._fd, 0, os.SEEK_CUR)
                            n = handle._one_pinned(False, pin, b, pos)
                        except RingClosedError as exc:
                            del pin
                            _drop_locals(exc)
                            raise _closed_error() from None
                        except BaseException as exc:
                            del pin
                            _drop_locals(exc)
                            raise
                        end = pos + n  # (no call before the position moves)
                        os.lseek(self._fd, end, os.SEEK_SET)
                    return n
                except BaseException:
                    despite_signals(self._unread, pos, end)
                    raise
        m = buffer_view(b, True)
        if handle is None:
            try:
                return os.readv(self._fd, [m])
            except BlockingIOError:
                return None
        if not len(m):
            return 0
        made = [-1, -1]
        try:
            with self._lock:
                self._drain()
                return self._read_moving(m, made)
        except BaseException:
            despite_signals(self._unread, *made)
            raise

    def _read_at(self, m: memoryview, pos: int) -> int:
        handle = self._live_handle()
        try:
            ra = self._readahead
            if ra is not None:
                n = ra.readinto(m, pos)
                if n > 0:
                    return n
                # -1: not sequential.  0: the window ended at the end of file as it was
                # when read ahead; the file may have grown since: ask the kernel.
            n = self._direct_read(handle, m, pos) if self._direct else handle.read_into(m, pos)
            if ra is not None:
                ra.last_end = pos + n
            return n
        except RingClosedError as exc:
            _drop_locals(exc)
            raise _closed_error() from None
        except BaseException as exc:
            _drop_locals(exc)
            raise

    def _direct_read(self, handle: FileHandle, m: memoryview, pos: int) -> int:
        """O_DIRECT read of any size at any offset: an aligned covering read, then a copy.

        The covering buffer is a :func:`~uringstack.fileobj.stream.direct_buffer`:
        from 2 MiB on it asks for transparent huge pages (fewer pages to pin, a
        request the block layer does not split)."""
        block = handle.block_size
        start = pos - pos % block
        length = -(-(pos + len(m) - start) // block) * block
        buf = direct_buffer(length)
        got = finish_read(handle, start, buf, handle.start_read_many([start], [buf]).wait()[0])
        n = max(0, min(got - (pos - start), len(m)))
        m[:n] = memoryview(buf)[pos - start : pos - start + n]
        return n

    def read(self, size: int | None = -1) -> bytes | MaybeNone:
        """Read at most *size* bytes (everything when negative or None).

        ``None`` only on a non-blocking pipe or socket with nothing to read
        (typed as typeshed types ``io.FileIO.read``: ``bytes | MaybeNone``)."""
        if type(size) is not int or not -SSIZE_LIMIT <= size < SSIZE_LIMIT:
            size = size_argument(size)
        self._checkClosed()
        self._checkReadable()
        if size < 0:
            return self.readall()
        if self._handle is not None:
            made = [-1, -1]
            try:
                with self._lock:
                    if self._writebehind is not None:
                        self._drain()
                    return self._read_bytes(size, None, made)
            except BaseException:
                despite_signals(self._unread, *made)
                raise
        buf = bytearray(size)
        n = self.readinto(buf)
        if n is None:
            return None
        del buf[n:]
        return bytes(buf)

    def _read_bytes(self, size: int, pos: int | None = None, made: list[int] | None = None) -> bytes:
        """Up to *size* bytes at *pos*, read straight into the ``bytes`` returned.

        As ``io.FileIO`` does (it reads into a new bytes object, then shrinks
        it): the read fills a new ``bytes`` object that nothing else references
        yet, so a full read returns it without the copy a ``bytearray`` would
        need; only a short read copies, its *n* bytes.  Under 2 bytes, or when
        the new object is shared (an interpreter that caches it), through a
        ``bytearray``.  *pos* None (``read(n)``): :meth:`readinto`'s read, at the
        descriptor's position and moving it (one read at the file position where
        the backend has it, short where the page cache held only part, else
        ``lseek`` before and after a positional read); else a positional read
        that moves nothing (``readall``, whose one large read should not stop
        where the cached part ends).  *made*: as :meth:`_read_moving`'s, with *pos* None."""
        if not size:
            return b""
        data = bytes(size)
        if size < 2 or sys.getrefcount(data) != 2:  # 2: *data* and getrefcount's argument
            buf = bytearray(size)
            n = self._read_moving(memoryview(buf), made) if pos is None else self._read_at(memoryview(buf), pos)
            del buf[n:]
            return bytes(buf)
        pin = pin_buffer(data)
        handle = self._handle
        if handle is not None and not self._direct and self._readahead is None:
            # readinto's single op; *view* (a writable view of the pin) for the cached
            # copy and the batch path
            view = ffi.buffer(pin)
            try:
                here = handle._read_here(view, size, pin) if pos is None and self._closefd else None
                if here is not None:
                    n = here  # read at, and moved, the descriptor's position
                else:
                    at = os.lseek(self._fd, 0, os.SEEK_CUR) if pos is None else pos
                    n = handle._one_pinned(False, pin, view, at)
                    if pos is None:
                        if made is not None:
                            made[0] = at  # (no call between these stores and before the position moves)
                            made[1] = at + n
                        os.lseek(self._fd, at + n, os.SEEK_SET)
            except RingClosedError:
                raise _closed_error() from None
        elif pos is None:
            n = self._read_moving(memoryview(ffi.buffer(pin)), made)
        else:
            n = self._read_at(memoryview(ffi.buffer(pin)), pos)
        return data if n == size else data[:n]

    def _read_moving(self, m: memoryview, made: list[int] | None) -> int:
        """:meth:`_read_at` at the current position, then past what it read.

        *made* (the caller's) is set to ``[start, end]`` right before the
        position moves to *end*, for :meth:`_unread`."""
        pos = os.lseek(self._fd, 0, os.SEEK_CUR)
        n = self._read_at(m, pos)
        if made is not None:
            made[0] = pos  # (no call between these stores and before the position moves)
            made[1] = pos + n
        os.lseek(self._fd, pos + n, os.SEEK_SET)
        return n

    def _unread(self, start: int, end: int) -> None:
        """Put the position back before a read that moved it but raised all the same.

        A raising signal (Ctrl-C) can land after the read moved the position,
        up to the lock's release: the read then raises, so its bytes never
        reach the caller, and ``io.BufferedReader``, which keeps nothing of a
        read that raised, would go on past them.  *end* is where the position
        was to move (-1: not yet): if it is still there, it goes back to
        *start*, and the next read returns those bytes.  Safe to run again
        (``despite_signals``)."""
        if end >= 0:
            with self._lock:
                if os.lseek(self._fd, 0, os.SEEK_CUR) == end:
                    os.lseek(self._fd, start, os.SEEK_SET)

    def readall(self) -> bytes:
        """Read from the current position to end of file."""
        self._checkClosed()
        self._checkReadable()
        if self._handle is None:
            return super().readall() or b""
        with self._lock:
            self._drain()
            pos = os.lseek(self._fd, 0, os.SEEK_CUR)
            end = os.fstat(self._fd).st_size
            chunks: list[bytes] = []
            # one request for what fstat announces (read into the bytes returned: no
            # copy when the file is as long as announced), then until a read returns 0
            size = max(end - pos, 0) or _RAW_CHUNK
            while True:
                data = self._read_bytes(size, pos)
                if not data:
                    break
                chunks.append(data)
                pos += len(data)
                size = _RAW_CHUNK
            os.lseek(self._fd, pos, os.SEEK_SET)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def readline(self, size: int | None = -1) -> bytes:
        """Read up to and including the next ``b"\\n"`` (at most *size* bytes when it is 0 or more).

        The result and the position after it are ``io.FileIO.readline``'s.
        That one (``io.RawIOBase.readline``) reads one byte per call. On an
        O_DIRECT file each of those bytes would be a whole-block device
        read, so a 100-byte line cost 100 of them. Here the file reads
        positional pieces: up to the next 8 KiB boundary (whole blocks), then
        doubling up to 1 MiB. The position then moves once, to just past the
        line."""
        size = size_argument(size)
        self._checkClosed()
        self._checkReadable()
        if self._handle is None:
            return super().readline(size)
        made = [-1, -1]
        try:
            with self._lock:
                self._drain()
                start = pos = os.lseek(self._fd, 0, os.SEEK_CUR)
                line: list[bytes] = []
                left = size  # (negative: no limit)
                block = self._handle.block_size if self._direct else 1
                step = -(-io.DEFAULT_BUFFER_SIZE // block) * block  # (whole blocks: no read covers one twice)
                piece = step - pos % step  # up to the next step boundary first: aligned reads after it
                while left:
                    data = self._read_bytes(piece if left < 0 else min(piece, left), pos)
                    if not data:
                        break
                    cut = data.find(b"\n") + 1
                    if cut:
                        data = data[:cut]
                    line.append(data)
                    pos += len(data)
                    if cut:
                        break
                    if left > 0:
                        left -= len(data)
                    step = piece = min(step * 2, _RAW_CHUNK)
                got = line[0] if len(line) == 1 else b"".join(line)  # (no call once the position moved)
                made[0] = start  # (no call between these stores and before the position moves)
                made[1] = pos
                os.lseek(self._fd, pos, os.SEEK_SET)
                return got
        except BaseException:
            despite_signals(self._unread, *made)
            raise

    # --- writing -----------------------------------------------------------------------
    def write(self, b: Any) -> int | None:
        """Write all of *b* at the current position (the end of file in append mode).

        ``None`` only on a non-blocking pipe or socket that is full, as ``io.FileIO``."""
        # _checkClosed and _checkWritable, inline: this is every buffered write's path
        if self._closed_flag:
            buffer_view(b, False)
            raise _closed_error()
        if not self._writable:
            buffer_view(b, False)
            raise io.UnsupportedOperation("File not open for writing")
        handle = self._handle
        if handle is not None and not self._direct:
            try:
                pin = pin_buffer(b, False)  # the length, and the handle's pin
            except (TypeError, BufferError):
                pass  # the general path below raises what io.FileIO-like callers expect
            else:
                lock = self._lock
                made: tuple[Any, int] | None = None  # what _unmake takes back (see there)
                try:
                    try:
                        if not lock.acquire(False):  # (see _take_lock: a signal cannot leave it held)
                            _take_lock(lock)
                        if self._closed_flag:
                            # closed while this waited for the lock: nothing may be held or
                            # written now (close wrote what it found, then set the flag)
                            raise _closed_error()
                        # (no read-ahead to invalidate: it exists only under O_DIRECT)
                        held = self._held
                        if held is not None and held.nbytes:
                            if len(pin) > 0 and held.nbytes + len(pin) < held.limit:
                                # joins what _hold keeps (a copy: the caller, the writer's
                                # buffer, reuses its memory), so the gathered write goes on
                                data = self._hold_copy(held, pin)
                                made = (data, -1)
                                size = len(data)  # (not in the return: see _hold)
                                return size
                            self._release()  # what _hold kept goes first
                        n = len(pin)
                        if not n:
                            return 0  # (before the lseek: an empty write leaves an O_APPEND position, as write(2))
                        before = os.lseek(self._fd, 0, os.SEEK_CUR)  # (a failed append stays here)
                        pos = os.lseek(self._fd, 0, os.SEEK_END) if self._appending else before
                        try:
                            # the backend decides how a waited buffered write is served (inline
                            # pwrite where the kernel would punt it to io-wq): one place for every caller
                            handle._one_pinned(True, pin, b, pos)
                            self._moved_after_write(pos + n)
                        except RingClosedError as exc:
                            del pin
                            _drop_locals(exc)
                            raise _closed_error() from None
                        except BaseException as exc:
                            del pin
                            _drop_locals(exc)
                            n = transferred(exc)  # (see _write_cut_short)
                            if n <= 0:
                                self._write_cut_short(before)
                                # (raised here, not by a helper: re-raised from a frame below, under a
                                # tracer, it corrupted CPython 3.11's trace function: test_write_signals.py)
                                raise
                            self._moved_after_write(pos + n)
                        made = (pos, pos + n)
                        return n
                    finally:
                        lock.release()
                except BaseException:
                    if made is not None:  # a signal right after the release: the write was made
                        despite_signals(self._unmake, *made)
                    raise
        m = buffer_view(b, False)
        if self._handle is None:
            try:
                return os.write(self._fd, m)
            except BlockingIOError:
                return None
        made = None  # what _unmake takes back (see there)
        try:
            with self._lock:
                handle = self._live_handle()
                if self._readahead is not None:
                    self._readahead.invalidate()
                self._release()  # what _hold kept goes first (nothing when nothing is held)
                n = len(m)
                if not n:
                    return 0  # (before the lseek: an empty write leaves an O_APPEND position, as write(2))
                before = os.lseek(self._fd, 0, os.SEEK_CUR)  # (a failed append stays here)
                pos = os.lseek(self._fd, 0, os.SEEK_END) if self._appending else before
                try:
                    self._write_at(handle, m, pos)
                    self._moved_after_write(pos + n)
                except RingClosedError as exc:
                    _drop_locals(exc)
                    raise _closed_error() from None
                except BaseException as exc:
                    _drop_locals(exc)
                    n = transferred(exc)
                    if n <= 0:
                        self._write_cut_short(before)
                        raise
                    self._moved_after_write(pos + n)
                made = (pos, pos + n)
        except BaseException:
            if made is not None:  # a signal right after the release: the write was made
                despite_signals(self._unmake, *made)
            raise
        return n

    def _moved_after_write(self, end: int) -> None:
        """Put the descriptor's position after a write that ended at *end*."""
        if self._appending:
            # O_APPEND wrote at the end whatever the offset: the end is where we are
            os.lseek(self._fd, 0, os.SEEK_END)
        else:
            os.lseek(self._fd, end, os.SEEK_SET)

    def _unmake(self, what: Any, end: int) -> None:
        """Take back a write that was made, when a raising signal landed after it all the same.

        The last call of a write, the lock's release, is followed by a point
        where a signal handler can raise: the write then raises though it was
        made, and ``io.BufferedWriter`` writes the bytes again.  So it is
        taken back first, if nothing came after it: a held copy (*what* the
        bytes object, *end* -1) is dropped if it is still the last held; a
        write at *what* ending at *end* leaves the position at *what* if it is
        still at *end* (the bytes stay in the file, and are written over with
        themselves).  Safe to run again (``despite_signals``)."""
        with self._lock:
            if end < 0:
                held = self._held
                size = len(what)
                if held is not None and held.chunks and held.chunks[-1] is what:
                    # no call between the stores (a signal lands before or after both)
                    held.chunks = held.chunks[:-1]
                    held.nbytes = held.nbytes - size
            elif not self._appending and os.lseek(self._fd, 0, os.SEEK_CUR) == end:
                os.lseek(self._fd, what, os.SEEK_SET)

    def _write_cut_short(self, pos: int) -> None:
        """A write that began with the position at *pos* raised: leave it at *pos*, whatever
        reached the file (an ``O_APPEND`` write too, which ``write(2)`` moves only when it
        wrote: an ``a+`` file read from its middle stays there, as the built-in's).

        Unless part of it did and the error says so (``UringIOError.transferred``: a
        short write whose rest failed, the file size limit, a full disk): then
        ``write`` returns that part with the position after it, as ``io.FileIO``
        does (``write(2)`` returns it).  Raised instead, as before session 25,
        the part was in the file with the position before it, and
        ``io.BufferedWriter``, which keeps a failed write's bytes, wrote them
        again: appended a second time on an ``O_APPEND`` file.

        A write that raised is taken as not made: ``io.BufferedWriter`` keeps
        the bytes and writes them again at the position (its next flush), and
        a caller of the raw file finds its position at ``tell()``.  A raising
        signal (Ctrl-C) can land after the data reached the file, even after
        the position moved past it; written again at *pos*, the same bytes
        land on themselves, where moving on would have written them twice, in
        the wrong place.  (A failed write never moved the position; this
        changes nothing then.)  An ``O_APPEND`` file appends wherever the
        position is: a caller writing again after such a signal appends the
        bytes a second time, which only a write in C could rule out
        (docs/api.md)."""
        despite_signals(os.lseek, self._fd, pos, os.SEEK_SET)

    def _write_at(self, handle: FileHandle, m: memoryview, pos: int) -> None:
        if not self._direct:
            handle.write_from(m, pos)  # (a buffer write() could not pin)
            return
        block = handle.block_size
        if pos % block or len(m) % block:
            # not whole blocks: this one call goes through a buffered descriptor,
            # after every direct write in flight (they are unordered otherwise)
            self._drain()
            self._buffered().write_from(m, pos)
            return
        wb = self._writebehind
        if wb is not None:
            wb.write(m, pos)  # copied into an aligned buffer of its own
            return
        from uringstack.ring.buffers import aligned_buffer

        buf = aligned_buffer(len(m))  # aligned for O_DIRECT
        buf[:] = m
        handle.write_from(buf, pos)

    def _drain(self, handle: FileHandle | None = None) -> None:
        self._release(handle)
        if self._writebehind is not None and len(self._writebehind):
            try:
                self._writebehind.drain()
            except RingClosedError:
                raise _closed_error() from None

    def flush(self) -> None:
        """Return once every write made through this object reached the kernel."""
        if self.closed:
            raise ValueError(_CLOSED_MSG + ".")  # io.IOBase.flush's words, as io.FileIO's
        with self._lock:
            self._drain()

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        # io.FileIO's order: whence converted (a C int), then closed, then pos
        if type(whence) is not int or not -C_INT_LIMIT <= whence < C_INT_LIMIT:
            whence = whence_argument(whence)
        self._checkClosed()
        if isinstance(pos, float):
            raise TypeError("an integer is required")
        if whence == os.SEEK_SET or whence == os.SEEK_CUR:
            if self._holds():
                with self._lock:
                    self._release()
        elif self._writes_pending():
            # SEEK_END (and SEEK_DATA/SEEK_HOLE) read the file's size, which writes still in
            # flight may grow: before, seek(0, 2) right after an O_DIRECT write returned the
            # size before it, and the next write "at the end" went over the written bytes
            with self._lock:
                self._drain()
        return os.lseek(self._fd, pos, whence)

    def tell(self) -> int:
        self._checkClosed()
        if self._holds():
            with self._lock:
                self._release()
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        self._checkWritable()
        if size is None:
            size = self.tell()
        with self._lock:
            self._drain()
            if self._readahead is not None:
                self._readahead.invalidate()
            os.ftruncate(self._fd, size)
        return size

    # --- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Wait for writes in flight, close the stack handle and (with closefd) the descriptor.

        A write that failed in flight is raised here, after the file was closed.
        A raising signal (Ctrl-C) in the flush does not cut it short: it runs to
        its end first, then the file is closed and the signal's exception raised
        (``closing.close_flushed``)."""
        if self._closed_flag:
            if self._handle is not None:
                # the handle was closed behind us (the descriptor went with it): what is
                # left is the O_DIRECT file's buffered twin, if it has one
                self._close_fd()
            return
        close_flushed(self.flush, self._close_now, self._close_now)  # (safe to run again)

    def _close_now(self) -> None:
        try:
            try:
                super().close()  # io.IOBase.close: flush() first
            finally:
                self._closed_flag = True
                try:
                    self._write_late_holds()
                finally:
                    try:
                        if self._readahead is not None:
                            self._readahead.close()  # its reads in flight end before the handle
                    finally:
                        self._close_fd()
        finally:
            self._writebehind = None
            self._readahead = None
            self._here = None
            self._disarm_cached_reads()
            self._held = None  # written by flush() above, or failed there

    def _write_late_holds(self) -> None:
        """Write what another thread's write held after close's flush, before the closed flag.

        That write can take the lock between the flush and the flag (the
        buffered writer's write step flushes, then holds under this lock,
        outside the buffered layer's own lock).  Its length was returned, so its
        bytes are written here, before the descriptor goes, and a failure is
        raised.  The flag is set before this (no call between: a signal cannot
        leave it unset for the handle's close to flush through the buffered
        layer this close runs inside), and a write that takes the lock after it
        finds the file closed (``_hold`` and ``write`` check again under it):
        taking the lock here waits out the one that holds it, and nothing is
        held after."""
        lock = self._lock
        try:
            if not lock.acquire(False):  # (see _take_lock: a signal cannot leave it held)
                _take_lock(lock)
            handle = self._handle
            if handle is not None:
                self._drain(handle)
        finally:
            lock.release()

    def _close_fd(self) -> None:
        """Close the handles and the descriptor; safe to run again (a close cut short by a signal).

        The descriptor number is dropped with the handle, in stores with no call
        between them, as ``io.FileIO`` drops it: a second run must not close it
        again (by then it may be another file's)."""
        handle, self._handle, fd, self._fd = self._handle, None, self._fd, -1
        extra, self._buffered_handle = self._buffered_handle, None
        try:
            if extra is not None:
                extra.close()
        finally:
            if handle is not None:
                ours = fd != handle.fd  # (a file opened by name has the handle's as its own)
                try:
                    handle.close()  # closes its own descriptor (Stack.open's duplicate)
                finally:
                    if self._closefd and fd >= 0 and ours:
                        os.close(fd)
            elif self._closefd and fd >= 0:
                os.close(fd)

    def __del__(self) -> None:
        if self._fd < 0 or self.closed:  # (an __init__ that failed early set no descriptor)
            return
        if self._closefd:
            warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=2, source=self)
        # With closefd=False the caller's descriptor stays open and no warning is given, as
        # io.FileIO does, but the handle's own duplicate of it is closed: until session 34
        # such a file object dropped unclosed leaked that descriptor and its handle.
        self.close()


FileIO.__module__ = "uringstack"


__all__ = ["AlignmentError", "FileIO"]
