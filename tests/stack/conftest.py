"""Stacks for the public-API suite: every test runs on io_uring and on the fallback."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Iterator

import pytest

from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle

BACKENDS = {
    # (iopoll off: on a device with poll queues, as the NVMe VM's ext4, O_DIRECT handles
    # would go to the IOPOLL backend, whose durable write spans two rings; tests/nvme has it)
    "uring": {"core.backend": "auto", "fallback.mode": "auto", "iopoll.mode": "off"},
    "fallback": {"core.backend": "fallback"},
}


@pytest.fixture(params=sorted(BACKENDS))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS[request.param])
    yield s
    s.close()


@pytest.fixture
def handle(stack: Stack, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[FileHandle]:
    """A handle on a file holding the test module's ``DATA``, on each backend (a module
    with its own ``handle`` fixture uses that one)."""
    path = tmp_path / "f"
    path.write_bytes(request.module.DATA)
    with stack.open(path) as h:
        yield h


class GatedReads:
    """The fallback backend's reads held at a gate: each waits until ``gate`` is set (5 s at
    most); ``ended`` holds the ``time.monotonic()`` at which each finished."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.ended: list[float] = []


@pytest.fixture
def gated_fallback_reads(monkeypatch: pytest.MonkeyPatch) -> GatedReads:
    """The fallback pool's reads (``_preadv``) wait at a gate the test opens (see :class:`GatedReads`)."""
    from uringstack.plugins.fallback import backend as fallback_backend

    gated = GatedReads()
    real = fallback_backend._preadv

    def preadv(fd: int, buf: object, offset: int) -> int:
        gated.gate.wait(5.0)
        try:
            return real(fd, buf, offset)
        finally:
            gated.ended.append(time.monotonic())

    monkeypatch.setattr(fallback_backend, "_preadv", preadv)
    return gated
