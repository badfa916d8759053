"""pytest plugin for aiofiles's suite: runs ``async def`` tests on asyncio.

Stands in for pytest-asyncio (``asyncio_mode = "auto"``, ``unused_tcp_port``) so
the suite needs no further dependency."""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), timeout=60))
    return True


@pytest.fixture
def unused_tcp_port() -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
