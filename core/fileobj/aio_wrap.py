"""``wrap``: a blocking function as a coroutine function run in the event loop's default executor.

Shared by :mod:`uringstack.fileobj.aio_os` and :mod:`uringstack.fileobj.aio_ospath`
(``aio_os.path``), so neither imports the other for it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def wrap(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` as a coroutine function running in the loop's default executor."""

    @functools.wraps(func)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))

    return run
