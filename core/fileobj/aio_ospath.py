"""``uringstack.fileobj.aio_os.path``: aiofiles.ospath's ``os.path`` helpers, in the default executor."""

from __future__ import annotations

import os.path

from uringstack.fileobj.aio_wrap import wrap

exists = wrap(os.path.exists)
isfile = wrap(os.path.isfile)
isdir = wrap(os.path.isdir)
islink = wrap(os.path.islink)
ismount = wrap(os.path.ismount)
getsize = wrap(os.path.getsize)
getmtime = wrap(os.path.getmtime)
getatime = wrap(os.path.getatime)
getctime = wrap(os.path.getctime)
samefile = wrap(os.path.samefile)
sameopenfile = wrap(os.path.sameopenfile)
abspath = wrap(os.path.abspath)

__all__ = [
    "abspath",
    "exists",
    "getatime",
    "getctime",
    "getmtime",
    "getsize",
    "isdir",
    "isfile",
    "islink",
    "ismount",
    "samefile",
    "sameopenfile",
]
