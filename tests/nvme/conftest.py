"""Hardware group: needs an NVMe namespace with poll queues (runs inside ../shared/nvme-vm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from uringstack.cli.probe_report import FeatureCheck
    from uringstack.probe.model import Capabilities
    from uringstack.ring import Ring

NG = Path("/dev/ng0n1")
BLK = Path("/dev/nvme0n1")
SYS_BLK = Path("/sys/block/nvme0n1")
NULLB = Path("/dev/nullb0")
SKIP_REASON = "needs an NVMe namespace with poll queues; runs inside ../shared/nvme-vm via scripts/test-nvme.sh"
MODPROBE_HINT = (
    'scripts/test-nvme.sh loads it with NVME_VM_MODPROBE="crc32c_generic;ext4;null_blk queue_mode=2 poll_queues=2 gb=1"'
)


def hardware_missing() -> str | None:
    """Why the hardware group cannot run here, or None.

    Only the block namespace is required: ``/dev/ng0n1`` exists from Linux 5.13
    on, and whether passthrough is usable is the probe's verdict for this
    kernel (see :func:`passthrough_check`), not a reason to skip the group.
    """
    if not BLK.exists() or not SYS_BLK.exists():
        return f"{SKIP_REASON} (no {BLK if not BLK.exists() else SYS_BLK} here)"
    model = (SYS_BLK / "device" / "model").read_text().strip() if (SYS_BLK / "device" / "model").exists() else ""
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


@pytest.fixture(scope="session")
def caps() -> Capabilities:
    """The probe's report for this (guest) kernel, taken once per session."""
    from uringstack.probe import probe

    return probe()


def probe_checks(caps: Capabilities) -> dict[str, FeatureCheck]:
    """The verdict lines `uringstack probe` prints for this kernel (io_uring, then each
    plugin's own verdict under the default config), by feature name."""
    from uringstack.cli.probe_report import verdicts
    from uringstack.config import load_config
    from uringstack.pluginmanager import make_plugin_manager

    pm = make_plugin_manager()
    config = load_config(env={}, plugin_manager=pm).config
    return {c.feature: c for c in verdicts(caps, pm, config)}


def _check(caps: Capabilities, feature: str) -> FeatureCheck:
    return probe_checks(caps)[feature]


@pytest.fixture(scope="session")
def passthrough_check(caps: Capabilities) -> FeatureCheck:
    """The probe's NVMe passthrough verdict for this kernel."""
    return _check(caps, "nvme_passthrough")


@pytest.fixture
def passthrough(passthrough_check: FeatureCheck, caps: Capabilities) -> None:
    """Skip, with the probe's own reason, where this kernel cannot do passthrough.

    test_kernel_matrix checks that reason is the right one for the kernel, so a
    skip here is never a silent loss of coverage.
    """
    if not passthrough_check.usable:
        pytest.skip(f"the probe rules NVMe passthrough out on {caps.kernel_release}: {passthrough_check.reason}")


@pytest.fixture(scope="session")
def ext4_available() -> None:
    """Skip unless the guest kernel can mount ext4 (modules loaded at boot by the VM)."""
    if "ext4" not in Path("/proc/filesystems").read_text().split():
        pytest.skip(f"the VM kernel {os.uname().release} cannot mount ext4 (module not loaded): {MODPROBE_HINT}")


@pytest.fixture(scope="session")
def nullb() -> Path:
    """The RAM-backed null_blk device, or a skip naming how to get it."""
    if not NULLB.exists():
        pytest.skip(f"no {NULLB}: null_blk is not loaded; {MODPROBE_HINT}")
    return NULLB


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
        _umount(mnt)
        mnt.rmdir()


def _umount(mnt: Path, wait_s: float = 10.0) -> None:
    """umount, retried for a few seconds: the kernel may drop a file's last reference late.

    A file closed by io_uring can be released from a worker thread, which defers
    the final fput to a workqueue, so an umount right after the close may see
    EBUSY for a moment.  A handle that really leaks stays busy and still fails.
    """
    deadline = time.monotonic() + wait_s
    while True:
        done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"umount {mnt} still fails after {wait_s:.0f} s: {done.stderr.strip()}")
        time.sleep(0.1)

        time.sleep(0.1)


@pytest.fixture
def polled_ring() -> Iterator[Ring]:
    """A small IOPOLL ring with short bounds (a lost completion fails in about a second)."""
    from uringstack.ring import Ring
    from uringstack.ring.flags import SetupFlag

    ring = Ring(entries=8, flags=SetupFlag.IOPOLL)
    assert ring.flags & SetupFlag.IOPOLL
    ring.wait_tick, ring.wait_timeout, ring.close_timeout = 0.2, 1.0, 1.0
    yield ring
    if not ring.closed:
        ring.close()


@pytest.fixture
def blk_fd() -> Iterator[int]:
    """/dev/nvme0n1 opened O_RDWR | O_DIRECT, after checking that its queue polls."""
    assert (SYS_BLK / "queue/io_poll").read_text().strip() == "1"  # an IOPOLL ring on it really polls
    fd = os.open(BLK, os.O_RDWR | os.O_DIRECT)
    yield fd
    os.close(fd)
