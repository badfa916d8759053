"""Turning a TARGET named on the command line into something safe to measure.

A regular file is read in place; a directory stands for its file system and
gets a scratch file (written once, deleted afterwards); a block device is
opened read-only and never written.  Anything else is refused with a one-line
reason that names the target.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from uringstack.bench.datafile import write_random_file
from uringstack.errors import UringStackError
from uringstack.probe.blockdev import device_size
from uringstack.probe.tuning import TargetKind, TuneTarget, Workload
from uringstack.ring.interrupts import opens

SCRATCH_BYTES = 64 << 20
"""Size of the scratch file in a directory target: large enough that random 4 KiB
reads are not served by a drive's cache, small enough to write in well under a second."""
SCRATCH_PREFIX = ".uringstack-tune-"


class TuneError(UringStackError):
    """A target or option that cannot be tuned; the message names it and says why."""


def _kind(path: str) -> TargetKind:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TuneError(f"{path}: no such file, directory or block device") from None
    except OSError as exc:
        raise TuneError(f"{path}: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        return "block"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISREG(st.st_mode):
        return "file"
    what = "a character device" if stat.S_ISCHR(st.st_mode) else "not a file, directory or block device"
    hint = (
        " (NVMe generic char devices are not tuned: name the namespace's block device)"
        if stat.S_ISCHR(st.st_mode)
        else ""
    )
    raise TuneError(f"{path}: {what}; tune a regular file, a directory or a block device{hint}")


def _direct_ok(path: str) -> bool:
    try:
        opens(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False  # tmpfs and some network file systems refuse O_DIRECT
        raise TuneError(f"{path}: cannot open for reading: {exc.strerror}") from None
    return True


def _write_scratch(directory: str, size: int) -> str:
    # written, not fallocated: reads of unwritten extents return zeros without touching the device
    path = os.path.join(directory, f"{SCRATCH_PREFIX}{os.getpid()}.bin")
    try:
        write_random_file(path, size, exclusive=True)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise TuneError(
                f"{directory}: read-only file system; tune an existing file on it (read in place) "
                "or its block device instead"
            ) from None
        raise TuneError(f"{directory}: cannot make a scratch file: {exc.strerror}") from None
    return path


def check_target(given: str, workload: Workload) -> None:
    """Refuse *given* now if :func:`prepared` would: its kind, and for a file or block device
    that it can be opened and is large enough (a directory's scratch file is made later).

    ``tune`` checks every target this way before measuring any, so a bad second target
    no longer ends the command after the first was measured and cached (session 32)."""
    path = os.path.abspath(given)
    if _kind(path) == "directory":
        return
    try:
        opens(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TuneError(f"{path}: cannot open for reading: {exc.strerror}") from None
    _checked_size(path, path, workload)


def _checked_size(path: str, read_path: str, workload: Workload) -> int:
    """*read_path*'s size, refused (naming *path*, the target as given) when it cannot be read
    or is too small for the workload's random reads."""
    try:
        size = device_size(read_path)
    except OSError as exc:  # (lseek's EINVAL on /proc files named nothing: "error: Invalid argument")
        raise TuneError(
            f"{path}: cannot read its size ({exc.strerror or exc}); not a file or block device to tune"
        ) from exc
    minimum = workload.block_size * workload.queue_depth
    if size < minimum:
        raise TuneError(f"{path}: {size} bytes is too small; random reads need at least {minimum} bytes")
    return size


@contextmanager
def prepared(
    given: str, workload: Workload, caps_device: object = None, scratch_bytes: int = SCRATCH_BYTES
) -> Iterator[TuneTarget]:
    """The :class:`TuneTarget` for *given*; a directory's scratch file is removed on exit."""
    path = os.path.abspath(given)
    kind = _kind(path)
    scratch = None
    if kind == "directory":
        scratch = _write_scratch(path, scratch_bytes)
        read_path = scratch
    else:
        read_path = path
    try:
        size = _checked_size(path, read_path, workload)
        direct = workload.direct and _direct_ok(read_path)
        yield TuneTarget(
            given=path,
            path=read_path,
            kind=kind,
            device=caps_device,
            workload=workload.model_copy(update={"direct": direct}),
            size_bytes=size,
        )
    finally:
        if scratch is not None:
            with suppress(FileNotFoundError):
                os.unlink(scratch)
