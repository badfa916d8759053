"""The core's io_uring backend: a target served by a worker's storage ring.

Used for every target no plugin claims (``uringstack_select_backend``).  One
call turns a whole batch into parallel C arrays and one submission; reads and
writes on registered-buffer leases of the same ring become
READ_FIXED/WRITE_FIXED, and a handle with a fixed-file slot is addressed by
slot with IOSQE_FIXED_FILE.

A single waited read or write (the handle's ``read_into``/``write_from``,
so every ``uringstack.FileIO`` call) takes :meth:`UringFileIO.run_one`: one
call into C (:meth:`~uringstack.ring.Ring.rw_one`) instead of a batch.
``uringstack.FileIO.readinto`` on a buffered file reads at the descriptor's
file position (offset -1): :meth:`UringFileIO.read_cached`, the page-cache
part copied by the calling thread (``preadv2(RWF_NOWAIT)``, the caller's
buffer not pinned), then :meth:`UringFileIO.read_here`, the rest (or all of
it) through the ring.

A *waited* buffered write (``write_from``, ``write_many``, a prepared
write's ``run``) to a file on a file system where the kernel would punt it
to an io-wq worker (:func:`~uringstack.probe.punts.buffered_write_punts`:
ext4 and tmpfs here) is done by the calling thread with ``pwrite``
(:func:`~uringstack.ring.io_backend.write_inline`): through the ring it costs
the same copy plus a hand-off to the worker and back.  Unwaited writes
(``start_write_many``, asyncio) still go to the ring: there the worker is
what lets the caller go on.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from operator import or_
from typing import TYPE_CHECKING, Any

from uringstack.errors import BatchInFlightError, RingClosedError
from uringstack.plan import CORE_BACKEND, CORE_BACKEND_REASON
from uringstack.probe.punts import buffered_write_punts
from uringstack.ring import MisalignedOffsetError, Ring
from uringstack.ring.arguments import OFFSET_LIMIT, check_offsets
from uringstack.ring.buffers import (
    RegisteredBuffer,
    address_of,
    check_alignment,
    fixed_slots,
    pin_buffers,
    pins_released_on_error,
    put_opcodes,
)
from uringstack.ring.columns import BatchColumns
from uringstack.ring.flags import FSYNC_DATASYNC, Op, SqeFlag
from uringstack.ring.interrupts import despite_signals
from uringstack.ring.io_backend import DoneBatch, SyncMethod, write_inline
from uringstack.ring.native import ffi
from uringstack.ring.opnames import FEAT_RW_CUR_POS
from uringstack.ring.pending import CompletedPending, Pending, UringPending
from uringstack.ring.pins import pin_buffer

if TYPE_CHECKING:
    from uringstack.types import Target, WorkerView


# Linux moves at most MAX_RW_COUNT (INT_MAX rounded down to a page) bytes per
# read or write and returns a short count for the rest, as pread/pwrite do;
# an SQE's length is a u32.  Longer buffers are submitted with this length, and
# the handle completes the short transfer like any other (page aligned, so
# O_DIRECT stays aligned).
MAX_RW_COUNT = 0x7FFFF000

# RWF_DSYNC from linux/fs.h: the write is durable when it completes (FUA, or write + flush).
RWF_DSYNC = 0x2

# Plain ints for the single-op path (an enum member costs an attribute lookup per op).
_READ, _WRITE, _FIXED_FILE = int(Op.READ), int(Op.WRITE), int(SqeFlag.FIXED_FILE)

# A read's offset -1 (the SQE field is a u64): "at the file position", which the kernel
# uses and advances as read(2) does (regular files and block devices, Linux 5.6+).
AT_FILE_POSITION = (1 << 64) - 1
# preadv2(RWF_NOWAIT) failures that say "not here" rather than "this read failed"
_NO_CACHED_READS = frozenset((errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL))
_RWF_NOWAIT = os.RWF_NOWAIT  # (a module global: one lookup per cached read instead of two)

# Column sets kept per capacity (a power of two up to this) for start_rw, and
# how many idle ones each capacity keeps: a batch reuses a finished set
# instead of allocating eight C arrays.
_CACHED_CAPACITY = 1024
_CACHED_PER_CAPACITY = 16


class UringFileIO:
    """A file or block device served by a plain io_uring ring."""

    backend = "uring"
    pending_type: type[UringPending] = UringPending
    """What :meth:`start_rw` and prepared starts return: a subclass may reap differently (IOPOLL)."""

    def __init__(self, ring: Ring, fd: int, target: Target, block_size: int, worker: WorkerView | None = None) -> None:
        self.ring = ring
        self.fd = fd
        self.path = target.path
        self.direct = target.direct
        self.block_size = block_size
        self.fixed_index: int | None = None
        self.worker = worker
        self.completion_hook = worker.completion_hook if worker is not None else None
        self._cache: dict[int, deque[BatchColumns]] = {}
        self.closed = False
        """True once :meth:`close` ran: every start refuses (the descriptor number may be another file's)."""
        self._durable: dict[str, deque[_DurableColumns]] = {"dsync": deque(), "fdatasync": deque()}
        # Whether waited buffered writes are done inline (see the module docstring):
        # looked up at the first one, so a file only read never measures anything.
        self._inline_writes: bool | None = None
        # Whether the kernel reads at the file position (offset -1): its IORING_FEAT_RW_CUR_POS,
        # reported when the ring was set up (never under O_DIRECT: the caller aligns offsets).
        self._reads_here = bool(ring.features & FEAT_RW_CUR_POS) and not target.direct
        # Whether read_cached copies what the page cache holds in the caller (preadv2
        # RWF_NOWAIT) before read_here; off for good once the file system refuses it (EOPNOTSUPP).
        self._reads_cached_inline = self._reads_here

    def _fd_and_flags(self) -> tuple[int, int]:
        # Every submission gets its fd here: after close() the number may belong
        # to a file opened since, so a raw FileIO refuses like the handle does.
        if self.closed:
            raise RingClosedError(f"{self.path} is closed")
        if self.fixed_index is not None:
            return self.fixed_index, int(SqeFlag.FIXED_FILE)
        return self.fd, 0

    def _columns(self, n: int) -> tuple[BatchColumns, deque[BatchColumns] | None]:
        """Idle columns for *n* ops (the oldest cached set if its batch finished, else new ones)."""
        if n > _CACHED_CAPACITY:
            return BatchColumns(n), None
        cap = 1 << (n - 1).bit_length()
        cache = self._cache.get(cap)
        if cache is None:
            cache = self._cache[cap] = deque()
        if cache:
            # popleft is atomic: two threads never get the same set
            cols = cache.popleft()
            if cols.batch is None or cols.batch.finished:
                return cols, cache
            cache.appendleft(cols)  # the oldest is still in flight: so are the others
        return BatchColumns(cap), cache

    def start_rw(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False
    ) -> UringPending | CompletedPending:
        if write and wait and self.writes_inline():
            if len(offsets) != len(buffers):
                raise ValueError(f"{len(offsets)} offsets but {len(buffers)} buffers")
            return self.write_inline(offsets, buffers)
        return self.submit_rw(write, offsets, buffers, wait=wait)

    def submit_rw(
        self, write: bool, offsets: Sequence[int], buffers: Sequence[Any], *, wait: bool = False
    ) -> UringPending:
        """:meth:`start_rw` always through the ring (never inline)."""
        n = len(offsets)
        if n != len(buffers):
            raise ValueError(f"{n} offsets but {len(buffers)} buffers")
        plain, fixed = (Op.WRITE, Op.WRITE_FIXED) if write else (Op.READ, Op.READ_FIXED)
        keep, addrs, lens = pin_buffers(buffers, writable=not write)
        if n and max(lens) > MAX_RW_COUNT:
            if self.direct:  # the rest is submitted later: check the whole length now
                with pins_released_on_error(keep):
                    for i, length in enumerate(lens):
                        check_alignment(
                            "write" if write else "read", self.path, addrs[i], length, offsets[i], self.block_size
                        )
            lens = [min(length, MAX_RW_COUNT) for length in lens]
        leases = [b for b in buffers if isinstance(b, RegisteredBuffer)]
        cols, cache = self._columns(n)
        cols.n = n
        if leases:
            # leases registered with this very ring become READ_FIXED/WRITE_FIXED (O_DIRECT)
            put_opcodes(cols, fixed_slots(buffers, self.ring), plain, fixed, self.direct)
        else:
            cols.fill("opcodes", plain)
        fd, sqe_flags = self._fd_and_flags()
        cols.fill("fds", fd)
        if sqe_flags or cols.is_set("sqe_flags"):
            cols.fill("sqe_flags", sqe_flags)
        cols.set("addrs", addrs)
        cols.set("lens", lens)
        cols.set("offs", offsets)
        if self.direct:
            # A loop in the interpreter, not a call into the binding: each such call
            # releases the GIL, a hand-off when another worker thread waits for it.
            mask = self.block_size - 1
            if any(map(mask.__and__, map(or_, map(or_, addrs, lens), offsets))):
                bad = next(i for i in range(n) if (addrs[i] | lens[i] | offsets[i]) & mask)
                with pins_released_on_error(keep):
                    check_alignment(
                        "write" if write else "read", self.path, addrs[bad], lens[bad], offsets[bad], self.block_size
                    )
        batch = self.ring.submit_columns(cols, n, keep, wait=wait)
        if cache is not None and len(cache) < _CACHED_PER_CAPACITY:
            cache.append(cols)
        for lease in leases:
            (lease.parent or lease).batch = batch
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("write" if write else "read", self.ring))
        return self.pending_type(self.ring, batch)

    def run_one(self, write: bool, pin: Any, buf: Any, offset: int) -> int | None:
        """One waited read or write (the handle's ``read_into``/``write_from``): its result, bytes or ``-errno``.

        *pin* is ``ffi.from_buffer`` of *buf* (a plain buffer, not a lease),
        *offset* an int in ``0 .. 2**63``.  A read, or a write the kernel
        would not punt, goes through the ring in one call into C
        (:meth:`~uringstack.ring.Ring.rw_one`: prepare, submit, bounded wait and
        reap); a write it would punt is done inline (:meth:`writes_inline`).
        ``None``: not one plain op (longer than one SQE moves, or O_DIRECT
        misaligned): the caller takes :meth:`start_rw`, which splits or
        reports it.  On an IOPOLL ring ``rw_one`` polls for the op in C, with
        the same bounds (``us_rw_one``)."""
        length = len(pin)
        if length > MAX_RW_COUNT:
            return None
        if write and not self.direct and self.writes_inline():
            return self._write_one_inline(buf, offset)
        if self.direct and (address_of(pin) | length | offset) % self.block_size:
            return None
        if self.closed:  # the number may be another file's by now
            raise RingClosedError(f"{self.path} is closed")
        fixed = self.fixed_index
        ring = self.ring
        if fixed is None:
            res = ring.rw_one(_WRITE if write else _READ, self.fd, pin, length, offset, 0, 0, pin)
        else:
            res = ring.rw_one(_WRITE if write else _READ, fixed, pin, length, offset, _FIXED_FILE, 0, pin)
        if self.completion_hook is not None:
            self.completion_hook("write" if write else "read", ring)(DoneBatch([res]))
        return res

    def read_cached(self, buf: Any, want: int, offset: int = -1) -> int | None:
        """The first step of a read of *want* bytes (*buf*'s length) at *offset*, by default
        the descriptor's file position: what the page cache holds of it, copied by the
        calling thread (``preadv2(RWF_NOWAIT)``; at offset -1 it moves the position past
        it, as read(2) does).  Bytes copied (fewer than *want* where the page cache held only
        the first part: :meth:`read_here` reads the rest), or ``-errno``; ``None`` when
        none of it is cached, or where this file's reads are not copied
        here (not :meth:`read_here`'s, or the file system or a filter refused
        ``RWF_NOWAIT``/``preadv2``, remembered): :meth:`read_here` then reads it all.

        With an *offset* >= 0 it is the first step of an asyncio read
        (``Coalescer.reader``): ``RWF_NOWAIT`` never waits for the device, so the
        loop's thread may take it; what is not all cached goes to the ring.

        *buf* is not pinned (``preadv`` takes its buffer itself; the handle pins it
        only for the ring).  A cached read through the ring is the same copy, done by
        the kernel inside ``io_uring_enter``, plus the SQE, the CQE and their
        bookkeeping: ~1.6 µs more per read.  As :meth:`write_inline`: the ring's
        checks are kept (a closed ring, a fork child, another thread on a
        SINGLE_ISSUER ring raise as the ring would) and the completion hook is told,
        with ``ring=None``."""
        if not self._reads_cached_inline:
            return None
        if self.closed:  # the number may be another file's by now
            raise RingClosedError(f"{self.path} is closed")
        self.ring._check_use()
        try:
            res = os.preadv(self.fd, (buf,), offset, _RWF_NOWAIT)
        except BlockingIOError:
            return None  # nothing of it cached: the ring reads it (its waits are bounded and checked)
        except OSError as e:
            if e.errno not in _NO_CACHED_READS:
                res = -(e.errno or errno.EIO)
            else:
                # RWF_NOWAIT refused (a file system without FMODE_NOWAIT), or preadv2
                # itself (a seccomp filter): the ring reads this file from now on, and
                # reports any error of its own
                self._reads_cached_inline = False
                return None
        if self.completion_hook is not None:
            self.completion_hook("read", None)(DoneBatch([res]))
        return res

    def read_here(self, pin: Any, buf: Any, got: int = 0) -> int | None:
        """:meth:`run_one`'s read, at the descriptor's file position: bytes read (the
        position moved past them, as by read(2)) or ``-errno``; ``None`` where the
        kernel cannot (the caller reads at a position it looked up).

        *got*: bytes :meth:`read_cached` already copied into *buf* (pinned as *pin*)
        for this read; the ring reads the rest (``RWF_NOWAIT`` stops at the first
        page not cached, where read(2) would wait for it: callers of a regular file
        take a short read for its end) and the result counts both.

        io_uring reads at offset -1 use and advance the file position since
        Linux 5.6, which the ring's ``IORING_FEAT_RW_CUR_POS`` reports (earlier
        kernels fail them with EINVAL).  Not under O_DIRECT (the caller aligns
        its offsets itself).  Addressed by descriptor number even where the file
        has a registered slot, as read(2) is: a descriptor closed behind this
        object's back fails with EBADF, as with the built-in ``open()``."""
        if not self._reads_here:
            return None
        if self.closed:  # the number may be another file's by now
            raise RingClosedError(f"{self.path} is closed")
        ring = self.ring
        want = len(pin)
        if want > MAX_RW_COUNT:  # (not min(): a builtin call with its argument parsing, per read)
            want = MAX_RW_COUNT
        if got:
            return got if got >= want else self._read_rest(ring, pin, got, want)
        res = ring.rw_one(_READ, self.fd, pin, want, AT_FILE_POSITION, 0, 0, pin)
        if self.completion_hook is not None:
            self.completion_hook("read", ring)(DoneBatch([res]))
        return res

    def _read_rest(self, ring: Ring, pin: Any, got: int, want: int) -> int:
        """After a cached read of *got* of *want* bytes: the rest through the ring, at the
        file position (which the cached part moved).  Bytes read in all; an error of the
        rest is left to the next call, as read(2) reports bytes it read before one."""
        more = ring.rw_one(_READ, self.fd, ffi.cast("char *", pin) + got, want - got, AT_FILE_POSITION, 0, 0, pin)
        if self.completion_hook is not None:
            self.completion_hook("read", ring)(DoneBatch([more]))
        return got + more if more > 0 else got

    def outlived_op(self, keep: object) -> UringPending | None:
        """The pending of a :meth:`~uringstack.ring.Ring.rw_one` op (called with *keep*) that is
        still in flight although its call raised (its wait timed out or was interrupted),
        or None: the caller tracks it so nothing reuses the buffer or closes the descriptor
        under it."""
        batch = self.ring.batch_holding(keep)
        return None if batch is None else self.pending_type(self.ring, batch)

    def writes_inline(self) -> bool:
        """True when this file's waited writes are done by the caller (buffered, and the kernel would punt them)."""
        inline = self._inline_writes
        if inline is None:
            self._fd_and_flags()  # a closed file's number may be another file's by now
            inline = self._inline_writes = not self.direct and buffered_write_punts(self.fd)
        return inline

    def write_inline(self, offsets: Sequence[int], buffers: Sequence[Any]) -> CompletedPending:
        """Do a waited batch of writes in this thread (:func:`~uringstack.ring.io_backend.write_inline`).

        Keeps what a submission checks (file closed, ring closed or forked, a
        SINGLE_ISSUER ring used from another thread) and tells the completion
        hook, with ``ring=None``: no ring ran the batch."""
        if self.closed:  # the number may be another file's by now
            raise RingClosedError(f"{self.path} is closed")
        ring = self.ring
        ring._check_open()
        ring._check_thread()
        results = write_inline(self.fd, offsets, buffers)
        if self.completion_hook is not None:
            self.completion_hook("write", None)(DoneBatch(results))
        return CompletedPending(results)

    def _write_one_inline(self, buf: Any, offset: int) -> int:
        """:meth:`write_inline` of one write, without its pending object: bytes written or ``-errno``."""
        if self.closed:  # the number may be another file's by now
            raise RingClosedError(f"{self.path} is closed")
        ring = self.ring
        ring._check_open()
        ring._check_thread()
        res = write_inline(self.fd, (offset,), (buf,))[0]
        if self.completion_hook is not None:
            self.completion_hook("write", None)(DoneBatch([res]))
        return res

    def prepare_rw(self, write: bool, buffers: Sequence[Any]) -> UringPrepared:
        """Pin *buffers* and build their columns once; see :class:`UringPrepared`."""
        return UringPrepared(self, write, buffers)

    def start_sync(self, datasync: bool, *, wait: bool = False) -> UringPending:
        fd, sqe_flags = self._fd_and_flags()
        batch = self.ring.submit(
            Op.FSYNC, fd, n=1, op_flags=FSYNC_DATASYNC if datasync else 0, sqe_flags=sqe_flags or None, wait=wait
        )
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("fdatasync" if datasync else "fsync", self.ring))
        return UringPending(self.ring, batch)

    def _durable_columns(self, sync: SyncMethod) -> _DurableColumns:
        """Idle prepared columns for one durable write (the oldest cached set if its batch finished)."""
        cache = self._durable[sync]
        if cache:
            # popleft is atomic: two threads never get the same set
            dc = cache.popleft()
            batch = dc.cols.batch
            if batch is None or batch.finished:
                if dc.fixed_index != self.fixed_index:
                    dc.fill_fd(self)
                return dc
            cache.appendleft(dc)  # the oldest is still in flight: so are the others
        return _DurableColumns(self, sync)

    def start_write_durable(self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False) -> Pending:
        # The hot path of every log flush: columns built once per sync method and
        # reused (only address, length and offset change), one pin.
        if self.closed:  # the cached columns hold the fd number, which may be another file's now
            raise RingClosedError(f"{self.path} is closed")
        if offset < 0:
            raise ValueError(f"{self.path}: offset {offset} is negative")
        pin = pin_buffer(buffer)
        addr, length = int(ffi.cast("uintptr_t", pin)), len(pin)
        if self.direct and (addr | length | offset) % self.block_size:
            check_alignment("write", self.path, addr, length, offset, self.block_size, (pin,))
        if length > MAX_RW_COUNT:
            length = MAX_RW_COUNT
        dc = self._durable_columns(sync)
        dc.addrs[0], dc.lens[0], dc.offs[0] = addr, length, offset
        # the pin holds *buffer* (cffi keeps the exporter alive) until the batch is reaped
        batch = self.ring.submit_columns(dc.cols, dc.cols.n, pin, wait=wait)
        cache = self._durable[sync]
        if len(cache) < _CACHED_PER_CAPACITY:
            cache.append(dc)
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("write_durable", self.ring))
        return UringPending(self.ring, batch)

    def size(self) -> int:
        return _fd_size(self.fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        os.close(self.fd)


class _DurableColumns:
    """The columns of one durable write, filled once: per write only address, length and offset change.

    ``dsync``: one WRITE with ``RWF_DSYNC``.  ``fdatasync``: a WRITE and an
    FSYNC(DATASYNC); io_uring does not order SQEs, so the write carries
    ``IOSQE_IO_LINK``: the flush starts only after the write completed (and
    is cancelled if the write failed or came back short).
    """

    __slots__ = ("addrs", "cols", "fixed_index", "lens", "offs", "sync")

    def __init__(self, io: UringFileIO, sync: SyncMethod) -> None:
        n = 1 if sync == "dsync" else 2
        cols = BatchColumns(n)
        self.cols = cols
        self.sync = sync
        if sync == "dsync":
            cols.set("opcodes", [Op.WRITE])
            cols.set("op_flags", [RWF_DSYNC])
        else:
            cols.set("opcodes", [Op.WRITE, Op.FSYNC])
            cols.set("op_flags", [0, FSYNC_DATASYNC])
        self.addrs = cols.column("addrs")
        self.lens = cols.column("lens")
        self.offs = cols.column("offs")
        self.fixed_index: int | None = None
        self.fill_fd(io)

    def fill_fd(self, io: UringFileIO) -> None:
        """Address the file by fd, or by its fixed-file slot (which may change after the columns were built)."""
        fd, fixed = io._fd_and_flags()
        self.cols.fill("fds", fd)
        if self.sync == "dsync":
            self.cols.set("sqe_flags", [fixed])
        else:
            self.cols.set("sqe_flags", [int(SqeFlag.IO_LINK) | fixed, fixed])
        self.fixed_index = io.fixed_index


class UringPrepared:
    """Prepared reads (or writes) of fixed buffers on a uring handle: per start only the offsets change.

    Built once: the buffers' pins, addresses and lengths, the opcodes
    (READ_FIXED/WRITE_FIXED for leases registered with this ring, with their
    buffer indexes), the fd column and, for O_DIRECT, the alignment of every
    address and length.  Each :meth:`start` writes the offsets column, checks
    the offsets' alignment in C when O_DIRECT and submits the same columns.
    """

    def __init__(self, io: UringFileIO, write: bool, buffers: Sequence[Any]) -> None:
        n = len(buffers)
        if n == 0:
            raise ValueError(f"{io.path}: nothing to prepare (no buffers)")
        self.io = io
        self.write = write
        self.n = n
        self.op = "write" if write else "read"
        self.ring = io.ring
        pins, addrs, lens = pin_buffers(buffers, writable=not write)
        if io.direct:  # the whole length, also of buffers longer than one SQE moves
            with pins_released_on_error(pins):
                for addr, length in zip(addrs, lens, strict=True):
                    check_alignment(self.op, io.path, addr, length, 0, io.block_size)
        lens = [min(length, MAX_RW_COUNT) for length in lens]
        plain, fixed = (Op.WRITE, Op.WRITE_FIXED) if write else (Op.READ, Op.READ_FIXED)
        slots = fixed_slots(buffers, io.ring)
        cols = BatchColumns(n)
        put_opcodes(cols, slots, plain, fixed, io.direct)
        cols.set("addrs", addrs)
        cols.set("lens", lens)
        self._offs = cols.column("offs")
        self._cols = cols
        self._keep = (pins, tuple(buffers))
        self._addrs = addrs
        self._misaligned = (io.block_size - 1).__and__  # off -> its bytes past a block boundary
        self._offset_align = io.block_size if io.direct else 0  # what the ring checks each start's offsets against
        self._fixed: object = object()  # the fd columns are filled on the first start
        self._fd = self._sqe_flags = 0
        self._closed = False
        # One buffer waited at once (QD1): one call into C (Ring.rw_one: prepare, submit,
        # wait and reap), without a Batch, a result array or a pending object per op
        # (on an IOPOLL ring the call polls for the op: us_rw_one).
        self._one: tuple[int, Any, int, int] | None = None
        self._one_busy = threading.Lock()
        # Ring.rw_one with everything but the offset bound (built with the fd columns)
        self._bound: Callable[[int], int] | None = None
        self._bound_keep: object = None
        self._outlived: UringPending | None = None  # see outlived()
        # one AND finds a negative, too large (>= 2**63: a negative loff_t) or, when O_DIRECT, misaligned offset
        self._bad_offset = -OFFSET_LIMIT | ((io.block_size - 1) if io.direct else 0)
        if n == 1:
            # the column's opcode (put_opcodes' rule): waited alone, the op moves as in a batch
            opcode = cols.get("opcodes")[0]
            self._one = (opcode, ffi.cast("char *", addrs[0]), lens[0], max(slots[0], 0) if opcode == fixed else 0)
        # A pool must not lease these buffers out again while a batch of ours is in
        # flight: their in_flight() asks this object (see :attr:`finished`).
        for buf in buffers:
            if isinstance(buf, RegisteredBuffer):
                (buf.parent or buf).batch = self

    @property
    def finished(self) -> bool:
        """True unless a batch started from this object is in flight."""
        if self._one_busy.locked():  # a single waited op is in its call
            return False
        batch = self._cols.batch
        return batch is None or batch.finished

    def _fill_fd(self) -> None:
        fd, sqe_flags = self.io._fd_and_flags()
        self._fd, self._sqe_flags = fd, sqe_flags
        self._cols.fill("fds", fd)
        if sqe_flags or self._cols.is_set("sqe_flags"):
            self._cols.fill("sqe_flags", sqe_flags)
        self._fixed = self.io.fixed_index
        one = self._one
        if one is not None:
            opcode, ptr, length, index = one
            self._bound_keep = self._keep  # what the bound op's Batch holds if it outlives a call
            self._bound = self.ring.bind_rw_one(opcode, fd, ptr, length, sqe_flags, index, self._keep)

    def start(self, offsets: Sequence[int], *, wait: bool = False) -> Pending:
        if wait and self._one is not None and len(offsets) == 1:
            done = self._run_one(offsets[0])
            if done is not None:
                return done
        cols = self._cols
        io = self.io
        if self._closed:
            raise ValueError(f"{io.path}: this prepared I/O was closed")
        if io.closed:  # its fd column holds a number that may be another file's by now
            raise RingClosedError(f"{io.path} is closed")
        last = cols.batch
        # (a single op in its call: only a prepared object of one buffer has that path)
        if (last is not None and not last.finished) or (self._one is not None and self._one_busy.locked()):
            raise self._in_flight()
        n = self.n
        if len(offsets) != n:
            raise ValueError(f"{io.path}: {len(offsets)} offsets for {n} prepared buffers")
        if io.fixed_index is not self._fixed:
            self._fill_fd()
        try:
            self._offs[0:n] = offsets
        except (OverflowError, TypeError):
            offsets = check_offsets(io.path, offsets)  # raises what is wrong, or makes ints of index objects
            self._offs[0:n] = offsets
        if (offsets[0] if n == 1 else max(offsets)) >= OFFSET_LIMIT:
            check_offsets(io.path, offsets)  # (a u64 the kernel reads as a negative loff_t)
        if wait and self.write and io.writes_inline():
            return io.write_inline(offsets, self._keep[1])
        if self._one is not None:
            # one buffer: its offset's alignment here, so a refused op reaches no ring
            if self._offset_align and self._misaligned(offsets[0]):
                self._refuse_misaligned(offsets)
            if wait:  # (the first call: after the fd columns were filled)
                done = self._run_one(offsets[0])
                if done is not None:
                    return done
        ring = self.ring
        try:
            # O_DIRECT: the offsets' alignment is checked by the submitting call into C,
            # before anything is queued (one loop in C instead of a Python call per offset)
            batch = ring.submit_columns(cols, n, self._keep, wait=wait, offset_align=self._offset_align)
        except MisalignedOffsetError:
            self._refuse_misaligned(offsets)
            raise
        if io.completion_hook is not None:
            batch.add_done_callback(io.completion_hook(self.op, ring))
        return io.pending_type(ring, batch)

    def _refuse_misaligned(self, offsets: Sequence[int]) -> None:
        """Raise the :class:`~uringstack.errors.AlignmentError` naming the first offset of
        *offsets* that is not a multiple of the logical block size (O_DIRECT)."""
        bad = next(i for i, off in enumerate(offsets) if self._misaligned(off))
        io = self.io
        check_alignment(self.op, io.path, self._addrs[bad], 0, offsets[bad], io.block_size)

    def _in_flight(self) -> BatchInFlightError:
        return BatchInFlightError(
            f"{self.io.path}: the prepared {self.op}s are still in flight ({self.n} op(s)); "
            "wait for them before starting again"
        )

    def run_one(self, offset: int) -> int | None:
        """The waited op of a single prepared buffer at *offset*, in one call into C
        (:meth:`~uringstack.ring.Ring.bind_rw_one`): its result (bytes or ``-errno``),
        or None: not one plain op now (first call, closed, in flight, a bad or
        misaligned offset, an inline write): take :meth:`start`, which does it or
        raises.  If the call raises while the op stays in flight (a hung device),
        :meth:`outlived` is its pending: the caller tracks it."""
        one = self._bound
        io = self.io
        # Every refusal (closed, in flight, a bad or misaligned offset, an inline write) is
        # left to start(), which raises it with its message.
        if one is None or self._closed or io.closed or io.fixed_index is not self._fixed:
            return None
        last = self._cols.batch
        if (last is not None and not last.finished) or type(offset) is not int or offset & self._bad_offset:
            return None
        if self.write and io.writes_inline():
            return None
        # No Batch marks the op in flight during the call: this lock does (another
        # thread's start is refused, :attr:`finished` is false).
        busy = self._one_busy
        if not busy.acquire(False):
            raise self._in_flight()
        try:
            res = one(offset)
        except BaseException:
            # The op outlived the call (a hung device, a lost completion): it is in flight
            # in a Batch holding the pins.  Track it as a started batch would be (no
            # restart on these buffers; the caller lets the handle's close wait for it).
            # a second raising signal must not cut it short: the first run inside try (a signal
            # at its entry is caught), then retries
            try:
                self._track_outlived()
            except BaseException:
                despite_signals(self._track_outlived)
            raise
        finally:
            busy.release()
        hook = io.completion_hook
        if hook is not None:
            hook(self.op, self.ring)(DoneBatch([res]))
        return res

    def _track_outlived(self) -> None:
        """:meth:`run_one` raised: if its op is still in flight, track it as a started batch
        (its pins held, :meth:`outlived` its pending).  Safe to repeat (despite_signals)."""
        pending = self.io.outlived_op(self._bound_keep)
        if pending is not None:
            self._cols.batch = pending.batch
            self._outlived = pending

    def outlived(self) -> UringPending | None:
        """After :meth:`run_one` raised: the pending of its op if that outlived the call
        (still in flight), else None.  Set only under the single-op lock and only while no
        batch of this object is in flight, so another thread's call cannot replace it."""
        pending = self._outlived
        return None if pending is None or pending.batch is not self._cols.batch or pending.done() else pending

    def _run_one(self, offset: int) -> Pending | None:
        """:meth:`run_one` as a start's pending (raising from its wait if the op outlived
        the call), or None: take the batch path."""
        try:
            res = self.run_one(offset)
        except Exception as exc:
            pending = self.outlived()
            if pending is None:
                raise
            return _Failed(pending, exc)
        return None if res is None else CompletedPending([res])

    def close(self) -> None:
        """Forget the pins (the last batch, if still in flight, holds them until it completes)."""
        self._closed = True
        self._bound = None
        self._keep = ([], ())


class _Failed:
    """A waited op whose wait raised while the op stayed in flight: :meth:`done` follows the
    op, :meth:`wait` raises what the wait raised (the caller decides whether to wait again)."""

    def __init__(self, pending: UringPending, exc: Exception) -> None:
        self.pending = pending
        self.n = pending.n
        self.exc = exc

    def done(self) -> bool:
        return self.pending.done()

    def wait(self) -> list[int]:
        raise self.exc

    async def wait_async(self) -> list[int]:
        raise self.exc


def _fd_size(fd: int) -> int:
    st = os.fstat(fd)
    if st.st_size or not (st.st_mode & 0o060000):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)  # block devices report st_size 0


class UringBackend:
    """Factory: serves any file or block device on the worker's storage ring."""

    name = CORE_BACKEND

    def __init__(self, reason: str = CORE_BACKEND_REASON) -> None:
        self.reason = reason

    def open(self, target: Target, worker: WorkerView) -> UringFileIO:
        from uringstack.stack.targets import close_opened, logical_block_size, open_target

        fd = open_target(target)
        try:
            return UringFileIO(worker.rings["storage"], fd, target, logical_block_size(target, fd), worker)
        except BaseException:
            close_opened(target, fd)
            raise
