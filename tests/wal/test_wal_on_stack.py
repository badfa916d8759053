"""The WAL writes through a stack's ring, or through posix I/O on a fallback stack."""

from __future__ import annotations

import pathlib

import pytest

from uringstack.stack import open_stack
from uringstack.wal import Wal
from uringstack.wal.io import PosixBackend, UringBackend


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_wal_on_a_stack(tmp_path: pathlib.Path, backend: str) -> None:
    with open_stack(overrides={"core.backend": backend, "core.cores": [0], "sqpoll.mode": "off"}) as stack:
        with Wal.open(tmp_path / "wal", stack=stack) as wal:
            if backend == "fallback":
                assert isinstance(wal.backend, PosixBackend)
            else:
                assert isinstance(wal.backend, UringBackend)
                assert wal.backend.ring is stack.workers[0].rings["storage"]
                before = wal.backend.ring.counters()["submitted"]
            lsns = [wal.append(b"record %d" % i) for i in range(50)]
            assert lsns == list(range(1, 51))
            if backend != "fallback":
                assert wal.backend.ring.counters()["submitted"] > before
        with Wal.open(tmp_path / "wal") as again:
            assert list(again.read_from(1)) == [(i + 1, b"record %d" % i) for i in range(50)]


def test_wal_does_not_use_an_sqpoll_ring(tmp_path: pathlib.Path) -> None:
    """Durable writes through SQPOLL collapse to milliseconds on this kernel: the WAL
    gets a plain ring of its own instead."""
    with (
        open_stack(overrides={"sqpoll.mode": "on", "core.cores": [0]}) as stack,
        Wal.open(tmp_path / "wal", stack=stack) as wal,
    ):
        assert isinstance(wal.backend, UringBackend)
        assert wal.backend.ring is not stack.workers[0].rings["storage"]
        assert wal.append(b"x") == 1
