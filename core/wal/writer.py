"""Group commit: one flusher thread turns many concurrent appends into one write.

Appenders frame their record under the lock (so LSN order is file order),
queue it and sleep.  The flusher takes everything queued (bounded by
``max_batch_bytes`` and the room left in the segment), copies it behind the
partial tail block of the previous flush into one block-aligned buffer, and
hands that single write to the backend, which returns once it is durable.
Only then does the durable-LSN watermark move and are the appenders woken.
While a flush is in flight the next batch accumulates, so the number of
flushes adapts to the device's flush latency without a timer.

There is at most one write in flight and it never crosses a segment: the
recovery code relies on that to tell a torn tail from corruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import threading
import time
from collections import deque
from pathlib import Path

from .config import WalConfig
from .errors import WalClosedError, WalFailedError, failed_from
from .io import WalBackend
from .record import MAX_PAYLOAD_BYTES, encode, padded_size
from .recovery import SegmentScan
from .segment import (
    BLOCK_BYTES,
    SegmentHeader,
    activate_spare,
    create_segment,
    prepare_spare,
)

_AsyncWaiter = tuple[int, asyncio.AbstractEventLoop, "asyncio.Future[int]"]


def _resolve(waiters: list[tuple[int, asyncio.Future[int]]]) -> None:
    for lsn, fut in waiters:
        if not fut.done():
            fut.set_result(lsn)


def _reject(waiters: list[tuple[int, asyncio.Future[int]]], exc: BaseException) -> None:
    for _lsn, fut in waiters:
        if not fut.done():
            fut.set_exception(exc)


class Writer:
    """Owns the active segment, the staging buffer and the flusher thread."""

    def __init__(
        self,
        directory: Path,
        config: WalConfig,
        backend: WalBackend,
        segments: list[SegmentScan],
        next_lsn: int,
    ) -> None:
        self.directory = directory
        self.config = config
        self.backend = backend
        self.segments = segments  # shared with the Wal; mutated under self.lock
        self.lock = threading.Lock()
        self._work = threading.Condition(self.lock)
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._async: deque[_AsyncWaiter] = deque()
        # One pre-acquired lock per blocked appender, in LSN order: the flusher
        # releases exactly the ones it made durable (a Condition.notify_all
        # would wake every appender after every flush, most of them for nothing).
        self._sync: deque[tuple[int, threading.Lock]] = deque()
        self.next_lsn = next_lsn
        self.durable_lsn = next_lsn - 1
        self.failed: WalFailedError | None = None
        self._closing = False
        self.direct = False
        self._fd = -1
        self._tail = b""
        self._max_record = config.max_batch_bytes
        self._max_write = config.max_write_bytes
        # mmap: page aligned, as O_DIRECT requires of the buffer address.
        self._buf = mmap.mmap(-1, self._max_write)
        self._spare: Path | None = None
        self._spare_error: BaseException | None = None
        self._spare_thread: threading.Thread | None = None
        self._open_active(self._initial_segment())
        self._start_spare()
        self._thread = threading.Thread(target=self._run, name="wal-flusher", daemon=True)
        self._thread.start()

    # --- segments ----------------------------------------------------------------
    def _header(self, first_lsn: int) -> SegmentHeader:
        return SegmentHeader(first_lsn, self.config.segment_size_bytes, self._max_write)

    def _initial_segment(self) -> SegmentScan:
        last = self.segments[-1] if self.segments else None
        want = self._header(self.next_lsn)
        if last is not None:
            h = last.header
            compatible = (h.segment_bytes, h.max_write_bytes, h.block_bytes) == (
                want.segment_bytes, want.max_write_bytes, want.block_bytes,
            )  # fmt: skip
            if compatible and last.end_offset + BLOCK_BYTES <= h.segment_bytes:
                return last  # keep appending where the log ends
            if last.records == 0:
                # an empty segment would collide with the new one's name
                os.unlink(last.path)
                self.segments.pop()
        seg = SegmentScan(create_segment(self.directory, want), want)
        self.segments.append(seg)
        return seg

    def _open_active(self, seg: SegmentScan) -> None:
        base = os.O_RDWR | os.O_CLOEXEC
        fd = -1
        if self.config.direct_io != "off":
            try:
                fd = os.open(seg.path, base | os.O_DIRECT)
                self.direct = True
            except OSError as e:
                if self.config.direct_io == "on" or e.errno != errno.EINVAL:
                    raise
        if fd < 0:
            fd = os.open(seg.path, base)
            self.direct = False
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self.active = seg
        # The partial last block is rewritten by the next flush, so keep its bytes
        # (read through a buffered file: O_DIRECT reads need aligned buffers).
        start = seg.end_offset - seg.end_offset % BLOCK_BYTES
        self._tail = b""
        if seg.end_offset > start:
            with open(seg.path, "rb") as f:
                f.seek(start)
                self._tail = f.read(seg.end_offset - start)

    def _start_spare(self) -> None:
        def prepare() -> None:
            try:
                self._spare = prepare_spare(self.directory, self.config.segment_size_bytes)
            except BaseException as e:  # reported at rollover, where it fails the log
                self._spare_error = e

        self._spare, self._spare_error = None, None
        self._spare_thread = threading.Thread(target=prepare, name="wal-spare", daemon=True)
        self._spare_thread.start()

    def _roll(self, first_lsn: int) -> None:
        assert self._spare_thread is not None
        self._spare_thread.join()
        if self._spare_error is not None or self._spare is None:
            raise self._spare_error or OSError(errno.EIO, "no spare segment")
        path = activate_spare(self._spare, self._header(first_lsn))
        seg = SegmentScan(path, self._header(first_lsn))
        with self.lock:
            self.segments.append(seg)
        self._open_active(seg)
        self._start_spare()

    # --- appending ------------------------------------------------------------------
    def append(self, payload: bytes | bytearray | memoryview) -> int:
        """Queue one record and block until it is durable; return its LSN."""
        size = padded_size(len(payload))
        if size > self._max_record or len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"record of {len(payload)} bytes exceeds max_batch_bytes={self._max_record}")
        waiter = threading.Lock()
        waiter.acquire()
        with self.lock:
            self._check()
            lsn = self._queue_locked(payload)
            self._sync.append((lsn, waiter))
        waiter.acquire()  # released by _acknowledge or _fail
        if self.durable_lsn >= lsn:
            return lsn
        if self.failed is not None:
            raise self.failed
        raise WalClosedError("WAL closed before the record was flushed")

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self._closing:
            raise WalClosedError("WAL is closed")

    def _queue_locked(self, payload: bytes | bytearray | memoryview) -> int:
        lsn = self.next_lsn
        rec = encode(lsn, payload)
        self.next_lsn = lsn + 1
        self._pending.append(rec)
        self._pending_bytes += len(rec)
        if len(self._pending) == 1 or self._pending_bytes >= self._max_record:
            self._work.notify()
        return lsn

    def submit_async(self, payload: bytes | bytearray | memoryview) -> asyncio.Future[int]:
        """Queue one record; the future resolves to its LSN once durable (from the flusher)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        size = padded_size(len(payload))
        if size > self._max_record:
            raise ValueError(f"record of {len(payload)} bytes exceeds max_batch_bytes={self._max_record}")
        with self.lock:
            self._check()
            lsn = self._queue_locked(payload)
            self._async.append((lsn, loop, fut))
        return fut

    # --- the flusher ------------------------------------------------------------------
    def _take_batch(self) -> tuple[list[bytes], int, bool] | None:
        """Under the lock: wait for work, then take one batch. None means: exit."""
        while not self._pending:
            if self._closing or self.failed is not None:
                return None
            self._work.wait()
        delay_s = self.config.max_delay_us / 1e6
        if delay_s and self._pending_bytes < self._max_record and not self._closing:
            deadline = time.monotonic() + delay_s
            while self._pending_bytes < self._max_record and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._work.wait(left)
        room = self.active.header.segment_bytes - self.active.end_offset
        batch: list[bytes] = []
        total = 0
        while self._pending:
            n = len(self._pending[0])
            if total + n > self._max_record or total + n > room:
                break
            batch.append(self._pending.popleft())
            total += n
        self._pending_bytes -= total
        return batch, total, not batch  # an empty batch means the segment is full

    def _run(self) -> None:
        while True:
            with self.lock:
                taken = self._take_batch()
                if taken is None:
                    return
                first_lsn = self.durable_lsn + 1
            batch, total, roll = taken
            try:
                if roll:
                    self._roll(first_lsn)
                    continue
                self._flush(batch, total)
            except BaseException as e:
                self._fail(failed_from(e, "roll" if roll else "write"))
                return
            self._acknowledge(first_lsn + len(batch) - 1)

    def _flush(self, batch: list[bytes], total: int) -> None:
        seg = self.active
        write_at = seg.end_offset - seg.end_offset % BLOCK_BYTES
        buf = self._buf
        t = len(self._tail)
        buf[:t] = self._tail
        pos = t
        for rec in batch:
            buf[pos : pos + len(rec)] = rec
            pos += len(rec)
        length = (pos + BLOCK_BYTES - 1) // BLOCK_BYTES * BLOCK_BYTES
        buf[pos:length] = bytes(length - pos)  # stale bytes of an older batch must not leak
        assert length <= self._max_write and write_at + length <= seg.header.segment_bytes
        self.backend.write_durable(self._fd, memoryview(buf)[:length], write_at)
        new_end = seg.end_offset + total
        tail_from = new_end - new_end % BLOCK_BYTES
        self._tail = bytes(buf[tail_from - write_at : new_end - write_at])
        with self.lock:
            seg.end_offset = new_end
            seg.records += len(batch)

    def _acknowledge(self, lsn: int) -> None:
        ready: dict[asyncio.AbstractEventLoop, list[tuple[int, asyncio.Future[int]]]] = {}
        wake: list[threading.Lock] = []
        with self.lock:
            self.durable_lsn = lsn
            while self._sync and self._sync[0][0] <= lsn:
                wake.append(self._sync.popleft()[1])
            while self._async and self._async[0][0] <= lsn:
                wl, loop, fut = self._async.popleft()
                ready.setdefault(loop, []).append((wl, fut))
        for w in wake:
            w.release()
        for loop, waiters in ready.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_resolve, waiters)

    def _fail(self, exc: WalFailedError) -> None:
        rejected: dict[asyncio.AbstractEventLoop, list[tuple[int, asyncio.Future[int]]]] = {}
        with self.lock:
            self.failed = exc
            self._pending.clear()
            self._pending_bytes = 0
            wake = [w for _, w in self._sync]
            self._sync.clear()
            while self._async:
                wl, loop, fut = self._async.popleft()
                rejected.setdefault(loop, []).append((wl, fut))
        for w in wake:
            w.release()
        for loop, waiters in rejected.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_reject, waiters, exc)

    # --- shutdown -----------------------------------------------------------------------
    def close(self) -> None:
        """Flush what is queued, stop the flusher, release the file and buffer."""
        with self.lock:
            self._closing = True
            self._work.notify_all()
        self._thread.join()
        with self.lock:  # normally empty: close flushes everything queued first
            wake = [w for _, w in self._sync]
            self._sync.clear()
        for w in wake:
            w.release()
        if self._spare_thread is not None:
            self._spare_thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._buf.close()
