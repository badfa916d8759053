"""Fixtures of the bounded-wait tests (``test_submit_wait_bound``, ``test_rw_one``): a hung op is a
read from an empty pipe through the ring, which the kernel holds until a writer shows up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from uringstack.ring import Ring


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture
def ring() -> Iterator[Ring]:
    """A ring whose blocked waits check every 0.2 s (test modules with a ``ring`` of their own override it)."""
    ring = Ring(entries=8)
    ring.wait_tick = 0.2
    yield ring
    ring.close()
