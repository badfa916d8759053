"""WAL `auto` backend: the fallback where durable io_uring writes are punted to io-wq, else the stack's choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uringstack.wal import Wal
from uringstack.wal.io import durable_uring_punts, shared_stack


def fake_sysfs(root: Path, log_dir: Path, cache: str, fua: str) -> Path:
    st = os.stat(log_dir)
    disk = root / "devices" / "virtual" / "block" / "fakedisk"
    (disk / "queue").mkdir(parents=True)
    (disk / "queue" / "write_cache").write_text(cache + "\n")
    (disk / "queue" / "fua").write_text(fua + "\n")
    (root / "dev" / "block").mkdir(parents=True)
    os.symlink(disk, root / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    (root / "block").mkdir()
    os.symlink(disk, root / "block" / "fakedisk")
    return root


@pytest.mark.parametrize(
    ("cache", "fua", "slow"),
    [("write back", "0", True), ("write back", "1", False), ("write through", "0", False)],
)
def test_volatile_cache_without_fua_means_punted_writes(tmp_path: Path, cache: str, fua: str, slow: bool) -> None:
    log_dir = tmp_path / "wal"
    log_dir.mkdir()
    sysfs = fake_sysfs(tmp_path / "sys", log_dir, cache, fua)
    why = durable_uring_punts(log_dir, sysfs_root=sysfs)
    assert (why is not None) == slow
    if slow:
        assert why is not None and "fakedisk" in why and "io-wq" in why


def test_auto_follows_this_machines_disk(tmp_path: Path) -> None:
    with Wal.open(tmp_path / "wal", backend="auto") as wal:
        if durable_uring_punts(tmp_path / "wal") is not None:
            assert wal.backend == "fallback"
            assert wal.backend_reason.startswith("auto: fallback, because")
        else:
            assert wal.backend in ("uring", "fallback")  # the stack's own choice
            assert wal.backend_reason == "auto: the stack's choice"


@pytest.mark.parametrize(("spec", "backend"), [("fallback", "fallback"), ("posix", "fallback")])
def test_named_backend_is_the_stacks(tmp_path: Path, spec: str, backend: str) -> None:
    with Wal.open(tmp_path / "wal", backend=spec) as wal:
        assert wal.backend == backend and wal.io.stack is shared_stack(backend) and not wal.io.owns_stack
        assert wal.append(b"x") == 1
    with Wal.open(tmp_path / "wal", backend=spec) as wal:  # built once per process and backend
        assert wal.io.stack is shared_stack(backend)
