"""Read-ahead and write-behind for sequential file-object I/O on a stack handle.

:class:`ReadAhead` keeps prepared batches of large reads in flight past the
reader's position (each batch one submission) and serves ``readinto`` calls
from them; :class:`WriteBehind` starts each write and returns, keeping a bounded
number in flight, and :meth:`WriteBehind.drain` waits for them all and raises
the first error.  Both only ever touch the file through the handle (the one I/O
contract); the caller (:class:`uringstack.fileobj.fileio.FileIO`) serialises calls.
"""

from __future__ import annotations

import contextlib
import mmap
from collections import deque
from typing import TYPE_CHECKING, Any

from uringstack.ring.buffers import aligned_buffer

if TYPE_CHECKING:
    from uringstack.ring.pending import Pending
    from uringstack.stack.handle import FileHandle
    from uringstack.stack.prepared import PreparedIO

CHUNK = 4 << 20
"""Size of one read-ahead request: large O_DIRECT requests keep the device busy per submission."""
PER_BATCH = 1
"""Read-ahead requests started together, in one submission (one prepared batch)."""
BATCHES = 6
"""Prepared batches that take turns: one is read from while the others are in flight (20-24 MiB ahead).

Measured (``sha256`` of a 512 MiB file after ``POSIX_FADV_DONTNEED``, virtio
disk, same run, loaded host): 1 MiB x 2 x 3 gave 269 MiB/s (1.11x the
built-in ``open()``), 4 MiB x 2 x 3 269 MiB/s, 2 MiB x 1 x 8 340 MiB/s,
4 MiB x 1 x 6 433 MiB/s (1.56x).  One request per batch restarts each
buffer as soon as it was read from, so five stay in flight instead of two
batches while the third is served; the cost is 24 MiB of buffers per file
object reading sequentially (allocated as the window first reaches them, and
never past the end of the file)."""
WRITE_DEPTH = 8
"""Write-behind requests in flight before ``write`` waits for the oldest."""
HUGE_PAGE = 2 << 20
"""Transparent huge page size on x86-64 and most arm64 kernels; smaller buffers are not advised."""


def direct_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer for O_DIRECT reads, backed by transparent huge pages where the kernel allows.

    ``MADV_HUGEPAGE`` matters under THP's default ``madvise`` mode: with
    4 KiB pages a 4 MiB O_DIRECT read pins 1024 pages and its scatter list
    rarely merges, so the block layer splits it into several requests
    (``max_segments``, 254 on virtio); with 2 MiB pages it pins two and goes
    out whole.  Measured (1 GiB, ``POSIX_FADV_DONTNEED`` before each run,
    virtio disk, 2 loaded vCPUs, 5 runs alternating in one process): reading
    alone 0.80 s -> 0.45 s wall (CPU 0.19 -> 0.18 s), ``sha256`` 1.01 s ->
    0.86 s wall (CPU 0.77 -> 0.72 s); random 4 MiB reads without read-ahead
    (``FileIO._direct_read``) 23.1 -> 16.8 ms wall, CPU 6.9 -> 5.6 ms each.
    Where THP is off or not built in the advice is refused or ignored and the
    buffer keeps 4 KiB pages; below :data:`HUGE_PAGE` it is not asked for."""
    buf = aligned_buffer(size)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None and size >= HUGE_PAGE:
        with contextlib.suppress(OSError):  # no THP in this kernel: plain pages, as without the advice
            buf.madvise(advice)
    return buf


def finish_read(handle: FileHandle, offset: int, buf: Any, res: int) -> int:
    """Check one read result: raise its error, complete a short read (short only at EOF)."""
    if res < 0:
        res = handle._rerun_rw(res, False, offset, buf)  # (an op the kernel cancelled on its own)
        if res < 0:
            raise handle._op_error(-res, "read", f"at offset {offset}")
    size = len(buf)
    if handle.direct and res % handle.block_size:
        # O_DIRECT moves whole blocks except at end of file: this is EOF.  (The
        # handle's own retry would ask for the rest at an unaligned offset.)
        return res
    if 0 < res < size:
        # short but not at EOF (e.g. a page-cache boundary): the handle reads the rest
        res += handle.read_into(memoryview(buf)[res:], offset + res)
    return res


class _Batch:
    """A prepared group of read-ahead buffers and the run of it in flight, if any.

    The buffers are the kernel's from :meth:`start` until :meth:`reap` saw
    the completion: nothing reads them before, and :meth:`start` refuses to
    hand them out again before (a read landing in a buffer being served, or
    resubmitted, is what hung an earlier version)."""

    def __init__(self, prepared: PreparedIO, chunk: int) -> None:
        self.prepared = prepared
        self.chunk = chunk
        self.span = chunk * prepared.n
        self.offset = -1  # file offset of buffers[0] in the current run
        self.pending: Pending | None = None  # the run in flight, until reaped
        self.valid: list[int] = []  # bytes of file data per buffer, once reaped

    def start(self, offset: int) -> None:
        if self.pending is not None:
            raise AssertionError(f"read-ahead batch at {self.offset} restarted before its completion was reaped")
        self.offset = offset
        self.valid = []
        self.pending = self.prepared.start([offset + i * self.chunk for i in range(self.prepared.n)])

    def reap(self, handle: FileHandle, check: bool = True) -> None:
        """Wait for the run in flight and check its results (``check=False``: only wait)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        results = pending.wait()
        if check:
            bufs = self.prepared.buffers
            self.valid = [finish_read(handle, self.offset + i * self.chunk, bufs[i], r) for i, r in enumerate(results)]


class ReadAhead:
    """Prepared batches of large reads in flight ahead of a sequential reader.

    :meth:`readinto` serves a read that continues the previous one (or starts
    at offset 0) from the batches and returns ``-1`` for any other read, which
    the caller then does itself: random access never triggers read-ahead.
    The batches come from :meth:`FileHandle.prepare_reads` (buffers pinned
    and checked once) and take turns: the one being read from is restarted
    further ahead only after it was consumed, its completion long reaped.
    """

    def __init__(
        self, handle: FileHandle, chunk: int = CHUNK, per_batch: int = PER_BATCH, batches: int = BATCHES
    ) -> None:
        self.handle = handle
        self.chunk = chunk
        self.per_batch = per_batch
        self.nbatches = batches
        self._window: deque[_Batch] = deque()  # started, in file order
        self._idle: list[_Batch] = []  # reaped (or never started): free to start
        self._made = 0
        self._eof: int | None = None  # file offset where a read came back short
        self._limit = 0  # file size when the window started: no read-ahead starts past it
        self._next = 0  # where the first batch starts when the window is empty
        self.last_end = 0  # where the previous read ended: reading there again is sequential

    def _free_batch(self) -> _Batch | None:
        if self._idle:
            return self._idle.pop()
        if self._made < self.nbatches:
            self._made += 1
            bufs = [direct_buffer(self.chunk) for _ in range(self.per_batch)]
            return _Batch(self.handle.prepare_reads(bufs), self.chunk)
        return None

    def invalidate(self) -> None:
        """Forget the window (a seek elsewhere, or the file was written or truncated through this object).

        Waits for the reads in flight: their buffers are reused only after their completions were reaped."""
        while self._window:
            b = self._window.popleft()
            try:
                b.reap(self.handle, check=False)
            finally:
                self._idle.append(b)
        self._eof = None

    def close(self) -> None:
        """Wait for the reads in flight and drop the prepared batches."""
        self.invalidate()
        for b in self._idle:
            b.prepared.close()
        self._idle.clear()

    def _refill(self) -> None:
        """Start every free batch further ahead (each is one submission of *per_batch* reads)."""
        while self._eof is None:
            end = self._window[-1].offset + self._window[-1].span if self._window else self._next
            if end >= self._limit:
                return  # a small file (or the end of one) takes no read-ahead buffers nor requests
            b = self._free_batch()
            if b is None:
                return
            try:
                b.start(end)
            except BaseException:
                self._idle.append(b)
                raise
            self._window.append(b)

    def _front(self) -> _Batch:
        """The first batch of the window, its completion reaped and checked."""
        b = self._window[0]
        if b.pending is not None:
            try:
                b.reap(self.handle)
            except BaseException:
                self.invalidate()
                raise
            for i, n in enumerate(b.valid):
                if n < self.chunk:
                    end = b.offset + i * self.chunk + n
                    if self._eof is None or end < self._eof:
                        self._eof = end
                    break
        return b

    def _drop_front(self) -> None:
        b = self._window.popleft()
        # where a refill of the window, if this emptied it, goes on from: before, the start
        # of the window was kept, and a read crossing the end of its last batch (a file of
        # whole chunks, read in pieces that do not divide them) started the window over at
        # the start and indexed past its buffers: IndexError, the bytes read so far lost
        self._next = b.offset + b.span
        b.reap(self.handle, check=False)  # no-op once served; keeps the rule if not
        self._idle.append(b)

    def readinto(self, m: memoryview, pos: int) -> int:
        """Fill *m* from offset *pos* out of the window; ``-1`` when *pos* is not sequential.

        ``0`` when the window ends at *pos* (the end of file when it was read
        ahead, which may have moved since): the caller then asks the kernel."""
        w = self._window
        in_window = bool(w) and w[0].offset <= pos < w[-1].offset + w[-1].span
        if not in_window:
            if pos != self.last_end:
                self.invalidate()
                return -1
            self.invalidate()
            self._next = pos - pos % self.chunk  # chunk-aligned: also O_DIRECT-aligned
            self._limit = self.handle.size()
            if pos >= self._limit:
                return 0  # at or past the end of file: nothing to read ahead, the caller asks the kernel
        while w and w[0].offset + w[0].span <= pos:
            self._drop_front()
        done, want = 0, len(m)
        while done < want:
            if not w:
                self._refill()
                if not w:
                    break  # end of file reached by an earlier read
            b = self._front()
            at = pos + done - b.offset
            i, start = divmod(at, self.chunk)
            valid = b.valid[i]
            n = min(valid - start, want - done)
            if n > 0:
                m[done : done + n] = memoryview(b.prepared.buffers[i])[start : start + n]
                done += n
            if start + max(n, 0) < valid:
                break  # the reader asked for less than this buffer holds
            if valid < self.chunk:
                break  # end of file
            if i + 1 < len(b.valid):
                continue  # the next buffer of the same batch
            self._drop_front()
            self._refill()
        self.last_end = pos + done
        if done == 0:
            # At end of file the file may still grow: ask the kernel again next time.
            self.invalidate()
            self._next = pos - pos % self.chunk
        return done


class WriteBehind:
    """Writes started and not yet waited for, oldest first.

    :meth:`write` copies the caller's bytes into a buffer of its own (page
    aligned, so O_DIRECT takes it, on huge pages where that helps, see
    :meth:`_buffer`; recycled once its write completed) and
    starts the write without waiting: the caller's memory is free again when
    it returns, and the write runs on the device while the caller goes on.

    Only O_DIRECT files get it (``FileIO._enable_streaming``).  For buffered
    files it was measured and left off: started unwaited on ext4, each write's
    page-cache copy runs on an io-wq worker, which took 16% off the caller's
    thread (copyfileobj of 256 MiB: 0.20 s CPU instead of 0.24) but added 30%
    CPU in all (0.33 s: the extra copy, the hand-offs), and on a busy machine
    the copy was slower in wall time (0.85 s against 0.59 s inline); on a
    quiet one it gained 5% (0.268 s against 0.281 s, the built-in 0.264 s):
    the page-cache copy is a small part of a copy's time there."""

    def __init__(self, handle: FileHandle, depth: int = WRITE_DEPTH) -> None:
        self.handle = handle
        self.depth = depth
        self._inflight: deque[tuple[int, Any, Pending]] = deque()
        self._free: list[Any] = []  # buffers whose writes completed, for the next writes
        self.end = -1  # file offset right after the last write started (-1: none)

    def __len__(self) -> int:
        return len(self._inflight)

    def write(self, m: memoryview, offset: int) -> None:
        """Start writing a copy of *m* at *offset*, after every write in flight if it does not continue them."""
        if self.end != offset:
            self.drain()  # in-flight writes are unordered: never let two overlap
        elif len(self._inflight) >= self.depth:
            self._wait_oldest()
        buf = self._buffer(len(m))
        buf[:] = m
        self.start(buf, offset)

    def _buffer(self, n: int) -> Any:
        """A buffer of *n* bytes whose write completed, else a new one.

        From 256 KiB to 1 MiB (sizes that divide :data:`HUGE_PAGE`) new buffers
        are carved out of one huge-page-advised 2 MiB mapping: a 1 MiB write
        from 4 KiB pages is 256 segments, which virtio (254 at most) sends as two
        requests.  Measured (256 MiB through ``uringstack.open("wb",
        direct=True)``, old and new alternating in one process, medians of 7,
        loaded host): 1 MiB writes CPU 0.076 -> 0.046 s (wall 0.24 -> 0.15 s),
        4 MiB writes (:func:`direct_buffer`) 0.118 -> 0.070 s (0.62 -> 0.42 s),
        256 KiB writes 0.144 -> 0.097 s (0.32 -> 0.18 s)."""
        free = self._free
        for i, b in enumerate(free):  # by position: equal-content views compare equal
            if len(b) == n:
                return free.pop(i)
        if HUGE_PAGE // 8 <= n < HUGE_PAGE and HUGE_PAGE % n == 0:
            whole = memoryview(direct_buffer(HUGE_PAGE))
            parts = [whole[i : i + n] for i in range(0, HUGE_PAGE, n)]
            free.extend(parts[1:])
            return parts[0]
        return direct_buffer(n)

    def start(self, buf: Any, offset: int) -> None:
        """Start writing *buf* (owned by this object from now on) at *offset*."""
        if len(self._inflight) >= self.depth:
            self._wait_oldest()
        pending = self.handle.start_write_many([offset], [buf])
        self._inflight.append((offset, buf, pending))
        self.end = offset + len(buf)

    def _wait_oldest(self) -> None:
        # Taken off the list only once its outcome is known: a raising signal (Ctrl-C)
        # cutting the wait short leaves it there, for the next wait (a batch's
        # results are kept) to see and raise its failure; taken off first, a
        # failure of data the caller had written was lost, and flush() returned
        # before the write reached the kernel.
        offset, buf, pending = self._inflight[0]
        res = pending.wait()[0]
        if res < 0:
            res = self.handle._rerun_rw(res, True, offset, buf)  # (an op the kernel cancelled on its own)
        if res < 0:
            self._abandon()
            raise self.handle._op_error(-res, "write", f"at offset {offset} (write-behind)")
        if res < len(buf):
            # the handle's own retry: complete the rest or raise ShortIOError (the same
            # bytes again at the same offset, if a signal makes this run again)
            self.handle.write_from(memoryview(buf)[res:], offset + res)
        self._inflight.popleft()
        if len(self._free) <= self.depth:
            self._free.append(buf)

    def _abandon(self) -> None:
        """After a failure: wait for the rest so no buffer is in flight, keep the first error."""
        while self._inflight:
            _, _, pending = self._inflight.popleft()
            pending.wait()
        self.end = -1

    def drain(self) -> None:
        """Wait until every started write reached the kernel; raise the first failure."""
        while self._inflight:
            self._wait_oldest()
        self.end = -1
