"""The cache key: which device a path lives on, and the machine facts a measurement depends on.

The device is identified the way a drive is recognised across reboots: its
model plus serial number or WWN where sysfs or udev have them; without
those, its ``major:minor`` and size.  A file or directory is keyed by the
whole disk under its file system (a partition counts as its disk) plus the
file system type; a file system without a block device (tmpfs, overlay) by
its own device number and size.
"""

from __future__ import annotations

import os
import platform
import stat
from dataclasses import dataclass
from pathlib import Path

from uringstack.probe.tuning import DeviceIdentity, TuneKey

_SYS_DEV_BLOCK = Path("/sys/dev/block")


@dataclass(frozen=True)
class MachineFacts:
    """The machine-wide part of the key (tests pass their own)."""

    kernel: str
    uringstack_version: str
    cpus: int

    @classmethod
    def here(cls) -> MachineFacts:
        return cls(kernel=platform.release(), uringstack_version=uringstack_version(), cpus=os.cpu_count() or 1)

    def key(self, device: DeviceIdentity) -> TuneKey:
        return TuneKey(device=device, kernel=self.kernel, uringstack_version=self.uringstack_version, cpus=self.cpus)


def uringstack_version() -> str:
    """The installed uringstack version (``0+unknown`` when not installed as a distribution)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uringstack")
    except PackageNotFoundError:
        return "0+unknown"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _whole_disk(sys_dir: Path) -> Path:
    # a partition's sysfs directory has a ``partition`` file and sits inside its disk's
    return sys_dir.parent if (sys_dir / "partition").exists() else sys_dir


def _udev_ids(name: str) -> tuple[str, str]:
    try:
        import pyudev

        from uringstack.probe.udev import udev_context

        dev = pyudev.Devices.from_name(udev_context(), "block", name)
        props = dev.properties
        return str(props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL") or ""), str(props.get("ID_WWN") or "")
    except Exception:  # udev absent (containers) or the device vanished: sysfs may still know
        return "", ""


def block_identity(major: int, minor: int) -> DeviceIdentity | None:
    """The whole disk behind device number *major:minor*, or ``None`` if it is no block device."""
    sys_dir = _SYS_DEV_BLOCK / f"{major}:{minor}"
    if not sys_dir.exists():
        return None
    disk = _whole_disk(sys_dir.resolve())
    name = disk.name
    serial, wwn = _udev_ids(name)
    serial = serial or _read(disk / "serial") or _read(disk / "device" / "serial")
    wwn = wwn or _read(disk / "wwid") or _read(disk / "device" / "wwid")
    model = _read(disk / "device" / "model")
    if not model and (disk / "device" / "driver").exists():
        driver = os.path.basename(os.path.realpath(disk / "device" / "driver"))
        model = {"virtio_blk": "virtio-blk"}.get(driver, driver)
    sectors = _read(disk / "size")
    return DeviceIdentity(
        name=name,
        model=model,
        serial=serial,
        wwn=wwn,
        devnum=_read(disk / "dev"),
        size_bytes=int(sectors) * 512 if sectors.isdigit() else 0,
    )


def fs_type(st_dev: int) -> str:
    """The type of the file system mounted from device number *st_dev* (``ext4``, ``tmpfs``), or ""."""
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[2] == want and right:
                    return right.split()[0]
    except (OSError, IndexError):
        pass
    return ""


def identity_of(path: str) -> DeviceIdentity:
    """The device identity a measurement of *path* (file, directory or block device) belongs to."""
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        found = block_identity(os.major(st.st_rdev), os.minor(st.st_rdev))
        if found is not None:
            return found
        return DeviceIdentity(devnum=f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    fs = fs_type(st.st_dev)
    found = block_identity(os.major(st.st_dev), os.minor(st.st_dev))
    if found is not None:
        return found.model_copy(update={"fs": fs})
    vfs = os.statvfs(path)
    return DeviceIdentity(
        devnum=f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", size_bytes=vfs.f_blocks * vfs.f_frsize, fs=fs
    )


def key_of(path: str, facts: MachineFacts | None = None) -> TuneKey:
    """The full key of a measurement of *path* on this machine."""
    return (facts or MachineFacts.here()).key(identity_of(path))
