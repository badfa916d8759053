"""``aiofiles.ospath`` is ``uringstack.aio_os.path`` here."""

from uringstack.aio_ospath import *  # noqa: F403
