"""Fixtures of the ring tests.  In the bounded-wait tests (``test_submit_wait_bound``,
``test_rw_one``) a hung op is a read from an empty pipe through the ring, which the kernel
holds until a writer shows up; the signal tests' completed batches read a hot file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack import ring as ring_module
from uringstack.ring import Ring


@pytest.fixture
def ring() -> Iterator[Ring]:
    """A ring whose blocked waits check every 0.2 s (test modules with a ``ring`` of their own override it)."""
    ring = Ring(entries=8)
    ring.wait_tick = 0.2
    yield ring
    ring.close()


@pytest.fixture
def whole_first_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waited call's first wait (in the submitting syscall) lasts the ring's whole
    ``wait_tick``, as on a ring without unlocked waits, instead of ``HOLD_MS`` (2 ms) and
    then a second ``io_uring_enter`` without the lock: for a test that counts the one
    syscall, or sends a signal into that first wait, whatever the machine's speed."""
    monkeypatch.setattr(ring_module, "HOLD_MS", 10**6)


IORING_SQ_CQ_OVERFLOW = 1 << 1  # include/uapi/linux/io_uring.h


@contextlib.contextmanager
def empty_pipes(n: int) -> Iterator[list[tuple[int, int]]]:
    """*n* empty pipes ``(r, w)``: a read of each is held by the kernel until the test writes
    to it (``test_cq_cap``, ``test_max_in_flight``); closed on exit."""
    ps = [os.pipe() for _ in range(n)]
    try:
        yield ps
    finally:
        for r, w in ps:
            os.close(r)
            os.close(w)


@pytest.fixture
def small_ring() -> Iterator[Ring]:
    """A 4-entry ring (CQ 8) whose waits check every 0.05 s and give up after 5 s: a batch or
    a few held reads exceed its CQ (``test_audit_cq_overflow``, ``test_cq_cap``)."""
    ring = Ring(entries=4)
    ring.wait_tick = 0.05
    ring.wait_timeout = 5.0
    yield ring
    ring.close()


def cq_overflowed(ring: Ring) -> bool:
    """Whether the kernel holds CQEs the CQ had no room for (``IORING_SQ_CQ_OVERFLOW``)."""
    return bool(ring._sq_flags[0] & IORING_SQ_CQ_OVERFLOW)


@pytest.fixture
def hot_fd(tmp_path: Any) -> Iterator[int]:
    """A read-only descriptor of a 16 KiB file (bytes 0-255 repeated) in the page cache: a
    read of it completes inside its submission."""
    path = tmp_path / "hot"
    path.write_bytes(bytes(range(256)) * 64)
    fd = os.open(path, os.O_RDONLY)
    os.pread(fd, 16384, 0)
    yield fd
    os.close(fd)
