"""``Wal``: the public write-ahead log."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import operator
import sys
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from uringstack import reaper
from uringstack.fileobj.arguments import check_stack_arguments
from uringstack.ring import forking
from uringstack.ring.interrupts import despite_signals

from .config import WalConfig
from .errors import WalClosedError
from .io import FileIOWrapper, WalIO
from .recovery import LogScan, RecoveryMode, iter_records, recover
from .segment import DirectoryLock, fsync_dir, remove_files, remove_spares
from .writer import Writer

if TYPE_CHECKING:
    from ..stack import Stack


def _lsn_argument(method: str, lsn: Any) -> int:
    """*lsn* as an int, or a ``TypeError`` naming the call (a float or a string compared with
    the segments' LSNs would pick records by accident, or fail half-way)."""
    try:
        return operator.index(lsn)
    except TypeError:
        raise TypeError(f"Wal.{method}(): an LSN is an int, not {type(lsn).__name__}") from None


def _caller() -> str:
    """``file:line`` of the first frame outside this module: where the user opened the log."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class _Closer:
    """What closing a log takes, without the :class:`Wal` itself: run by :meth:`Wal.close`, or,
    for a Wal dropped unclosed, by the reaper thread (a finalizer that held the Wal would keep it alive)."""

    __slots__ = ("generation", "io", "lock", "writer")

    def __init__(self, writer: Writer, io: WalIO, lock: DirectoryLock) -> None:
        self.writer = writer
        self.io = io
        self.lock = lock
        self.generation = forking.generation()

    def describe(self) -> str:
        where = self.lock.holder.opened_at
        return f"{self.lock.holder.directory} (opened at {where})" if where else str(self.lock.holder.directory)

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            try:
                self.io.close()
            finally:
                self.lock.release()


# --- a Wal dropped without close() ---------------------------------------------------------
# Its finalizer runs wherever the last reference went, or the cyclic GC ran: any thread, at
# any allocation, possibly the log's own flusher thread or one holding the log's lock or a
# stack's lock the close would need.  So it never closes there: it hands the log to the
# library's reaper thread (uringstack.reaper), which closes it the normal way.  A Wal.open of
# the same directory waits for that close (DirectoryLock).
_live: weakref.WeakSet[Wal] = weakref.WeakSet()  # the open Wals, closed at exit (see _close_at_exit)
_exiting = False


def _dropped(closer: _Closer) -> None:
    """The finalizer of a Wal collected without close(): warn, and have the reaper close it.

    Never blocks (see above).  An inherited log (a fork child dropping its parent's Wal)
    is the parent's to flush and close: nothing is done (the child's copy of the lock was
    closed at the fork).  After :func:`_close_at_exit` the reaper is gone: the process is
    exiting, and the kernel releases the lock."""
    if forking.inherited(closer.generation) or _exiting:
        return
    closer.lock.holder.dropped = True
    reaper.dispose(closer.close, f"Wal {closer.describe()}")
    warnings.warn(
        f"unclosed Wal {closer.describe()}: closed when collected; call close() (or use `with Wal.open(...)`)",
        ResourceWarning,
        1,
    )


def _close_at_exit() -> None:
    """At interpreter exit: close the Wals this process opened and has not closed (their
    queued records flushed, as files' buffers are), then let the reaper finish the dropped
    ones.  Registered after the shared stacks' closing (see :meth:`Wal.open`), so it runs
    before it: the logs write through them."""
    global _exiting
    for wal in list(_live):
        # (a fork child exiting normally runs the parent's atexit hooks too: the parent's logs are not its own)
        if not wal._closed and not forking.inherited(wal._closer.generation):
            with contextlib.suppress(Exception):
                warnings.warn(f"unclosed Wal {wal._closer.describe()}: closed at exit", ResourceWarning, 1)
            with contextlib.suppress(Exception):  # one that fails must not keep the others open
                wal.close()
    _exiting = True
    # bounded: a close stuck in the reaper (a hung device) must not keep the process from exiting
    reaper.drain_at_exit()


def _config_of(config: object, overrides: dict[str, Any]) -> WalConfig:
    """The log's :class:`WalConfig` from ``Wal.open``'s *config* and keyword *overrides*,
    refused before the directory is touched: anything else used to fail after the
    directory was made and locked, on a missing attribute."""
    if config is None:
        fields: dict[str, Any] = {}
    elif isinstance(config, WalConfig):
        if not overrides:
            return config
        fields = config.model_dump()
    elif isinstance(config, Mapping):
        fields = dict(config)
    else:
        raise TypeError(
            "Wal.open() argument 'config' must be a WalConfig, a mapping of its fields or None, "
            f"not {type(config).__name__}"
        )
    return WalConfig.model_validate({**fields, **overrides})


class Wal:
    """A durable, group-committed write-ahead log in one directory.

    Thread-safe: any number of threads (and asyncio tasks, through
    :meth:`append_async`) may append at once.  LSNs are dense: 1, 2, 3, ...
    """

    def __init__(
        self,
        directory: Path,
        config: WalConfig,
        io: WalIO,
        lock: DirectoryLock,
        scan: LogScan,
    ) -> None:
        self.directory = directory
        self.config = config
        self.io = io
        self.recovered = scan
        self._lock_file = lock
        self._closed = False
        self._writer = Writer(directory, config, io, scan.segments, scan.next_lsn)
        self._closer = _Closer(self._writer, io, lock)
        # Dropped without close(): warned about and closed (by the reaper), as an unclosed file
        # is.  Not at exit through finalize's own hook: _close_at_exit orders it before the stacks'.
        self._finalizer = weakref.finalize(self, _dropped, self._closer)
        self._finalizer.atexit = False
        _live.add(self)

    @classmethod
    def open(
        cls,
        path: str | Path,
        config: WalConfig | Mapping[str, Any] | None = None,
        *,
        backend: str | None = None,
        stack: Stack | None = None,
        wrap_io: FileIOWrapper | None = None,
        **overrides: Any,
    ) -> Wal:
        """Open (creating if needed) the log in directory *path*, recovering what is there.

        *config* is a :class:`~uringstack.wal.config.WalConfig` or a mapping of
        its fields (a config file's ``[wal]`` table, say: checked the same way,
        unknown keys refused).  Keyword *overrides* are WalConfig fields too,
        over *config*'s; *backend* is one of them
        (``auto``, ``uring``, ``fallback``).  The log writes through a
        :class:`~uringstack.stack.handle.FileHandle` per segment: on *stack* (a
        :class:`~uringstack.stack.Stack`, left open by :meth:`close`) if
        given, else on a one-worker stack it builds and owns, whose
        ``core.backend`` is ``config.backend`` (see :class:`~uringstack.wal.io.WalIO`).
        *wrap_io* wraps each segment's :class:`~uringstack.ring.io_backend.FileIO`
        (fault injection in tests: :class:`~uringstack.wal.faults.FaultyIO`).
        Recovery follows ``config.recovery`` and raises
        :class:`~uringstack.wal.errors.WalCorruptionError` when the mode does
        not accept what is on disk.
        """
        if backend is not None:
            overrides["backend"] = backend
        config = _config_of(config, overrides)
        if stack is not None:
            check_stack_arguments("Wal.open()", stack, None)
            if "backend" in overrides:
                raise TypeError("pass either backend= or stack=, not both: the stack decides the backend")
        directory = Path(path)
        if directory.exists() and not directory.is_dir():  # (mkdir's FileExistsError says less)
            raise NotADirectoryError(errno.ENOTDIR, "a WAL is a directory; this path is a file", str(directory))
        made = [d for d in (directory, *directory.parents) if not d.exists()]  # (deepest first)
        directory.mkdir(parents=True, exist_ok=True)
        # A new directory's entry is in its parent: every parent of one made here is synced
        # (top down), or a crash could lose the whole log with the acknowledged records in
        # it; the log's own parent always (an earlier open may have crashed before its sync).
        for parent in dict.fromkeys([*(d.parent for d in reversed(made)), directory.parent]):
            fsync_dir(parent)
        # The lock lands in `taken` as it is taken: Ctrl-C right after (or inside DirectoryLock,
        # once held) still releases it below, or this process could never open the log again.
        taken: list[DirectoryLock] = []
        io: WalIO | None = None
        try:
            DirectoryLock(directory, _caller(), taken)
            lock = taken[0]
            remove_spares(directory)
            scan = recover(directory, RecoveryMode(config.recovery))
            io = WalIO.for_log(directory, config.backend, stack, wrap_io)
            reaper.start()
            # Registered again at every open, after WalIO registered the shared stacks' closing
            # (at their first use): atexit runs the last registered first, the logs before their stack.
            atexit.unregister(_close_at_exit)
            atexit.register(_close_at_exit)
            return cls(directory, config, io, lock, scan)
        except BaseException:
            try:
                if io is not None:
                    io.close()
            finally:
                if taken:
                    despite_signals(taken[0].release)
            raise

    # --- appending --------------------------------------------------------------
    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Append one record; return its LSN once it is durable.

        Raises :class:`~uringstack.wal.errors.WalFailedError` if the write or
        flush carrying it failed (or the log had failed before): the record
        is then not acknowledged, and may or may not be found after reopening.
        """
        return self._writer.append(data)

    def append_many(self, records: Iterable[bytes | bytearray | memoryview]) -> list[int]:
        """Append several records at once; return their (consecutive) LSNs once all are durable.

        Cheaper than one :meth:`append` per record: one lock hold, one wait,
        usually one write.  Each record is durable on its own, not the group
        atomically: a crash before this returns may keep any prefix of them.
        Every record is checked first: a non-bytes one (``TypeError``) or one too
        large (``ValueError``) refuses the whole group before anything is queued.
        """
        return self._writer.append_many(records)

    def append_async(self, data: bytes | bytearray | memoryview) -> asyncio.Future[int]:
        """Append from a coroutine: ``lsn = await wal.append_async(data)``.

        Must be called with a running event loop.  The future is resolved from
        the thread that flushes it (one ``call_soon_threadsafe`` per flush and
        event loop, not per record), so no thread is spent per append.

        The record is queued when this returns, before any ``await``: cancelling
        the await (``Task.cancel``, a ``wait_for`` timeout) does not take it back.
        It is still written and made durable, its LSN used; a caller that retries
        after a cancel appends it twice (give records an id of their own, or
        ``asyncio.shield`` the future, to tell).
        """
        return self._writer.submit_async(data)

    @property
    def durable_lsn(self) -> int:
        """Highest LSN known durable (0 when the log is empty)."""
        return self._writer.durable_lsn

    @property
    def next_lsn(self) -> int:
        """The LSN the next append will get."""
        return self._writer.next_lsn

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the log, if any."""
        return self._writer.failed

    @property
    def direct_io(self) -> bool:
        """Whether segment writes bypass the page cache (O_DIRECT)."""
        return self._writer.direct

    @property
    def backend(self) -> str:
        """The backend of the stack the log writes through (``uring``, ``fallback``, ...)."""
        handle = self._writer.handle
        return handle.backend if handle is not None else "closed"

    @property
    def backend_reason(self) -> str:
        """Which stack the log writes through and why (``auto``'s choice)."""
        return self.io.reason

    def wait_spare(self, timeout: float | None = None) -> bool:
        """Block until the next segment file (zero-filled in the background) is ready; False on timeout.

        Opening a log starts preparing that file at once, which writes a
        whole segment of zeros: a benchmark waits for it before it measures,
        as fio's file is written before fio's job runs.
        """
        self._check_open()
        return self._writer.wait_spare(timeout)

    def counters(self) -> dict[str, int]:
        """``flushes`` (durable writes), ``bytes`` written by them, ``write_ns`` (time spent in them,
        from the call until the backend reported the write durable), ``durable_lsn`` and ``segments``.

        ``write_ns`` over wall time is the device's share of a run; the rest of a flush cycle is
        Python and thread hand-offs (``uringstack bench wal`` reports both per flush).
        """
        w = self._writer
        return {"flushes": w.flushes, "bytes": w.bytes_written, "write_ns": w.write_ns,
                "durable_lsn": self.durable_lsn, "segments": len(w.segments)}  # fmt: skip

    # --- reading and maintenance ----------------------------------------------------
    def read_from(self, lsn: int = 1) -> Iterator[tuple[int, bytes]]:
        """Yield ``(lsn, payload)`` for every durable record from *lsn* on.

        A snapshot: records appended after the call are not included, and
        segments a :meth:`truncate_before` removes after the call are still read
        (the call opens their files; an iteration dropped unfinished closes them
        when it is collected).
        """
        lsn = _lsn_argument("read_from", lsn)
        self._check_open()
        with self._writer.lock:
            # the files opened under the lock: truncate_before takes segments out of the list
            # under it and deletes their files after it, so each one listed here is opened
            # before its name can go (opened after the lock, one of them could be gone: a
            # bare FileNotFoundError, the case iter_records' opening everything first was for)
            return iter_records(list(self._writer.segments), lsn, self._writer.durable_lsn)

    def truncate_before(self, lsn: int) -> int:
        """Delete whole segments holding only records below *lsn* (a checkpoint); return how many.

        Records at and above *lsn* are kept; so may be some below it that share
        a segment with them.  The active segment is never removed.
        """
        lsn = _lsn_argument("truncate_before", lsn)
        self._check_open()
        w = self._writer
        with w.lock:
            segs = w.segments
            doomed = [s for i, s in enumerate(segs[:-1]) if segs[i + 1].first_lsn <= lsn]
            del segs[: len(doomed)]
        remove_files(self.directory, [s.path for s in doomed])
        return len(doomed)

    def segments(self) -> list[tuple[int, int, Path]]:
        """``(first_lsn, last_durable_lsn, path)`` of each live segment."""
        with self._writer.lock:
            return [(s.first_lsn, s.last_lsn, s.path) for s in self._writer.segments]

    # --- lifecycle --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise WalClosedError("WAL is closed")

    def close(self) -> None:
        """Flush queued appends, stop the flusher, release the directory. Idempotent.

        A Wal dropped without ``close()`` is closed when collected (with a
        ``ResourceWarning``), in a background thread: opening its directory again
        waits for that close.  Still open at interpreter exit, it is closed then."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        _live.discard(self)
        self._closer.close()

    def __enter__(self) -> Wal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self.failed else "open")
        return f"<Wal {self.directory} {state} backend={self.backend} durable_lsn={self.durable_lsn}>"
