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
from collections.abc import Callable
from typing import Any

import pytest

from uringstack.errors import RingClosedError
from uringstack.ring.io_backend import FileIO, PreparesRW
from uringstack.stack import open_stack

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


def _victim(tmp_path: pathlib.Path) -> tuple[pathlib.Path, int]:
    """Another file opened after the close: it usually gets the freed descriptor number."""
    path = tmp_path / "victim"
    path.write_bytes(b"v" * BS)
    return path, os.open(path, os.O_RDWR)


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("what", ["handle", "stack"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_closed_backend_object_refuses_io(tmp_path: pathlib.Path, backend: str, what: str, call: str) -> None:
    stack = open_stack(overrides=BACKENDS[backend])
    try:
        target = tmp_path / "data"
        target.write_bytes(bytes(BS))
        h = stack.open(target, direct=False)
        io = h.io
        old_fd = io.fd
        if what == "handle":
            h.close()
        else:
            stack.close()
        victim, vfd = _victim(tmp_path)
        try:
            with pytest.raises(RingClosedError, match="closed"):
                CALLS[call](io, bytearray(b"X" * BS))
        finally:
            os.close(vfd)
        assert victim.read_bytes() == b"v" * BS, f"the closed FileIO wrote into fd {old_fd}'s new owner"
    finally:
        stack.close()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_prepared_io_of_a_closed_backend_object_refuses_to_start(tmp_path: pathlib.Path, backend: str) -> None:
    stack = open_stack(overrides=BACKENDS[backend])
    try:
        target = tmp_path / "data"
        target.write_bytes(bytes(BS))
        h = stack.open(target, direct=False)
        io = h.io
        if not isinstance(io, PreparesRW):
            pytest.skip(f"the {backend} backend has no prepare_rw of its own (the generic one calls start_rw)")
        prepared = io.prepare_rw(True, [bytearray(b"X" * BS)])
        prepared.start([0], wait=True).wait()
        h.close()
        victim, vfd = _victim(tmp_path)
        try:
            with pytest.raises(RingClosedError, match="closed"):
                prepared.start([0], wait=True)
        finally:
            os.close(vfd)
        assert victim.read_bytes() == b"v" * BS
    finally:
        stack.close()

