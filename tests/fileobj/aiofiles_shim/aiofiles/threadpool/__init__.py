"""``aiofiles.threadpool.open`` is ``uringstack.aio.open`` here (no thread pool underneath)."""

from uringstack.aio import open

__all__ = ["open"]
