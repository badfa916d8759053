"""The backend object under a handle (``handle.io``) refuses I/O once closed.

After ``handle.close()`` (or ``stack.close()``) the descriptor number is free
and the next ``open`` gets it: a raw ``FileIO`` that still submitted would
write into that unrelated file.  Every entry point raises
:class:`RingClosedError` as the handle does (docs/api.md), and the other
file is left untouched.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from uringstack.errors import RingClosedError
from uringstack.ring.io_backend import FileIO, PreparesRW, SyncMethod
from uringstack.stack import FileHandle, Stack, open_stack

from .conftest import BACKENDS

BS = 4096
CALLS: dict[str, Callable[[FileIO, bytearray], Any]] = {
    "start_rw write": lambda io, buf: io.start_rw(True, [0], [buf]),
    "start_rw write, wait": lambda io, buf: io.start_rw(True, [0], [buf], wait=True),
    "start_rw read": lambda io, buf: io.start_rw(False, [0], [buf]),
    "start_sync": lambda io, buf: io.start_sync(True),
    "start_write_durable dsync": lambda io, buf: io.start_write_durable(0, buf, "dsync"),
    "start_write_durable dsync, wait": lambda io, buf: io.start_write_durable(0, buf, "dsync", wait=True),
    "start_write_durable fdatasync, wait": lambda io, buf: io.start_write_durable(0, buf, "fdatasync", wait=True),
}


def _refused_and_nothing_written(tmp_path: pathlib.Path, start: Callable[[], Any]) -> None:
    """*start* raises RingClosedError while another file holds the freed descriptor number,
    and that file is left untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * BS)
    fd = os.open(victim, os.O_RDWR)  # usually gets the number the close freed
    try:
        with pytest.raises(RingClosedError, match="closed"):
            start()
    finally:
        os.close(fd)
    assert victim.read_bytes() == b"v" * BS, "the closed FileIO wrote into its descriptor number's new owner"


@pytest.fixture(params=sorted(BACKENDS))
def opened(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[tuple[Stack, FileHandle]]:
    """A stack on each backend and a handle on a one-block file."""
    stack = open_stack(overrides=BACKENDS[request.param])
    try:
        target = tmp_path / "data"
        target.write_bytes(bytes(BS))
        yield stack, stack.open(target, direct=False)
    finally:
        stack.close()


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("what", ["handle", "stack"])
def test_a_closed_backend_object_refuses_io(
    tmp_path: pathlib.Path, opened: tuple[Stack, FileHandle], what: str, call: str
) -> None:
    stack, h = opened
    io = h.io
    if what == "handle":
        h.close()
    else:
        stack.close()
    _refused_and_nothing_written(tmp_path, lambda: CALLS[call](io, bytearray(b"X" * BS)))


def test_a_prepared_io_of_a_closed_backend_object_refuses_to_start(tmp_path: pathlib.Path) -> None:
    """The uring backend's own prepared batch (the fallback has none: its generic
    prepared I/O calls start_rw, covered above) refuses to start once its FileIO closed."""
    stack = open_stack(overrides=BACKENDS["uring"])
    try:
        target = tmp_path / "data"
        target.write_bytes(bytes(BS))
        h = stack.open(target, direct=False)
        io = h.io
        assert isinstance(io, PreparesRW), io.backend
        prepared = io.prepare_rw(True, [bytearray(b"X" * BS)])
        prepared.start([0], wait=True).wait()
        h.close()
        _refused_and_nothing_written(tmp_path, lambda: prepared.start([0], wait=True))
    finally:
        stack.close()


@pytest.mark.parametrize("sync", ["dsync", "fdatasync"])
@pytest.mark.parametrize("fixedbuf", ["auto", "off"])
def test_a_durable_write_after_close_is_refused_even_with_its_columns_cached(
    tmp_path: pathlib.Path, sync: SyncMethod, fixedbuf: str
) -> None:
    """The uring backend caches a durable write's columns, fd included: the first write
    before close fills that cache, and the write after close must not reuse it (with
    fixedbuf off the file is addressed by its plain fd, so no slot change refills it)."""
    stack = open_stack(overrides={**BACKENDS["uring"], "fixedbuf.mode": fixedbuf})
    try:
        target = tmp_path / "data"
        target.write_bytes(bytes(BS))
        h = stack.open(target, direct=False)
        io = h.io
        io.start_write_durable(0, bytearray(b"X" * BS), sync, wait=True).wait()
        h.close()
        again = bytearray(b"Y" * BS)
        _refused_and_nothing_written(tmp_path, lambda: io.start_write_durable(0, again, sync, wait=True))
    finally:
        stack.close()
