"""Stand-in ``aiofiles`` for running aiofiles's own tests against ``uringstack.aio``.

Only on ``sys.path`` inside the subprocess that ``test_aiofiles_suite.py`` starts."""

from uringstack.fileobj import aio_os as os
from uringstack.aio import open

from . import threadpool

__all__ = ["open", "os", "threadpool"]
