"""The WAL writes through a FileHandle of a stack: one it is given, or a small one it builds."""

from __future__ import annotations

import errno
import pathlib

import pytest

from tests.requires import skip_without
from uringstack.stack import open_stack
from uringstack.wal import Wal, WalFailedError
from uringstack.wal.io import shared_stack

from .conftest import _URING_SKIP


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_wal_on_a_stack(tmp_path: pathlib.Path, backend: str) -> None:
    if backend == "auto" and _URING_SKIP:
        skip_without(_URING_SKIP)
    # (iopoll off: on a file system over a device with poll queues, as in the NVMe VM, the
    # log's O_DIRECT writes would go to the IOPOLL ring, not the storage ring counted here)
    overrides = {"core.backend": backend, "core.cores": [0], "sqpoll.mode": "off", "iopoll.mode": "off"}
    with open_stack(overrides=overrides) as stack:
        ring = stack.workers[0].rings.get("storage")
        before = ring.counters()["submitted"] if ring is not None else 0
        with Wal.open(tmp_path / "wal", stack=stack) as wal:
            assert wal.io.stack is stack and wal.backend_reason == "the stack it was given"
            assert wal.backend == ("fallback" if backend == "fallback" else "uring")
            lsns = [wal.append(b"record %d" % i) for i in range(50)]
            assert lsns == list(range(1, 51))
            if ring is not None:  # the appends went through the stack's own ring
                assert ring.counters()["submitted"] - before >= 50
        with stack.open(tmp_path / "other", create=True) as h:  # the WAL left the stack open
            assert h.write_from(b"still usable", 0) == 12
        with Wal.open(tmp_path / "wal") as again:
            assert list(again.read_from(1)) == [(i + 1, b"record %d" % i) for i in range(50)]


def test_wal_does_not_use_an_sqpoll_ring(tmp_path: pathlib.Path) -> None:
    """Durable writes through SQPOLL collapse to milliseconds on this kernel: the WAL
    gets a plain io_uring stack of its own instead."""
    if _URING_SKIP:
        skip_without(_URING_SKIP)
    with open_stack(overrides={"sqpoll.mode": "on", "core.cores": [0]}) as stack:
        ring = stack.workers[0].rings["storage"]
        before = ring.counters()["submitted"]
        with Wal.open(tmp_path / "wal", stack=stack) as wal:
            assert wal.io.stack is not stack and "SQPOLL" in wal.backend_reason
            assert wal.backend == "uring" and wal.io.stack is shared_stack("uring")
            assert wal.append(b"x") == 1
        assert ring.counters()["submitted"] == before


def test_backend_and_stack_together_are_refused(tmp_path: pathlib.Path) -> None:
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [0]}) as stack:
        with pytest.raises(TypeError, match="either backend= or stack="):
            Wal.open(tmp_path / "wal", stack=stack, backend="uring")
        Wal.open(tmp_path / "wal", stack=stack).close()  # the refusal released the directory lock


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_a_stack_closed_under_its_log_fails_the_log_saying_so(tmp_path: pathlib.Path, backend: str) -> None:
    # not an I/O error (it read "write: Input/output error (... is closed)"): EBADF, naming the stack
    if backend == "auto" and _URING_SKIP:
        skip_without(_URING_SKIP)
    stack = open_stack(overrides={"core.backend": backend, "core.cores": [0], "sqpoll.mode": "off"})
    wal = Wal.open(tmp_path / "wal", stack=stack)
    try:
        assert wal.append(b"before") == 1
        stack.close()
        with pytest.raises(WalFailedError, match="the stack the log writes through was closed") as failed:
            wal.append(b"after")
        assert failed.value.errno == errno.EBADF
    finally:
        wal.close()
    with Wal.open(tmp_path / "wal") as again:  # what was acknowledged is there
        assert list(again.read_from(1)) == [(1, b"before")]
