"""``aiofiles.os`` is ``uringstack.aio_os`` here."""

from uringstack.aio_os import *  # noqa: F403
from uringstack.aio_os import path, wrap  # noqa: F401
