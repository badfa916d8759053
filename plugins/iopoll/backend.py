"""The iopoll backend: O_DIRECT reads and writes on the worker's IOPOLL ring.

Which ring carries what (the kernel's rule: an IOPOLL ring accepts only
pollable O_DIRECT reads and writes):

- reads and writes of a handle served here go to ``worker.rings["iopoll"]``;
- ``fsync``/``fdatasync`` go to ``worker.rings["storage"]``;
- ``start_write_durable(sync="fdatasync")`` submits the write on the IOPOLL
  ring and the flush on the storage ring *after the write's completion was
  reaped* (io_uring links do not cross rings, and only a completed write is
  ordered before a flush); ``sync="dsync"`` is one ``RWF_DSYNC`` write on the
  storage ring (the kernel turns it into FUA or write + flush, which is not
  a polled request; a durable write waits for the device's flush anyway);
- targets without O_DIRECT never come here (the plugin passes them on, so
  the core serves them on the storage ring).

Completions are reaped as :mod:`uringstack.ring.polling` explains
(blocking GETEVENTS waits, a poll pass for ``done()``, a poller task under
asyncio).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from uringstack.errors import UringIOError
from uringstack.ring import Batch, Ring
from uringstack.ring.buffers import RegisteredBuffer, check_alignment, pin_buffers, pins_released_on_error
from uringstack.ring.flags import FSYNC_DATASYNC, Op
from uringstack.ring.io_backend import SyncMethod
from uringstack.ring.pending import PolledPending, UringPending
from uringstack.stack.uring_backend import RWF_DSYNC, UringFileIO

if TYPE_CHECKING:
    from uringstack.stack import Worker
    from uringstack.types import Target

ROLE = "iopoll"


class IopollPending(PolledPending):
    """A batch in flight on an IOPOLL ring (:class:`~uringstack.ring.pending.PolledPending`,
    under the name this backend's users know)."""

    __slots__ = ()


class WriteThenSync:
    """``start_write_durable(sync="fdatasync")`` across two rings: the write polled, then a flush on the storage ring.

    The flush is submitted only once the write's completion has been reaped
    (by :meth:`wait`, :meth:`wait_async` or a :meth:`done` that saw it), and
    only if the write succeeded; a failed write reports ``-ECANCELED`` for the
    flush, as a broken io_uring link would.
    """

    __slots__ = ("_fd", "_hook", "_length", "_storage", "_sync", "_write", "n")

    def __init__(self, write: UringPending, storage: Ring, fd: int, length: int, hook: Any = None) -> None:
        self._write = write
        self._storage = storage
        self._fd = fd
        self._length = length
        self._hook = hook
        self._sync: Batch | None = None
        self.n = 2

    def _start_sync(self, written: int, wait: bool = False) -> Batch | None:
        # not after a failed or short write: as a broken io_uring link, the flush reports -ECANCELED
        if self._sync is None and written >= self._length:
            self._sync = self._storage.submit(Op.FSYNC, self._fd, n=1, op_flags=FSYNC_DATASYNC, wait=wait)
            if self._hook is not None:
                self._sync.add_done_callback(self._hook("fdatasync", self._storage))
        return self._sync

    def _results(self, written: int) -> list[int]:
        if self._sync is None:
            return [written, -errno.ECANCELED]
        return [written, self._sync.results[0]]

    def done(self) -> bool:
        if not self._write.done():
            return False
        sync = self._start_sync(self._write.batch.results[0])
        if sync is None:
            return True
        if not sync.finished and not self._storage.closed:
            self._storage.try_reap()
        return sync.finished

    def wait(self) -> list[int]:
        written = self._write.wait()[0]
        sync = self._start_sync(written, wait=True)
        if sync is not None:
            self._storage.wait(sync)
        return self._results(written)

    async def wait_async(self) -> list[int]:
        from uringstack.ring import aio

        written = (await self._write.wait_async())[0]
        sync = self._start_sync(written)
        if sync is not None:
            await aio.wait_batch(self._storage, sync)
        return self._results(written)


class IopollFileIO(UringFileIO):
    """A file or block device opened O_DIRECT whose reads and writes are polled.

    Reads and writes are the core backend's, on the IOPOLL ring, with
    :class:`IopollPending` (which polls) for what they return: cached columns
    per batch size in :meth:`start_rw`, and :meth:`prepare_rw`'s prepared
    batches (columns built once, only the offsets written per start), so the
    rung runs the same per-batch code as the storage ring's.  Syncs and
    durable writes go to the storage ring (the IOPOLL ring refuses them).
    """

    backend = "iopoll"
    pending_type = IopollPending

    def __init__(self, ring: Ring, storage: Ring, fd: int, target: Target, block_size: int, worker: Worker) -> None:
        # ``ring`` is the IOPOLL ring: the fixedbuf plugin registers a handle's fd
        # only in the storage ring's table and recognises it by ``io.ring``, so
        # this handle keeps fixed_index None and is addressed by plain fd.  A
        # registered buffer belongs to the storage ring's table: on this ring it is
        # plain memory (READ/WRITE, not READ_FIXED), which is correct.
        super().__init__(ring, fd, target, block_size, worker)
        self.storage = storage
        self.direct = True  # IOPOLL means O_DIRECT: misalignment is reported before submission
        self.writable = target.writable

    def start_sync(self, datasync: bool, *, wait: bool = False) -> Any:
        # Never on the IOPOLL ring: the kernel refuses fsync there.
        fd, _ = self._fd_and_flags()  # refuses a closed FileIO: its fd number may be another file's
        batch = self.storage.submit(Op.FSYNC, fd, n=1, op_flags=FSYNC_DATASYNC if datasync else 0, wait=wait)
        if self.completion_hook is not None:
            batch.add_done_callback(self.completion_hook("fdatasync" if datasync else "fsync", self.storage))
        return UringPending(self.storage, batch)

    def start_write_durable(
        self, offset: int, buffer: Any, sync: SyncMethod, *, wait: bool = False
    ) -> WriteThenSync | UringPending:
        if sync == "dsync":
            fd, _ = self._fd_and_flags()  # refuses a closed FileIO: its fd number may be another file's
            keep, addrs, lens = pin_buffers([buffer], writable=False)
            with pins_released_on_error(keep):
                check_alignment("write", self.path, addrs[0], lens[0], offset, self.block_size)
            batch = self.storage.submit(
                Op.WRITE, fd, n=1, addrs=addrs[0], lens=lens[0], offsets=offset, op_flags=RWF_DSYNC,
                keep=keep, wait=wait,
            )  # fmt: skip
            if self.completion_hook is not None:
                batch.add_done_callback(self.completion_hook("write_durable", self.storage))
            return UringPending(self.storage, batch)
        write = self.submit_rw(True, [offset], [buffer], wait=wait)  # O_DIRECT: always the ring
        nbytes = buffer.size if isinstance(buffer, RegisteredBuffer) else memoryview(buffer).nbytes
        return WriteThenSync(write, self.storage, self.fd, nbytes, self.completion_hook)


class IopollBackend:
    """Factory: a target on a pollable device, served by the worker's IOPOLL ring."""

    name = "iopoll"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def open(self, target: Target, worker: Worker) -> IopollFileIO:
        from uringstack.stack.targets import close_opened, logical_block_size, open_target

        ring = worker.rings.get(ROLE)
        storage = worker.rings.get("storage")
        if ring is None or storage is None:
            raise UringIOError(
                errno.EOPNOTSUPP, "open", target.path,
                f"worker {worker.index} has no IOPOLL ring (rings: {sorted(worker.rings)}); the plan "
                "enables one only where the iopoll verdict is enabled",
            )  # fmt: skip
        fd = open_target(target)
        try:
            return IopollFileIO(ring, storage, fd, target, logical_block_size(target, fd), worker)
        except BaseException:
            close_opened(target, fd)
            raise
