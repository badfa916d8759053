"""``uringstack.fileobj.aio_os``: aiofiles.os's helpers (``await aio_os.stat(path)``, ``remove``, ``rename``...).

The stack's I/O contract carries reads, writes and flushes, not metadata, so
these run in the event loop's default executor, exactly as aiofiles's do.
``aio_os.path`` holds the ``os.path`` ones (``exists``, ``getsize``...).
"""

from __future__ import annotations

import os

from uringstack.fileobj import aio_ospath as path
from uringstack.fileobj.aio_wrap import wrap

stat = wrap(os.stat)
lstat = wrap(os.lstat)
remove = wrap(os.remove)
unlink = wrap(os.unlink)
rename = wrap(os.rename)
renames = wrap(os.renames)
replace = wrap(os.replace)
mkdir = wrap(os.mkdir)
makedirs = wrap(os.makedirs)
rmdir = wrap(os.rmdir)
removedirs = wrap(os.removedirs)
listdir = wrap(os.listdir)
scandir = wrap(os.scandir)
symlink = wrap(os.symlink)
readlink = wrap(os.readlink)
link = wrap(os.link)
access = wrap(os.access)
getcwd = wrap(os.getcwd)
statvfs = wrap(os.statvfs)
sendfile = wrap(os.sendfile)

__all__ = [
    "access",
    "getcwd",
    "link",
    "listdir",
    "lstat",
    "makedirs",
    "mkdir",
    "path",
    "readlink",
    "remove",
    "removedirs",
    "rename",
    "renames",
    "replace",
    "rmdir",
    "scandir",
    "sendfile",
    "stat",
    "statvfs",
    "symlink",
    "unlink",
    "wrap",
]
