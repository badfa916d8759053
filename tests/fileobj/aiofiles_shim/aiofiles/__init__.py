"""Stand-in ``aiofiles`` for running aiofiles's own tests against ``uringstack.aio``.

Only on ``sys.path`` inside the subprocess that ``test_aiofiles_suite.py`` starts."""

from uringstack.aio import open
from uringstack.fileobj import aio_os as os

from . import threadpool

__all__ = ["open", "os", "threadpool"]
