"""Stacks for the file-object suite: io_uring and the fallback thread pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from uringstack.fileobj import default_stack as ds
from uringstack.stack import Stack, open_stack

BACKENDS = {
    "uring": {"core.backend": "auto", "fallback.mode": "auto"},
    "fallback": {"core.backend": "fallback"},
}


@contextlib.contextmanager
def as_default_stack(stack: Stack) -> Iterator[Stack]:
    """Make *stack* the process-wide default while the block runs (tests only)."""
    with ds._lock:
        saved, ds._stack = ds._stack, stack
    try:
        yield stack
    finally:
        with ds._lock:
            ds._stack = saved


@pytest.fixture(params=sorted(BACKENDS))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS[request.param])
    yield s
    s.close()


@pytest.fixture
def default_on(stack: Stack) -> Iterator[Stack]:
    """The parametrized stack, installed as the default one."""
    with as_default_stack(stack):
        yield stack
