"""Hardware group: needs an NVMe namespace with poll queues (runs inside ../shared/nvme-vm)."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

NG = Path("/dev/ng0n1")
BLK = Path("/dev/nvme0n1")
SYS_BLK = Path("/sys/block/nvme0n1")
SKIP_REASON = (
    "needs an NVMe namespace with poll queues; runs inside ../shared/nvme-vm via "
    "scripts/test-nvme.sh"
)


def hardware_missing() -> str | None:
    """Why the hardware group cannot run here, or None."""
    if not NG.exists() or not SYS_BLK.exists():
        return f"{SKIP_REASON} (no {NG if not NG.exists() else SYS_BLK} here)"
    model = (
        (SYS_BLK / "device" / "model").read_text().strip()
        if (SYS_BLK / "device" / "model").exists()
        else ""
    )
    # These tests overwrite the namespace: only the emulated scratch disk, or one the
    # user names explicitly as expendable.
    if not model.startswith("QEMU") and os.environ.get("URINGSTACK_NVME_SCRATCH") != str(NG):
        return (
            f"{NG} is a real device ({model or 'unknown model'}); these tests overwrite it. "
            f"Set URINGSTACK_NVME_SCRATCH={NG} if it is expendable"
        )
    if os.geteuid() != 0:
        return f"{SKIP_REASON} (needs root to open {NG} read-write and to mount)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = hardware_missing()
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.nvme)
            if why is not None:
                item.add_marker(pytest.mark.skip(reason=why))


# Load order matters: each module needs the ones before it (no modprobe in the guest).
EXT4_MODULES = ("crc16", "mbcache", "jbd2", "crc32c_generic", "ext4")


def _finit_module(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # SYS_finit_module on x86-64 is 313.
        if libc.syscall(313, fd, b"", 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EEXIST:
                raise OSError(err, f"finit_module({path.name}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def ext4_available() -> None:
    """Make sure the kernel can mount ext4, loading modules scripts/test-nvme.sh fetched."""
    if "ext4" in Path("/proc/filesystems").read_text().split():
        return
    kdir = os.environ.get("URINGSTACK_NVME_KMODS")
    release = os.uname().release
    if not kdir or not (Path(kdir) / release).is_dir():
        pytest.skip(
            f"the VM kernel {release} has no ext4 driver built in and no modules were provided: "
            "scripts/test-nvme.sh fetches them into URINGSTACK_NVME_KMODS"
        )
    for name in EXT4_MODULES:
        _finit_module(Path(kdir) / release / f"{name}.ko")
    assert "ext4" in Path("/proc/filesystems").read_text().split()


@pytest.fixture
def mounted_ext4(ext4_available: None) -> Iterator[Path]:
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    subprocess.run([mkfs, "-q", "-F", str(BLK)], check=True)
    mnt = Path("/tmp") / f"mnt-x-{os.getpid()}"  # the VM's /tmp is a local overlay
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", str(BLK), str(mnt)], check=True)
    try:
        (mnt / "hello").write_text("on the namespace\n")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()
