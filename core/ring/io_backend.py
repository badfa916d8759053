"""The backend side of a file handle: what every backend implements.

A backend (the core's io_uring backend, the fallback plugin's thread pool,
NVMe passthrough, IOPOLL) opens a target and returns a :class:`FileIO`.  The
public :class:`uringstack.stack.handle.FileHandle` sits on top and gives every
backend the same semantics: short transfers retried or reported, errors as
:class:`~uringstack.errors.UringIOError` with errno, operation and file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from uringstack.errors import BatchInFlightError
from uringstack.ring.arguments import check_offsets, nbytes
from uringstack.ring.buffers import RegisteredBuffer, check_alignment, lease_view, pin_buffers, release_pins
from uringstack.ring.pending import Pending, check_awaitable

if TYPE_CHECKING:
    from uringstack.ring import Ring

SyncMethod = Literal["dsync", "fdatasync"]
"""How a durable write reaches stable storage (see :meth:`FileIO.start_write_durable`)."""

SYNC_METHODS: tuple[SyncMethod, ...] = ("dsync", "fdatasync")


class FileIO(Protocol):
    """One open target on one backend.

    ``buffers`` are objects supporting the writable buffer protocol (for
    reads) or any buffer (for writes), or
    :class:`~uringstack.ring.buffers.RegisteredBuffer` leases.  The backend must
    keep every buffer alive until its op completed.
    """

    backend: str
    path: str
    fd: int
    direct: bool
    block_size: int
    fixed_index: int | None

    def start_rw(self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False) -> Pending:
        """Start one batch of reads (or writes) at *offsets* into (from) *buffers*.

        ``wait=True`` is a hint that the caller waits for the batch right away:
        an io_uring backend then submits and waits in one syscall.  A waited
        buffered write that the kernel would only hand to a worker thread
        (io-wq on a file system without non-blocking buffered writes, see
        :func:`uringstack.probe.punts.buffered_write_punts`; the fallback's
        pool) is instead done by the calling thread, :func:`write_inline`,
        with the same results: that decision lives in the backend, so every
        caller (``write_from``, ``write_many``, prepared writes, ``FileIO``)
        gets it.  Unwaited batches always go to the ring or the pool."""
        ...

    def start_sync(self, datasync: bool, *, wait: bool = False) -> Pending:
        """Start an fsync (or fdatasync) of the whole file."""
        ...

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        """Start one write of *buffer* at *offset* that is durable once it completed.

        ``sync="dsync"``: one write that is itself durable (``RWF_DSYNC`` on
        io_uring and the fallback, FUA on an NVMe namespace); the results are
        ``[written]``.  ``sync="fdatasync"``: the write, then a flush ordered
        after it (``IOSQE_IO_LINK`` on io_uring: SQEs are unordered, an
        unlinked flush may run first); the results are ``[written, flush
        result]``, and a flush after a write that failed or came back short
        does not run and reports ``-ECANCELED``.  The backend submits the
        write once: completing a short write and checking the results is
        :meth:`uringstack.stack.handle.FileHandle.write_durable`'s job, the same for
        every backend.  The completion hook sees the op ``"write_durable"``.
        """
        ...

    def size(self) -> int:
        """Current size in bytes (file size, or device capacity)."""
        ...

    def close(self) -> None:
        """Release the target; in-flight ops complete first."""
        ...


@runtime_checkable
class RingFileIO(FileIO, Protocol):
    """A :class:`FileIO` whose ops go to one io_uring ring (the core's backend, IOPOLL, NVMe passthrough).

    The ``ring`` attribute is optional for a backend: one without it (the
    fallback's thread pool) is a plain :class:`FileIO`, and its handle's
    ``ring`` is ``None``.
    """

    ring: Ring


def check_awaitable_io(io: FileIO) -> None:
    """Refuse (``RuntimeError``), before anything starts, an asyncio call on *io* whose
    await the running event loop could not make: see
    :func:`~uringstack.ring.pending.check_awaitable`.  The rings are ``io.ring`` and, where a
    backend has one, ``io.storage`` (IOPOLL's flushes go to the storage ring); a backend
    without a ring (the fallback's pool) serves any loop."""
    ring = getattr(io, "ring", None)
    if ring is not None:
        check_awaitable(ring)
    storage = getattr(io, "storage", None)
    if storage is not None:
        check_awaitable(storage)


class PreparedRW(Protocol):
    """Reads (or writes) of a fixed set of buffers, prepared once and started at new offsets.

    What :meth:`FileIO.prepare_rw` returns.  ``start(offsets)`` starts one
    batch: op *i* moves ``buffers[i]`` at ``offsets[i]`` (exactly ``n``
    offsets).  Results are unchecked, as from :meth:`FileIO.start_rw`; the
    handle checks them the same way.  A prepared object whose last batch is
    still in flight refuses to start another
    (:class:`~uringstack.errors.BatchInFlightError`): its buffers are the
    kernel's until then.
    """

    n: int
    write: bool

    def start(self, offsets: Sequence[int], *, wait: bool = False) -> Pending:
        """Start the batch at *offsets* (``wait=True``: the caller waits right away)."""
        ...

    def close(self) -> None:
        """Drop what was prepared (pins, columns); the object cannot start again."""
        ...


@runtime_checkable
class PreparesRW(Protocol):
    """The optional fast path of a backend: :meth:`prepare_rw` reusing what does not change per call."""

    def prepare_rw(self, write: bool, buffers: Sequence[Any]) -> PreparedRW:
        """Pin *buffers*, check what can be checked once, and return the object that starts batches on them."""
        ...


class RestartingPrepared:
    """The generic :class:`PreparedRW` every backend gets: ``start_rw`` on each start.

    Correct on any backend (the fallback thread pool, IOPOLL, NVMe
    passthrough): each start runs the backend's own checks and submission;
    only the in-flight rule is added here.
    """

    def __init__(self, io: FileIO, write: bool, buffers: Sequence[Any]) -> None:
        self.io = io
        self.write = write
        self.buffers = tuple(buffers)
        self.n = len(self.buffers)
        # What the io_uring backend's prepare refuses, refused here too, at prepare and not
        # at the first run: a read into bytes, a non-contiguous view, O_DIRECT misalignment
        pins, addrs, lens = pin_buffers(self.buffers, writable=not write)
        release_pins(pins)  # (only checked here: each start pins again)
        if io.direct:
            for addr, length in zip(addrs, lens, strict=True):
                if (addr | length) % io.block_size:
                    check_alignment("write" if write else "read", io.path, addr, length, 0, io.block_size)
        self._last: Pending | None = None
        self._closed = False

    def start(self, offsets: Sequence[int], *, wait: bool = False) -> Pending:
        if self._closed:
            raise ValueError(f"{self.io.path}: this prepared I/O was closed")
        if self._last is not None and not self._last.done():
            raise BatchInFlightError(
                f"{self.io.path}: the prepared {'writes' if self.write else 'reads'} are still in flight "
                f"({self.n} op(s)); wait for them before starting again"
            )
        if len(offsets) != self.n:
            raise ValueError(f"{self.io.path}: {len(offsets)} offsets for {self.n} prepared buffers")
        offsets = check_offsets(self.io.path, offsets)  # (the handle's read_many check)
        self._last = pending = self.io.start_rw(self.write, offsets, self.buffers, wait=wait)
        return pending

    def close(self) -> None:
        self._closed = True
        self.buffers = ()


class DoneBatch:
    """A batch a backend finished in the calling thread, as the completion hook reads it (``Batch.results``)."""

    __slots__ = ("results",)

    def __init__(self, results: list[int]) -> None:
        self.results = results


def _write_view(buf: Any) -> memoryview:
    """*buf* as ``pwrite(2)`` takes it: ``TypeError`` for what is no buffer, ``BufferError`` for a
    buffer that is not C-contiguous (``os.pwrite``'s own errors for them)."""
    view = memoryview(buf)
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view


def write_inline(fd: int, offsets: Sequence[int], buffers: Sequence[Any]) -> list[int]:
    """Waited writes done by this thread with ``pwrite(2)``: per op the bytes written, or ``-errno``.

    What a backend does instead of handing a waited buffered write to a
    worker thread: the caller blocks until the data is in the page cache
    either way, so the hand-off would add only a context switch and a worker
    (measured, copyfileobj of 256 MiB, ext4: 0.55 s CPU through io-wq, 0.32 s
    with ``pwrite``).  The results are what a ring reports: a write cut short
    is continued here until complete; an error after part of an op was
    written reports that part (the handle continues a short write, and its
    retry reports the error at the offset where it happened, as after a
    short ring write); an offset the kernel cannot take is ``-EINVAL``.
    """
    datas: list[Any] = [lease_view(buf) if isinstance(buf, RegisteredBuffer) else buf for buf in buffers]
    if len(datas) > 1:
        # Every buffer taken before the first write: one that is none (None, a str) or not
        # contiguous raised at its turn, after the ops before it were written, while the caller
        # was told the batch failed (a batch is refused whole, as its offsets are).  A single
        # op (every uringstack.FileIO write) has nothing before it: pwrite's own check serves.
        datas = [_write_view(data) for data in datas]
    results: list[int] = []
    for offset, data in zip(offsets, datas, strict=True):
        done = 0
        try:
            done = os.pwrite(fd, data, offset)
            total = nbytes(data)
            if 0 < done < total:
                view = memoryview(data).cast("B")
                while done < total:
                    wrote = os.pwrite(fd, view[done:], offset + done)
                    if wrote <= 0:
                        break  # reported short: the handle's retry raises ShortIOError
                    done += wrote
        except OSError as exc:
            if not done:
                done = -(exc.errno or errno.EIO)
        except OverflowError:  # an offset past what loff_t holds
            done = -errno.EINVAL
        results.append(done)
    return results


def prepare_rw(io: FileIO, write: bool, buffers: Sequence[Any]) -> PreparedRW:
    """*io*'s own :meth:`PreparesRW.prepare_rw` when it has one, else :class:`RestartingPrepared`."""
    if isinstance(io, PreparesRW):
        return io.prepare_rw(write, buffers)
    return RestartingPrepared(io, write, buffers)
