"""Segment files: naming, header, creation (preallocated and pre-written), removal.

A segment is ``<first LSN, 20 digits>.wal``.  Its first block holds a header;
records start at :data:`DATA_START`.  Segments are created under a temporary
name, preallocated with ``fallocate`` and then filled with zeros: on ext4 an
O_DIRECT write into unwritten extents costs a metadata update per write (and
an extending write is punted to an io-wq worker), while overwriting blocks that
were already written is ~1.6x faster (DESIGN.md, "Reference points").  Only a
complete, synced file is renamed to its final name, and the directory is
fsynced after every create, rename and unlink so the name itself is durable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UringIOError
from ..ring.interrupts import close_stored, open_stored, with_descriptor
from .errors import WalCorruptionError
from .record import crc32c

BLOCK_BYTES = 4096  # O_DIRECT unit: a multiple of every logical block size in use (512, 4096)
DATA_START = BLOCK_BYTES
MAGIC = b"USWALSEG"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQQ")  # magic, version, block, first_lsn, segment, max_write
HEADER_BYTES = _HEADER.size + 4  # + crc32c
# The seal (see :func:`seal`) lives in its own sector of block 0, so a torn
# write of it can never touch the header in sector 0.
SEAL_OFFSET = 512
SEAL_MAGIC = b"USWALNXT"
_SEAL = struct.Struct("<8sQ")  # magic, first LSN of the next segment
SEAL_BYTES = _SEAL.size + 4  # + crc32c
_NAME = re.compile(r"^(\d{20})\.wal$")
SPARE_SUFFIX = ".tmp"
_ZERO_CHUNK = bytes(1 << 20)


class SegmentSyscalls:
    """The system calls that create, stamp and name segment files.

    One module-global instance (:data:`SYSCALLS`), looked up at each call, so
    :mod:`uringstack.wal.faults` can record their order (an fdatasync before a
    rename is a durability step) or make one fail (ENOSPC, EIO).
    """

    def open(self, fds: list[int], path: Path, flags: int, mode: int = 0o644) -> int:
        """``os.open``, the descriptor appended to *fds* as it is made (:func:`open_stored`):
        the caller closes what *fds* holds, so a raising signal right after the open leaks
        nothing."""
        return open_stored(fds, os.fspath(path), flags, mode)

    def fallocate(self, fd: int, offset: int, length: int) -> None:
        os.posix_fallocate(fd, offset, length)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


SYSCALLS = SegmentSyscalls()


@contextlib.contextmanager
def _step(path: Path, what: str, steps: list[str], cleanup: bool) -> Iterator[None]:
    """Turn an OSError into one naming the operation (``steps[-1]``) and *path*.

    With *cleanup* the partial file is removed first: a half-written spare left
    behind after ENOSPC would keep the file system full.
    """
    try:
        yield
    except OSError as e:
        removed = ""
        if cleanup:
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed = "; the partial file was removed"
        err = e.errno or errno.EIO
        raise UringIOError(err, steps[-1], str(path), f"{what}{removed}") from e


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """What a segment says about itself.

    ``max_write_bytes`` is the largest single write the writer may issue into
    this segment; recovery uses it to bound where a torn last write can have
    left bytes (see :mod:`uringstack.wal.recovery`).
    """

    first_lsn: int
    segment_bytes: int
    max_write_bytes: int
    block_bytes: int = BLOCK_BYTES
    version: int = VERSION

    def pack(self) -> bytes:
        body = _HEADER.pack(
            MAGIC, self.version, self.block_bytes, self.first_lsn, self.segment_bytes,
            self.max_write_bytes,
        )  # fmt: skip
        return body + crc32c(body).to_bytes(4, "little")

    @classmethod
    def unpack(cls, raw: bytes, path: Path) -> SegmentHeader:
        if len(raw) < HEADER_BYTES:
            raise WalCorruptionError(str(path), 0, "segment shorter than its header")
        body, crc = raw[: _HEADER.size], int.from_bytes(raw[_HEADER.size : HEADER_BYTES], "little")
        if crc32c(body) != crc:
            raise WalCorruptionError(str(path), 0, "segment header checksum mismatch")
        magic, version, block, first, seg, max_write = _HEADER.unpack(body)
        if magic != MAGIC or version != VERSION:
            raise WalCorruptionError(str(path), 0, f"not a v{VERSION} WAL segment")
        return cls(first, seg, max_write, block, version)


def segment_name(first_lsn: int) -> str:
    """File name of the segment whose first record is *first_lsn*."""
    return f"{first_lsn:020d}.wal"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(first_lsn, path)`` of every segment in *directory*, oldest first."""
    found = []
    for entry in os.scandir(directory):
        m = _NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), Path(entry.path)))
    return sorted(found)


def fsync_dir(directory: Path) -> None:
    """Make creates, renames and unlinks in *directory* durable."""
    with_descriptor(os.fspath(directory), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, SYSCALLS.fsync)


def read_header(path: Path) -> SegmentHeader:
    """Read and verify the header of the segment at *path*.

    Something named like a segment that is not a regular file (a directory, a
    FIFO, a device) is damage as junk is, not an ``IsADirectoryError`` (or a hang
    in ``open``, for a FIFO)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise WalCorruptionError(str(path), 0, "named like a segment but not a regular file")
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise WalCorruptionError(
            str(path), 0, f"segment file is {len(raw)} bytes, shorter than its {HEADER_BYTES}-byte header (truncated)"
        )
    return SegmentHeader.unpack(raw, path)


def decode_seal(raw: bytes, path: Path) -> int | None:
    """The next segment's first LSN recorded in *raw* (block 0 from :data:`SEAL_OFFSET`), None if unsealed."""
    raw = raw[:SEAL_BYTES]
    if not any(raw):
        return None
    body, crc = raw[: _SEAL.size], int.from_bytes(raw[_SEAL.size : SEAL_BYTES], "little")
    magic, next_lsn = _SEAL.unpack(body) if len(body) == _SEAL.size else (b"", 0)
    if len(raw) < SEAL_BYTES or crc32c(body) != crc or magic != SEAL_MAGIC:
        raise WalCorruptionError(str(path), SEAL_OFFSET, "segment seal (the pointer to the next segment) is damaged")
    return int(next_lsn)


def _write_seal(path: Path, raw: bytes, what: str) -> None:
    sc = SYSCALLS
    steps = ["open"]
    with _step(path, what, steps, cleanup=False):
        fds: list[int] = []
        try:
            fd = sc.open(fds, path, os.O_RDWR | os.O_CLOEXEC)
            steps.append("pwrite of the seal")
            if sc.pwrite(fd, raw, SEAL_OFFSET) != len(raw):
                raise OSError(errno.EIO, "short write of the seal")
            steps.append("fdatasync of the seal")
            sc.fdatasync(fd)
        finally:
            close_stored(fds)


def seal(path: Path, next_lsn: int) -> None:
    """Record durably in segment *path* that the log continues in the segment starting at *next_lsn*.

    Done at every roll, after the successor is durably named and before
    anything is written into it: from then on the successor's absence (the
    newest file deleted or moved away) is corruption, where otherwise a log
    ending early would look like one that simply ended with a full segment.
    A crash before the seal leaves an unsealed predecessor and a successor
    holding only its header: legal.
    """
    body = _SEAL.pack(SEAL_MAGIC, next_lsn)
    _write_seal(path, body + crc32c(body).to_bytes(4, "little"), f"sealing WAL segment {path.name}")


def unseal(path: Path) -> None:
    """Clear the seal of *path*: recovery cut the log there and appends resume in it."""
    _write_seal(path, bytes(SEAL_BYTES), f"unsealing WAL segment {path.name}")


def read_seal(path: Path) -> int | None:
    """The seal of the segment at *path* (see :func:`seal`): its successor's first LSN, or None."""
    with open(path, "rb") as f:
        f.seek(SEAL_OFFSET)
        return decode_seal(f.read(SEAL_BYTES), path)


def prepare_spare(directory: Path, segment_bytes: int, name: str = "spare") -> Path:
    """Create a zero-filled, preallocated, synced file to become the next segment.

    Runs off the append path (a background thread in the writer) because
    writing a whole segment of zeros takes a while.  On any error the partial
    file is removed and the error names the file and the failing operation.
    """
    path = directory / f"{name}{SPARE_SUFFIX}"
    sc = SYSCALLS
    steps = ["open"]
    with _step(path, f"preparing a {segment_bytes}-byte WAL segment", steps, cleanup=True):
        fds: list[int] = []
        try:
            fd = sc.open(fds, path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            steps.append("fallocate")
            try:
                sc.fallocate(fd, 0, segment_bytes)
            except OSError as e:
                # an optimisation where it works; but ENOSPC is an answer, not an absence
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
            offset = 0
            while offset < segment_bytes:
                n = min(len(_ZERO_CHUNK), segment_bytes - offset)
                steps.append(f"pwrite of zeros at offset {offset}")
                written = sc.pwrite(fd, memoryview(_ZERO_CHUNK)[:n], offset)
                if written <= 0:
                    raise OSError(errno.EIO, f"pwrite returned {written}")
                offset += written
            steps.append("fdatasync")
            sc.fdatasync(fd)
            drop_cached_pages(fd)
        finally:
            close_stored(fds)
    return path


def drop_cached_pages(fd: int) -> None:
    """Drop a segment file's clean pages from the page cache (after its zero-fill was synced).

    The log writes a segment with O_DIRECT, and an O_DIRECT write over a range
    with cached pages must first write back and invalidate them (and again after
    the write), inside the durable write's syscall.  The zero-fill leaves the whole
    segment cached, so every flush would pay that; fio does not (its default
    ``--invalidate=1`` drops the file's cache before a job).  Only clean pages
    are dropped (the caller synced them): nothing written is lost, and a failure
    only leaves the pages cached.
    """
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def activate_spare(spare: Path, header: SegmentHeader, replace: bool = False) -> Path:
    """Stamp *header* into a prepared spare and rename it to its segment name, durably.

    The header is fdatasynced before the rename: a segment must never carry
    its final name with a header that could still be lost.  Then the
    predecessor (the newest older segment, if any) is sealed with this
    segment's first LSN (:func:`seal`).  With *replace* an existing segment
    of the same name (an empty one that cannot take appends) is replaced
    atomically by the rename, so no crash leaves the name missing.
    """
    final = spare.parent / segment_name(header.first_lsn)
    if final.exists() and not replace:
        raise FileExistsError(f"segment {final} already exists")
    older = [p for lsn, p in list_segments(spare.parent) if lsn < header.first_lsn]
    sc = SYSCALLS
    steps = ["open"]
    with _step(spare, f"activating WAL segment {final.name}", steps, cleanup=False):
        fds: list[int] = []
        try:
            fd = sc.open(fds, spare, os.O_RDWR | os.O_CLOEXEC)
            raw = header.pack()
            steps.append("pwrite of the header")
            if sc.pwrite(fd, raw, 0) != len(raw):
                raise OSError(errno.EIO, "short write of the header")
            steps.append("fdatasync of the header")
            sc.fdatasync(fd)
        finally:
            close_stored(fds)
        steps.append(f"rename to {final.name}")
        sc.rename(spare, final)
        steps.append("fsync of the directory")
        fsync_dir(spare.parent)
    if older:
        seal(older[-1], header.first_lsn)
    return final


def create_segment(directory: Path, header: SegmentHeader, replace: bool = False) -> Path:
    """Create a complete segment synchronously (the first one, or when no spare is ready)."""
    spare = prepare_spare(directory, header.segment_bytes, name=f"new-{header.first_lsn}")
    try:
        return activate_spare(spare, header, replace)
    except BaseException:
        with contextlib.suppress(OSError):  # not renamed: do not leave a full-size temp file
            os.unlink(spare)
        raise


def remove_files(directory: Path, paths: list[Path]) -> None:
    """Unlink *paths* and make the removal durable."""
    if not paths:
        return
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    fsync_dir(directory)


_SPARE_NAME = re.compile(r"(?:spare|new-[0-9]+)" + re.escape(SPARE_SUFFIX))
"""The names :func:`prepare_spare` gives: the writer's ``spare.tmp``, :func:`create_segment`'s ``new-<LSN>.tmp``."""


def remove_spares(directory: Path) -> None:
    """Delete leftover spares (a crash while one was being prepared): the files named as
    :func:`prepare_spare` names them, nothing else.  (It removed every ``*.tmp`` in the
    directory: a log opened in a directory holding other files, ``/tmp`` itself, took
    the caller's ``.tmp`` files with it.)"""
    spares = [Path(e.path) for e in os.scandir(directory) if _SPARE_NAME.fullmatch(e.name) and e.is_file()]
    remove_files(directory, spares)


@dataclass(eq=False)
class LockHolder:
    """Who in this process took a log directory's lock: the registry's entry, for the refusal's message.

    An ``flock`` refused to this process says nothing of who holds it (an ``flock``
    has no owner pid to ask for): without this, a log this process itself left open
    read as "another writer", and its user looked for another process.
    """

    directory: Path
    opened_at: str  # where the Wal was opened (the caller's file:line), or ""
    pid: int  # the process that took it: after fork() the child's copy of the registry names its parent
    dropped: bool = False  # its Wal was collected unclosed: the close runs in the background
    released: threading.Event = field(default_factory=threading.Event)


# (st_dev, st_ino) of a LOCK file -> who in this process holds it.  Keyed by the file, not
# the path: one directory reached through two paths (a symlink, a relative path) is one lock.
_holders: dict[tuple[int, int], LockHolder] = {}
_locks: dict[tuple[int, int], DirectoryLock] = {}  # the same keys: the locks, for the fork handler
# Held around open + flock + registration (all non-blocking) and around fork(): a
# child never sees a lock taken but not yet registered, whose copy it could not close.
_registry_lock = threading.Lock()

DROPPED_CLOSE_WAIT_S = 60.0
"""How long :class:`DirectoryLock` waits for the background close of a dropped Wal
of this process holding the directory (a flush, and the spare's zero-fill)."""


_FORK_WAIT_S = 1.0
_held_for_fork = False


def _before_fork() -> None:
    # Every section under the lock is short and never blocks: the wait is bounded all the
    # same, so a lock held for good (a thread stopped inside one) delays a fork, never hangs it.
    global _held_for_fork
    _held_for_fork = _registry_lock.acquire(timeout=_FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _registry_lock.release()


def _after_fork_in_child() -> None:
    """Close the child's copies of the parent's lock descriptors.

    An ``flock`` belongs to the open file description, which ``fork()`` shares: a
    child keeping its copy kept the parent's log locked after the parent closed it
    (a parent that reopened its log was refused for as long as a forked worker
    lived).  The child cannot use the parent's log anyway (its flusher thread is the
    parent's; its handles raise ``ForkedChildError``).  The registry's entries stay,
    with the parent's pid, so a refusal in the child can say who holds the lock."""
    global _registry_lock, _held_for_fork
    _registry_lock, _held_for_fork = threading.Lock(), False
    for lock in _locks.values():
        lock.forget_inherited()
    _locks.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def _held_message(directory: Path, holder: LockHolder | None, waited: float) -> str:
    """Why *directory*'s lock was refused, as far as this process knows (*holder*, its registry's entry)."""
    base = f"WAL directory {directory} is locked by"
    if holder is None:
        return f"{base} another writer"
    where = holder.opened_at or "an unknown place"
    if holder.pid != os.getpid():
        return (
            f"{base} another writer (process {holder.pid}, which this process {os.getpid()} was forked from, "
            f"had a Wal opened at {where} open on it at the fork; a forked child holds no copy of the lock)"
        )
    if holder.dropped:
        return (
            f"{base} a Wal this process opened at {where}, which was dropped without close() and is still "
            f"being closed (flushing its last records) after {waited:.0f} s"
        )
    return f"{base} a Wal this process opened at {where} and has not closed: call close() (or use `with Wal.open(...)`)"


class DirectoryLock:
    """An exclusive ``flock`` on ``<dir>/LOCK``: two writers on one log would corrupt it.

    The kernel drops the lock when the process dies, so a crash never leaves a
    stale lock behind.  While held, it is in this process's registry (with
    *opened_at*, where its Wal was opened), so a refusal names the holder when it
    is this process's own log; a Wal of this process dropped without ``close()``
    is closed in the background, and the lock waits for that close (up to
    :data:`DROPPED_CLOSE_WAIT_S`) rather than refusing; one unreachable but not yet
    collected (a reference cycle) is collected first.

    The lock is appended to *taken* the moment it is held and registered, before
    any point where a raising signal (Ctrl-C) could cut ``__init__`` short (the
    registry lock's release comes after): a caller that releases what *taken*
    holds when an exception reaches it never leaves its log locked by a lock
    nobody got, which this process could never open again (:meth:`Wal.open`).
    """

    def __init__(self, directory: Path, opened_at: str = "", taken: list[DirectoryLock] | None = None) -> None:
        self._fd = -1
        waited_since = 0.0
        collected = False
        path = os.fspath(directory / "LOCK")
        while True:
            with _registry_lock:
                fds: list[int] = []  # (stored as opened: a signal right after the open leaks nothing)
                try:
                    fd = open_stored(fds, path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                    st = os.fstat(fd)
                    key = (st.st_dev, st.st_ino)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    mine = LockHolder(directory, opened_at, os.getpid())
                except BlockingIOError:
                    close_stored(fds)
                    holder = _holders.get(key)
                except BaseException:  # (a raising signal too: a descriptor left open would keep the lock)
                    close_stored(fds)
                    raise
                else:
                    self._fd, self._key, self.holder = fd, key, mine
                    _holders[key] = mine
                    _locks[key] = self
                    if taken is not None:
                        taken.append(self)
                    return
            # (never waited for under the registry lock: the close being waited for takes it)
            if holder is not None and holder.pid == os.getpid() and not holder.dropped and not collected:
                # Ours and open, or unreachable in a reference cycle the GC has not collected yet:
                # collecting runs its finalizer now (then dropped), rather than telling the user
                # to close a Wal they can no longer reach.
                collected = True
                gc.collect()
            if holder is not None and holder.dropped and holder.pid == os.getpid():
                now = time.monotonic()
                waited_since = waited_since or now
                if holder.released.wait(max(0.0, waited_since + DROPPED_CLOSE_WAIT_S - now)):
                    continue  # closed: try again (another open may have taken it meanwhile)
            waited = time.monotonic() - waited_since if waited_since else 0.0
            raise BlockingIOError(_held_message(directory, holder, waited)) from None

    def forget_inherited(self) -> None:
        """In a fork() child: close this process's copy of the parent's descriptor (see the fork handler)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def release(self) -> None:
        """Unlock (close the descriptor) and leave the registry; idempotent, and safe to run
        again after a raising signal cut it short (:func:`despite_signals`)."""
        with _registry_lock:
            # Taken before the close, so a run again never closes the number twice.
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
            if _holders.get(self._key) is self.holder:
                del _holders[self._key]
            if _locks.get(self._key) is self:
                del _locks[self._key]
        self.holder.released.set()
