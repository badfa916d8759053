"""Scanning, verifying and repairing a log directory; iterating its records.

How damage is classified.  The writer has at most one write in flight, it
never crosses a segment boundary, and it is at most ``max_write_bytes`` long
starting at the block holding the durable end (the partial tail block is
rewritten).  Everything past that write is still the pre-written zeros.  So
after a crash the only bytes that can be wrong lie in
``[block_floor(P), block_floor(P) + max_write_bytes)`` where ``P`` is the first
record that does not decode, in the last segment holding data.  Damage
shaped like that is a *torn tail*: the records there were never acknowledged.
Anything else (a bad record with non-zero bytes beyond that window, a bad
record in an older segment, a missing segment, a bad header) is *corruption*.

Recovery modes (RocksDB's names in brackets):

``tolerate_tail`` (kTolerateCorruptedTailRecords)
    a torn tail is cut off (zeroed and synced, so stale bytes can never be
    mistaken for records later); corruption is an error.
``absolute`` (kAbsoluteConsistency)
    any damage, a torn tail included, is an error.
``point_in_time`` (kPointInTimeRecovery)
    the log ends at the first record that does not decode, whatever follows;
    on open for writing the rest of that segment is zeroed and later segments
    are renamed to ``*.discarded`` (``*.discarded.N`` beside an earlier one of
    the same name; kept for inspection, never replayed).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import itertools
import mmap
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..ring.interrupts import close_popped, close_stored, open_stored, with_descriptor
from .errors import WalCorruptionError
from .record import Status, decode_at
from .segment import (
    DATA_START,
    SegmentHeader,
    fsync_dir,
    list_segments,
    read_header,
    read_seal,
    seal,
    segment_name,
    unseal,
)


class RecoveryMode(enum.StrEnum):
    """How :func:`recover` treats damage (see the module docstring)."""

    TOLERATE_TAIL = "tolerate_tail"
    ABSOLUTE = "absolute"
    POINT_IN_TIME = "point_in_time"


@dataclass
class Damage:
    """The first place the log does not decode."""

    path: Path
    offset: int
    reason: str
    torn_tail: bool  # shaped like an interrupted last write (see module docstring)
    zero_to: int = 0  # end of the non-zero bytes to clear when repairing
    resize_to: int = 0  # a file of the wrong length: its size in the header (0: length is right)


@dataclass
class SegmentScan:
    """One segment as found on disk."""

    path: Path
    header: SegmentHeader
    records: int = 0
    end_offset: int = DATA_START  # just past the last good record
    sealed_next: int | None = None  # the successor's first LSN once sealed (see segment.seal)

    @property
    def first_lsn(self) -> int:
        return self.header.first_lsn

    @property
    def last_lsn(self) -> int:
        """LSN of the last good record, ``first_lsn - 1`` when empty."""
        return self.header.first_lsn + self.records - 1


@dataclass
class LogScan:
    """Everything :func:`scan` learnt about a directory."""

    segments: list[SegmentScan] = field(default_factory=list)
    damage: Damage | None = None
    discard: list[Path] = field(default_factory=list)  # segments past the damage
    first_name_lsn: int = 1  # the oldest segment file's LSN by its name (1 with none)

    @property
    def next_lsn(self) -> int:
        """The LSN the next append takes: after the last record kept, or, with none kept,
        where the oldest segment file began by its name.  (Starting again at 1, a
        ``point_in_time`` recovery that discarded every segment after a checkpoint
        reused LSNs below it: a reader that had the checkpoint took new records as old.)"""
        return self.segments[-1].last_lsn + 1 if self.segments else self.first_name_lsn

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)


def _map(path: Path) -> tuple[mmap.mmap | bytes, int]:
    with open(path, "rb") as f:
        try:
            buf = _map_fd(f.fileno())
        except OSError as exc:
            # (a bare "[Errno 12] Cannot allocate memory" under a small RLIMIT_AS named no file
            # and no cause until session 32: each segment is mapped whole to be scanned)
            hint = " (the segment is mapped whole to be scanned: is RLIMIT_AS / ulimit -v too small?)"
            raise OSError(exc.errno, f"{exc.strerror}: cannot map WAL segment{hint if exc.errno == 12 else ''}",
                          str(path)) from exc  # fmt: skip
        return buf, len(buf)


def _map_fd(fd: int) -> mmap.mmap | bytes:
    if os.fstat(fd).st_size == 0:
        return b""
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


_ZEROS = bytes(1 << 20)


def nonzero_end(buf: mmap.mmap | bytes, start: int) -> int:
    """Offset just past the last non-zero byte at or after *start* (``start`` if none)."""
    end = len(buf)
    view = memoryview(buf)
    try:
        while end > start:
            lo = max(start, end - len(_ZEROS))
            chunk = view[lo:end]
            if chunk != _ZEROS[: end - lo]:
                return lo + len(bytes(chunk).rstrip(b"\0"))
            end = lo
        return start
    finally:
        view.release()


def walk(buf: mmap.mmap | bytes, first_lsn: int, start: int = DATA_START) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(offset, lsn, payload)`` of good records from *start* until one does not decode."""
    offset, lsn = start, first_lsn
    while True:
        d = decode_at(buf, offset, lsn)
        if d.status is not Status.OK:
            return
        yield offset, lsn, d.payload
        offset += d.size
        lsn += 1


def _record_end(offset: int, payload: bytes) -> int:
    """Where the record at *offset* holding *payload* ends (its 16-byte header, 8-byte aligned)."""
    return offset + (len(payload) + 16 + 7) // 8 * 8


def _scan_one(path: Path, header: SegmentHeader) -> tuple[SegmentScan, Damage | None, bool]:
    """Scan one segment; return it, its damage if any, and whether it holds any data."""
    seg = SegmentScan(path, header)
    buf, size = _map(path)
    try:
        offset = DATA_START
        for off, _lsn, payload in walk(buf, header.first_lsn):
            seg.records += 1
            offset = _record_end(off, payload)
        seg.end_offset = offset
        d = decode_at(buf, offset, header.first_lsn + seg.records) if offset < size else None
        if d is None:
            return seg, None, seg.records > 0
        nz = nonzero_end(buf, offset)
        if d.status is Status.ZERO and nz <= offset:
            return seg, None, seg.records > 0
        reason = {
            Status.ZERO: "zero header followed by non-zero bytes",
            Status.TRUNCATED: "record runs past the end of the segment",
            Status.BAD_CRC: "record checksum mismatch",
            Status.BAD_LSN: f"record has LSN {d.lsn}, expected {header.first_lsn + seg.records}",
        }.get(d.status, d.status.value)
        window_end = offset - offset % header.block_bytes + header.max_write_bytes
        damage = Damage(path, offset, reason, torn_tail=nz <= window_end, zero_to=nz)
        return seg, damage, True
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def scan(directory: Path | str) -> LogScan:
    """Read-only scan of every segment; classifies (does not act on) damage."""
    directory = Path(directory)
    result = LogScan()
    expected: int | None = None
    segments = list_segments(directory)
    if segments:
        result.first_name_lsn = max(1, segments[0][0])
    for i, (name_lsn, path) in enumerate(segments):
        try:
            header = read_header(path)
            sealed_next = read_seal(path)
        except WalCorruptionError as e:
            result.damage = Damage(path, 0, e.reason, torn_tail=False)
            result.discard = [p for _, p in segments[i:]]
            return result
        problem = _placement(name_lsn, header.first_lsn, expected)
        if problem is not None:
            result.damage = Damage(path, 0, problem, torn_tail=False)
            result.discard = [p for _, p in segments[i:]]
            return result
        seg, damage, _ = _scan_one(path, header)
        seg.sealed_next = sealed_next
        size = os.path.getsize(path)
        if size != header.segment_bytes:
            damage = _wrong_length(seg, damage, size)
        if damage is not None and sealed_next is not None:
            damage.torn_tail = False  # sealed only after its last write completed
        result.segments.append(seg)
        expected = seg.last_lsn + 1
        if damage is not None:
            later = [p for _, p in segments[i + 1 :]]
            # A torn write can only be the last write: later segments must hold nothing.
            if damage.torn_tail and any(_holds_data(p) for p in later):
                damage.torn_tail = False
            result.damage = damage
            result.discard = later
            return result
    if result.segments and result.segments[-1].sealed_next is not None:
        result.damage = _missing_successor(directory, result.segments[-1])
    return result


def _missing_successor(directory: Path, last: SegmentScan) -> Damage:
    """The newest segment is sealed, so its successor existed: it was deleted or moved away."""
    assert last.sealed_next is not None
    missing = directory / segment_name(last.sealed_next)
    reason = (
        f"segment file is missing: {last.path.name} is sealed saying the log continues at LSN "
        f"{last.sealed_next} in {missing.name} (the newest segment was deleted or moved away; "
        "acknowledged records may be lost)"
    )
    return Damage(missing, 0, reason, torn_tail=False)


def _placement(name_lsn: int, header_lsn: int, expected: int | None) -> str | None:
    """What is wrong with where a segment sits in the log, or None."""
    if header_lsn != name_lsn:
        return (
            f"file name says LSN {name_lsn} but the header says LSN {header_lsn} "
            "(the segment was renamed or copied under another name)"
        )
    if expected is None or header_lsn == expected:
        return None
    if header_lsn > expected:
        return f"LSNs {expected}..{header_lsn - 1} are missing (a segment was deleted or moved away)"
    return f"segment starts at LSN {header_lsn}, inside the previous segment's records (which end at {expected - 1})"


def _wrong_length(seg: SegmentScan, damage: Damage | None, size: int) -> Damage:
    """A segment whose file length differs from its header: corruption in every mode.

    Segments are preallocated and pre-written to their full size before they
    get their name, and nothing shortens or extends one, so no crash leaves a
    file of another length: whatever did (``truncate``, a copy cut short) may
    have removed acknowledged records, which is never a torn tail.
    """
    want = seg.header.segment_bytes
    how = "truncated" if size < want else "extended"
    reason = (
        f"segment file is {size} bytes, its header says {want} "
        f"(segments are preallocated to full size: the file was {how}, acknowledged records may be lost)"
    )
    zero_to = damage.zero_to if damage is not None and damage.offset == seg.end_offset else seg.end_offset
    return Damage(seg.path, seg.end_offset, reason, torn_tail=False, zero_to=min(zero_to, size), resize_to=want)


def _holds_data(path: Path) -> bool:
    buf, size = _map(path)
    try:
        return size > DATA_START and nonzero_end(buf, DATA_START) > DATA_START
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def check(result: LogScan, mode: RecoveryMode) -> None:
    """Raise :class:`WalCorruptionError` if *mode* does not accept the damage found."""
    d = result.damage
    if d is None or mode is RecoveryMode.POINT_IN_TIME:
        return
    if mode is RecoveryMode.TOLERATE_TAIL and d.torn_tail:
        return
    kind = "torn tail" if d.torn_tail else "corruption"
    detail = f"{kind}: {d.reason} (recovery mode {mode.value})"
    raise WalCorruptionError(str(d.path), d.offset, detail)


def recover(directory: Path | str, mode: RecoveryMode) -> LogScan:
    """Scan, check against *mode*, and repair so that appending can resume safely.

    Repair zeroes the damaged bytes (then syncs) rather than truncating the
    file, so the segment stays preallocated and pre-written; segments past
    the damage (point-in-time only) are renamed aside.
    """
    directory = Path(directory)
    result = scan(directory)
    check(result, mode)
    _seal_predecessors(result)
    d = result.damage
    if d is None:
        return result
    if result.segments and result.segments[-1].path == d.path:
        if d.zero_to > d.offset:
            _zero_range(d.path, d.offset, d.zero_to)
        if d.resize_to:
            _resize(d.path, d.resize_to)
    last = result.segments[-1] if result.segments else None
    if last is not None and last.sealed_next is not None:
        # the log now ends here (its successor is gone or set aside) and appends resume in it
        unseal(last.path)
        last.sealed_next = None
    if result.discard:
        for p in result.discard:
            with contextlib.suppress(FileNotFoundError):
                os.rename(p, _free_discard_name(p))
        fsync_dir(directory)
    return result


def _seal_predecessors(result: LogScan) -> None:
    """Seal every kept segment that has a successor but no seal, before appends resume.

    A roll seals the predecessor only after the successor is named; a crash or a
    failed seal write in between leaves it unsealed, which is legal at that moment.
    Left so, the log would lose its guard for good: once appends went on past that
    segment, deleting the newest files down to it would read as a log that simply
    ended there, acknowledged records and all.  (Logs written before seals existed
    get their seals here too.)  The scan has checked that each successor starts
    where its predecessor's records end.
    """
    kept = result.segments
    for older, newer in itertools.pairwise(kept):
        if older.sealed_next is None:
            seal(older.path, newer.first_lsn)
            older.sealed_next = newer.first_lsn


def _free_discard_name(segment: Path) -> Path:
    """``<segment>.discarded``, or ``.discarded.N`` when an earlier recovery set a segment of
    the same name aside: a log refilled after a recovery rolls at the same LSNs when its
    records have one size, and what the first recovery kept (acknowledged records past
    the damage) must not be renamed over.  (The log's lock keeps other writers out.)"""
    name = segment.with_name(segment.name + ".discarded")
    n = 0
    while name.exists():
        n += 1
        name = segment.with_name(f"{segment.name}.discarded.{n}")
    return name


def _zero_range(path: Path, start: int, end: int) -> None:
    # (with_descriptor: a raising signal right after the open leaks nothing)
    with_descriptor(os.fspath(path), os.O_RDWR | os.O_CLOEXEC, functools.partial(_zero_fd, start, end, path))


def _resize(path: Path, size: int) -> None:
    """Give a segment of the wrong length its header's size again (zeros past the old end)."""
    with_descriptor(os.fspath(path), os.O_RDWR | os.O_CLOEXEC, functools.partial(_resize_fd, size, path))


def _zero_fd(start: int, end: int, path: Path, fd: int) -> None:
    _write_zeros(fd, start, end, path)
    os.fdatasync(fd)


def _resize_fd(size: int, path: Path, fd: int) -> None:
    old = os.fstat(fd).st_size
    os.ftruncate(fd, size)
    if size > old:  # write the zeros: appends then overwrite written blocks, as in a spare
        _write_zeros(fd, old, size, path)
    os.fdatasync(fd)


def _write_zeros(fd: int, start: int, end: int, path: Path) -> None:
    off = start
    while off < end:
        n = os.pwrite(fd, memoryview(_ZEROS)[: min(len(_ZEROS), end - off)], off)
        if n <= 0:
            raise OSError(f"short write while repairing {path}")
        off += n


def iter_records(
    segments: list[SegmentScan], from_lsn: int = 1, upto_lsn: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(lsn, payload)`` for LSNs in ``[from_lsn, upto_lsn]`` from scanned segments.

    The segments' files are opened by this call, not when the iteration reaches
    them: one removed afterwards (``Wal.truncate_before``, a checkpoint in another
    thread) is still read, as an open file outlives its name.  Until session 27
    the iteration raised a bare ``FileNotFoundError`` half-way instead.
    """
    wanted = [s for s in segments if s.last_lsn >= from_lsn and (upto_lsn is None or s.first_lsn <= upto_lsn)]
    fds: list[int] = []
    try:
        for seg in wanted:
            open_stored(fds, os.fspath(seg.path), os.O_RDONLY | os.O_CLOEXEC)
        records = _read_files(wanted, fds, from_lsn, upto_lsn)
        # An iteration dropped unfinished, or never begun, closes its files.
        weakref.finalize(records, close_popped, fds)
    except BaseException:
        close_stored(fds)
        raise
    return records


def _read_files(
    segments: list[SegmentScan], fds: list[int], from_lsn: int, upto_lsn: int | None
) -> Iterator[tuple[int, bytes]]:
    try:
        for seg, fd in zip(segments, list(fds), strict=True):
            buf = _map_fd(fd)
            # the last LSN this segment holds (records counted at the scan, and by the writer since)
            last = seg.last_lsn if upto_lsn is None else min(seg.last_lsn, upto_lsn)
            lsn, end = seg.first_lsn - 1, DATA_START
            try:
                for off, lsn, payload in walk(buf, seg.first_lsn):
                    if upto_lsn is not None and lsn > upto_lsn:
                        return
                    if lsn >= from_lsn:
                        yield lsn, payload
                    end = _record_end(off, payload)
                    if lsn >= last:
                        break
            finally:
                if isinstance(buf, mmap.mmap):
                    buf.close()
            if lsn < last:
                # A record counted as durable does not decode: the file was damaged since the
                # log was opened.  Until session 31 the iteration went on with the next segment,
                # the records between skipped without a word.
                raise WalCorruptionError(
                    str(seg.path), end, f"record LSN {lsn + 1} does not decode (damaged since the log was opened)"
                )
    finally:
        close_stored(fds)
