"""Read-ahead and write-behind for sequential file-object I/O on a stack handle.

:class:`ReadAhead` keeps several chunk reads in flight past the reader's
position (the first batch in one submission) and serves ``readinto`` calls from
them; :class:`WriteBehind` starts each write and returns, keeping a bounded
number in flight, and :meth:`WriteBehind.drain` waits for them all and raises
the first error.  Both only ever touch the file through the handle (the one I/O
contract); the caller (:class:`uringstack.fileobj.fileio.FileIO`) serialises calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uringstack.errors import UringIOError
from uringstack.ring.buffers import aligned_buffer

if TYPE_CHECKING:
    from uringstack.ring.pending import Pending
    from uringstack.stack.handle import FileHandle

CHUNK = 256 * 1024
"""Size of one read-ahead request (a multiple of every logical block size)."""
DEPTH = 8
"""Read-ahead requests in flight (2 MiB ahead with the default chunk)."""
WRITE_DEPTH = 8
"""Write-behind requests in flight before ``write`` waits for the oldest."""


@dataclass
class _Chunk:
    offset: int
    buf: Any
    pending: Pending
    index: int  # this chunk's result in its batch
    valid: int = -1  # bytes of file data in buf once completed (< chunk: end of file)


def finish_read(handle: FileHandle, offset: int, buf: Any, res: int) -> int:
    """Check one read result: raise its error, complete a short read (short only at EOF)."""
    if res < 0:
        raise UringIOError(-res, "read", handle.path, f"at offset {offset}")
    size = len(buf)
    if handle.direct and res % handle.block_size:
        # O_DIRECT moves whole blocks except at end of file: this is EOF.  (The
        # handle's own retry would ask for the rest at an unaligned offset.)
        return res
    if 0 < res < size:
        # short but not at EOF (e.g. a page-cache boundary): the handle reads the rest
        res += handle.read_into(memoryview(buf)[res:], offset + res)
    return res


class ReadAhead:
    """A window of in-flight chunk reads ahead of a sequential reader.

    :meth:`readinto` serves a read that continues the previous one (or starts
    at offset 0) from the window and returns ``-1`` for any other read, which
    the caller then does itself: random access never triggers read-ahead.
    """

    def __init__(self, handle: FileHandle, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        self.handle = handle
        self.chunk = chunk
        self.depth = depth
        self._window: deque[_Chunk] = deque()
        self._free: list[Any] = []
        self._eof: int | None = None  # file offset where a chunk came back short
        self._next = 0  # offset of the first chunk when the window is empty
        self.last_end = 0  # where the previous read ended: reading there again is sequential

    def invalidate(self) -> None:
        """Forget the window (the file was written or truncated through this object)."""
        # In-flight buffers belong to their batch until it completes: dropping our
        # reference is safe, handing them to a new read is not, so they are not recycled.
        self._window.clear()
        self._eof = None

    def _refill(self) -> None:
        """Top the window up to *depth* chunks, in one submission, once half of it was used."""
        have = len(self._window)
        if self._eof is not None or (have and have > self.depth // 2):
            return
        end = self._window[-1].offset + self.chunk if self._window else self._next
        offsets = [end + i * self.chunk for i in range(self.depth - have)]
        bufs = [self._free.pop() if self._free else aligned_buffer(self.chunk) for _ in offsets]
        pending = self.handle.start_read_many(offsets, bufs)
        for i, (off, buf) in enumerate(zip(offsets, bufs, strict=True)):
            self._window.append(_Chunk(off, buf, pending, i))

    def _complete(self, c: _Chunk) -> None:
        if c.valid >= 0:
            return
        c.valid = finish_read(self.handle, c.offset, c.buf, c.pending.wait()[c.index])
        if c.valid < self.chunk and (self._eof is None or c.offset + c.valid < self._eof):
            self._eof = c.offset + c.valid

    def _drop_front(self) -> None:
        c = self._window.popleft()
        if c.valid >= 0 or c.pending.done():
            self._free.append(c.buf)

    def readinto(self, m: memoryview, pos: int) -> int:
        """Fill *m* from offset *pos* out of the window; ``-1`` when *pos* is not sequential."""
        in_window = bool(self._window) and self._window[0].offset <= pos < self._window[-1].offset + self.chunk
        if not in_window:
            if pos != self.last_end:
                self.invalidate()
                return -1
            self.invalidate()
            self._next = pos - pos % self.chunk  # chunk-aligned: also O_DIRECT-aligned
        while self._window and self._window[0].offset + self.chunk <= pos:
            self._drop_front()
        done, want = 0, len(m)
        while done < want:
            if not self._window:
                self._refill()
                if not self._window:
                    break  # end of file reached by an earlier chunk
            c = self._window[0]
            self._complete(c)
            start = pos + done - c.offset
            n = min(c.valid - start, want - done)
            if n > 0:
                m[done : done + n] = memoryview(c.buf)[start : start + n]
                done += n
            if start + max(n, 0) < c.valid or c.valid < self.chunk:
                break  # the reader asked for less than this chunk holds, or end of file
            self._drop_front()
            self._refill()
        self.last_end = pos + done
        if done == 0:
            # At end of file the file may still grow: ask the kernel again next time.
            self.invalidate()
            self._next = pos - pos % self.chunk
        return done


class WriteBehind:
    """Writes started and not yet waited for, oldest first."""

    def __init__(self, handle: FileHandle, depth: int = WRITE_DEPTH) -> None:
        self.handle = handle
        self.depth = depth
        self._inflight: deque[tuple[int, Any, Pending]] = deque()
        self.end = -1  # file offset right after the last write started (-1: none)

    def __len__(self) -> int:
        return len(self._inflight)

    def start(self, buf: Any, offset: int) -> None:
        """Start writing *buf* (owned by this object from now on) at *offset*."""
        if len(self._inflight) >= self.depth:
            self._wait_oldest()
        pending = self.handle.start_write_many([offset], [buf])
        self._inflight.append((offset, buf, pending))
        self.end = offset + len(buf)

    def _wait_oldest(self) -> None:
        offset, buf, pending = self._inflight.popleft()
        res = pending.wait()[0]
        if res < 0:
            self._abandon()
            raise UringIOError(-res, "write", self.handle.path, f"at offset {offset} (write-behind)")
        if res < len(buf):
            # the handle's own retry: complete the rest or raise ShortIOError
            self.handle.write_from(memoryview(buf)[res:], offset + res)

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
