"""``aiofiles.os`` is ``uringstack.fileobj.aio_os`` here."""

from uringstack.fileobj.aio_os import *  # noqa: F403
from uringstack.fileobj.aio_os import path, wrap  # noqa: F401
