"""Stacks for the public-API suite: every test runs on io_uring and on the fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from uringstack.stack import Stack, open_stack

BACKENDS = {
    "uring": {"core.backend": "auto", "fallback.mode": "auto"},
    "fallback": {"core.backend": "fallback"},
}


@pytest.fixture(params=sorted(BACKENDS))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS[request.param])
    yield s
    s.close()
