"""``Wal``: the public write-ahead log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import WalConfig
from .errors import WalClosedError
from .io import WalBackend, make_backend
from .recovery import LogScan, RecoveryMode, iter_records, recover
from .segment import DirectoryLock, fsync_dir, remove_files, remove_spares
from .writer import Writer


class Wal:
    """A durable, group-committed write-ahead log in one directory.

    Thread-safe: any number of threads (and asyncio tasks, through
    :meth:`append_async`) may append at once.  LSNs are dense: 1, 2, 3, ...
    """

    def __init__(
        self,
        directory: Path,
        config: WalConfig,
        backend: WalBackend,
        owns_backend: bool,
        lock: DirectoryLock,
        scan: LogScan,
    ) -> None:
        self.directory = directory
        self.config = config
        self.backend = backend
        self.recovered = scan
        self._owns_backend = owns_backend
        self._lock_file = lock
        self._closed = False
        self._writer = Writer(directory, config, backend, scan.segments, scan.next_lsn)

    @classmethod
    def open(
        cls,
        path: str | Path,
        config: WalConfig | None = None,
        *,
        backend: str | WalBackend | None = None,
        stack: Any = None,
        **overrides: Any,
    ) -> Wal:
        """Open (creating if needed) the log in directory *path*, recovering what is there.

        *backend* overrides ``config.backend`` and may be a ready
        :class:`~uringstack.wal.io.WalBackend` (e.g. one wrapping the stack's
        ring); a backend passed in is not closed by :meth:`close`.  Keyword
        *overrides* are WalConfig fields.  Recovery follows ``config.recovery``
        and raises :class:`~uringstack.wal.errors.WalCorruptionError` when the
        mode does not accept what is on disk.  *stack* (a
        :class:`~uringstack.stack.Stack`) makes the log write through the
        stack's first worker ring, or posix I/O where the stack runs on the
        fallback.
        """
        if stack is not None:
            if backend is not None:
                raise TypeError("pass either backend= or stack=, not both")
            from .io import backend_for_stack

            backend = backend_for_stack(stack, (config or WalConfig()).sync)
        config = config if config is not None else WalConfig()
        if overrides:
            config = WalConfig(**{**config.model_dump(), **overrides})
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)
        lock = DirectoryLock(directory)
        be: WalBackend | None = None
        owns = not (backend is not None and not isinstance(backend, str))
        try:
            remove_spares(directory)
            scan = recover(directory, RecoveryMode(config.recovery))
            spec = backend if backend is not None else config.backend
            be = make_backend(spec, config.sync, directory)  # type: ignore[arg-type]
            return cls(directory, config, be, owns, lock, scan)
        except BaseException:
            if be is not None and owns:
                be.close()
            lock.release()
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

    def counters(self) -> dict[str, int]:
        """The backend's counters plus appends and segments."""
        c = dict(self.backend.counters())
        c["durable_lsn"] = self.durable_lsn
        c["segments"] = len(self._writer.segments)
        return c

    # --- reading and maintenance ----------------------------------------------------
    def read_from(self, lsn: int = 1) -> Iterator[tuple[int, bytes]]:
        """Yield ``(lsn, payload)`` for every durable record from *lsn* on.

        A snapshot: records appended after the call are not included.
        """
        self._check_open()
        with self._writer.lock:
            upto = self._writer.durable_lsn
            segments = list(self._writer.segments)
        return iter_records(segments, lsn, upto)

    def truncate_before(self, lsn: int) -> int:
        """Delete whole segments holding only records below *lsn* (a checkpoint); return how many.

        Records at and above *lsn* are kept; so may be some below it that share
        a segment with them.  The active segment is never removed.
        """
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
        """Flush queued appends, stop the flusher, release the directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            if self._owns_backend:
                self.backend.close()
            self._lock_file.release()

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
        return f"<Wal {self.directory} {state} backend={self.backend.name} durable_lsn={self.durable_lsn}>"
