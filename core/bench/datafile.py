"""Writing the data files the benchmarks and ``tune`` read: random bytes, every block written.

One writer for ``bench randread``'s data file, ``bench fileobj``'s source file
and ``tune``'s scratch file.  A write that fails (a full disk, most often)
leaves no partial file behind, which would keep the file system full, and
raises an ``OSError`` naming the file, the size asked for and, for ENOSPC or
EDQUOT, the room there was.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from uringstack.ring.interrupts import close_stored, open_stored

CHUNK_BYTES = 1 << 20


def write_random_file(path: str, size: int, tick: Callable[[], None] | None = None, *, exclusive: bool = False) -> None:
    """Create *path* holding *size* random bytes, fsynced; *tick* is called every 64 MiB.

    *exclusive*: the file must not exist yet (``O_EXCL``), else it is truncated.
    On failure the file is removed and ``OSError(errno, what failed, path)`` is raised."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fds: list[int] = []  # (stored as opened: Ctrl-C right after the open leaks nothing)
    done = 0
    try:
        fd = open_stored(fds, path, flags, 0o600 if exclusive else 0o644)
        chunk = os.urandom(CHUNK_BYTES)
        while done < size:
            done += os.write(fd, chunk[: min(len(chunk), size - done)])
            if tick is not None and done % (64 << 20) == 0:
                tick()
        os.fsync(fd)
    except BaseException as exc:
        if not fds:
            raise  # the open failed: no file of ours to remove (O_EXCL: maybe someone else's)
        close_stored(fds)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, _failure(path, size, done, exc), path) from None
        raise
    close_stored(fds)


def _failure(path: str, size: int, done: int, exc: OSError) -> str:
    what = f"writing a {_mib(size)} data file failed after {_mib(done)}: {exc.strerror}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(path)))
            what += f" ({_mib(st.f_bavail * st.f_frsize)} free there once the partial file was removed)"
        except OSError:
            pass
    return what + "; the partial file was removed"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n % (1 << 20) else f"{n >> 20} MiB"
