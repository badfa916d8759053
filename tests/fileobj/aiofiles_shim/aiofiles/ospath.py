"""``aiofiles.ospath`` is ``uringstack.fileobj.aio_os.path`` here."""

from uringstack.fileobj.aio_ospath import *  # noqa: F403
