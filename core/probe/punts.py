"""Which io_uring writes the kernel hands to an io-wq worker: measured once per file system, cached.

io_uring issues a request inline (inside ``io_uring_enter``) only when the
file can do it without blocking; otherwise it queues the request to io-wq,
kernel threads named ``iou-wrk-<tid>`` of the submitting thread, and one of
them does the work: a hand-off and a context switch per request.  For a
buffered (page-cache) write to a regular file the kernel decides that per
file system, before trying anything: only a file system declaring
non-blocking buffered writes (``FOP_BUFFER_WASYNC``: XFS, btrfs) gets it
inline; ext4 and tmpfs (kernel 6.18 here) get every such write punted.

:func:`buffered_write_punts` is the one place that knows: the io_uring
backend (:mod:`uringstack.stack.uring_backend`) serves a waited buffered
write inline with ``pwritev`` where it says True.  It is measured, not looked
up in a table, as the probe does for setup flags: a fresh thread writes 4 KiB
through its own ring to an unnamed temporary file (``O_TMPFILE``) on the
same file system, and the write was punted if an io-wq worker of that
thread appeared.  A fresh thread has no io-wq workers yet, so the answer is
exact.  About 2 ms, once per file system per process; the answer is also
kept in ``$XDG_CACHE_HOME/uringstack/punts.json`` per kernel release and
file system type (what decides it), so later processes skip even that.

The WAL's :func:`durable_uring_punts` (the same question for O_DSYNC writes,
decided by the disk's cache and FUA, not the file system) lives here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import stat
import threading
from pathlib import Path

from uringstack.probe.blockdev import backing_disk, disk_queue_attr
from uringstack.probe.threadlimits import start_thread
from uringstack.probe.tune_cache import cache_root, write_atomic
from uringstack.probe.tune_key import fs_type
from uringstack.ring.interrupts import close_stored, open_stored

PUNTS_FILE = "punts.json"
"""The cache file under :func:`~uringstack.probe.tune_cache.cache_root`."""
_FORMAT = 1
_PROBE_BYTES = 4096

_lock = threading.Lock()
_memo: dict[int, bool] = {}  # st_dev -> buffered writes punted (this process; a fork child keeps it)


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it, mid-measurement, at fork()


os.register_at_fork(after_in_child=_new_lock_in_child)


def buffered_write_punts(fd: int, *, cache_dir: Path | None = None) -> bool:
    """True when a buffered io_uring write to the file *fd* would be punted to io-wq.

    False for anything but a regular file (block devices and pipes are not
    decided by a file system).  When the measurement cannot run (io_uring
    unusable, a directory this process may not write to, no ``/proc``) the
    answer is True and is not cached: serving such a write inline costs what
    the ring would cost if it did not punt (the same copy into the page
    cache, in one syscall), so it is the guess that cannot lose.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return False
    got = _memo.get(st.st_dev)
    if got is not None:
        return got
    with _lock:  # one measurement per file system, however many threads ask at once
        got = _memo.get(st.st_dev)
        if got is None:
            got = _lookup(fd, st.st_dev, cache_dir)
            _memo[st.st_dev] = got
    return got


def _lookup(fd: int, st_dev: int, cache_dir: Path | None) -> bool:
    fs = fs_type(st_dev)
    path = (cache_dir or cache_root()) / PUNTS_FILE
    known = _load(path)
    if fs and fs in known:
        return known[fs]
    try:
        directory = os.path.dirname(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return True
    measured = measure_write_punt(directory)
    if measured is None:
        return True
    if fs:
        _store(path, {**known, fs: measured})
    return measured


def _load(path: Path) -> dict[str, bool]:
    """The cached answers for this kernel release; empty when absent, foreign or unreadable."""
    try:
        doc = json.loads(path.read_bytes())
        if doc.get("format") == _FORMAT and doc.get("kernel") == platform.release():
            return {str(k): v for k, v in doc["buffered_write_punts"].items() if isinstance(v, bool)}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    return {}


def _store(path: Path, answers: dict[str, bool]) -> None:
    doc = {"format": _FORMAT, "kernel": platform.release(), "buffered_write_punts": answers}
    with contextlib.suppress(OSError):  # an unwritable cache costs the next process one measurement
        write_atomic(path, json.dumps(doc, indent=2, sort_keys=True))


def measure_write_punt(directory: str, *, direct: bool = False, overwrite: bool = False) -> bool | None:
    """Whether one 4 KiB io_uring write to a new unnamed file in *directory* is punted to io-wq.

    ``direct=True`` opens the file with O_DIRECT; ``overwrite=True`` first
    writes and syncs the block with ``pwrite`` so the measured write
    overwrites allocated blocks (an O_DIRECT overwrite on ext4 is issued
    inline: the control that shows this measurement can say False).
    ``None`` when it cannot be measured (no ``O_TMPFILE`` there, io_uring
    unusable, the write failed)."""
    result: list[bool | None] = [None]

    def run() -> None:
        try:
            result[0] = _punted_in_this_thread(directory, direct, overwrite)
        except (OSError, RuntimeError, ImportError):
            result[0] = None

    thread = threading.Thread(target=run, name="uringstack-punt-probe", daemon=True)
    start_thread(thread)
    thread.join()
    return result[0]


def _punted_in_this_thread(directory: str, direct: bool, overwrite: bool) -> bool | None:
    from uringstack.ring import Ring
    from uringstack.ring.buffers import address_of, aligned_buffer
    from uringstack.ring.flags import Op
    from uringstack.ring.native import ffi

    ids = _thread_ids()
    flags = os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    fds: list[int] = []  # (stored as opened: Ctrl-C right after the open leaks nothing)
    try:
        fd = open_stored(fds, directory, flags, 0o600)
        buf = aligned_buffer(_PROBE_BYTES)  # aligned, so the same buffer serves O_DIRECT
        if overwrite:
            os.pwrite(fd, buf, 0)
            os.fsync(fd)
        pin = ffi.from_buffer(buf)
        with Ring(entries=2) as ring:
            before = _workers()
            res = ring.run(Op.WRITE, fd, addrs=address_of(pin), lens=_PROBE_BYTES, offsets=0, keep=[pin])[0]
            after = _workers()
    finally:
        close_stored(fds)
    if res != _PROBE_BYTES:
        return None
    # A worker names itself iou-wrk-<tid of the task it serves> before it runs anything.
    return any(comm.rpartition("-")[2] in ids for tid, comm in after.items() if tid not in before)


def _thread_ids() -> set[str]:
    """This thread's id, also as the kernel's outer PID namespaces number it (a worker's name uses that)."""
    ids = {str(threading.get_native_id())}
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids.update(line.split()[1:])
    except OSError:
        pass
    return ids


def _workers() -> dict[str, str]:
    """The io-wq worker threads of this process: ``{tid: comm}``."""
    out: dict[str, str] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # the thread exited meanwhile
        if comm.startswith("iou-wrk-"):
            out[tid] = comm
    return out


def durable_uring_punts(
    directory: str | os.PathLike[str], *, sysfs_root: str | os.PathLike[str] = "/sys"
) -> str | None:
    """Why a durable io_uring write would be slow for files in *directory*, or None.

    On a disk with a volatile write cache and no FUA, every O_DSYNC write
    needs a separate cache flush, which io_uring cannot issue without
    blocking: the kernel hands each durable write to an io-wq thread.
    Measured on such a disk (virtio, kernel 6.18): one 4 KiB appender had p99
    1.26x fio's through io_uring but 1.03x through pwrite, and 32 appender
    threads did 36k vs 58k records/s (BENCHMARKS.md).
    """
    try:
        disk, _ = backing_disk(directory, sysfs_root=sysfs_root)
    except OSError:
        return None
    if disk is None:
        return None
    cache = disk_queue_attr(disk, "write_cache", sysfs_root=sysfs_root)
    if cache == "write back" and disk_queue_attr(disk, "fua", sysfs_root=sysfs_root) == "0":
        return (
            f"{disk} has a volatile write cache and no FUA, so each durable io_uring write is punted "
            "to an io-wq thread; pwrite + O_DSYNC measured faster there"
        )
    return None
