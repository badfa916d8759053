"""What uses a disk right now: mounts, holders, swap, an exclusive claim.

The probe fills ``BlockDevice.usage`` from here, and
:meth:`uringstack.probe.model.Capabilities.usage_now` asks again at the
moment a decision must not be stale; this module knows nothing of the
report's models, so the model can call it.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyudev

from uringstack.probe.blockdev import read_attr
from uringstack.probe.udev import udev_context
from uringstack.ring.interrupts import opens

MOUNTINFO = Path("/proc/self/mountinfo")
SWAPS = Path("/proc/swaps")


@dataclass
class Mounts:
    """Which device numbers and source paths are mounted, and where."""

    by_devnum: dict[tuple[int, int], list[str]]
    by_source: dict[str, list[str]]

    def mountpoints(self, devnum: tuple[int, int] | None, node: str | None) -> list[str]:
        """Mount points of the device with number *devnum* or node path *node*."""
        found: list[str] = []
        if devnum is not None:
            found += self.by_devnum.get(devnum, [])
        if node:
            found += [m for m in self.by_source.get(node, []) if m not in found]
        return found


def _unescape_mount(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> Mounts:
    """Parse ``/proc/self/mountinfo``: field 3 is ``major:minor``, field 5 the mount
    point, and the first field after `` - `` + 1 the mount source (``/dev/vda1``).

    The source is kept too because btrfs reports an anonymous device number.
    """
    by_devnum: dict[tuple[int, int], list[str]] = defaultdict(list)
    by_source: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        major, _, minor = fields[2].partition(":")
        mountpoint = _unescape_mount(fields[4])
        by_devnum[(int(major), int(minor))].append(mountpoint)
        sep = fields.index("-", 6)
        if len(fields) > sep + 2:
            by_source[_unescape_mount(fields[sep + 2])].append(mountpoint)
    return Mounts(dict(by_devnum), dict(by_source))


def parse_swaps(text: str) -> set[str]:
    """Device paths in ``/proc/swaps`` (first column after the header)."""
    return {line.split()[0] for line in text.splitlines()[1:] if line.strip()}


def _devnum(device: Any) -> tuple[int, int] | None:
    num = int(device.device_number)
    return (os.major(num), os.minor(num)) if num else None


def _holders(device: Any) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(device.sys_path, "holders")))
    except OSError:
        return []


def usage_lines(dev: Any, parts: list[Any], mounts: Mounts, swap_paths: set[str]) -> list[str]:
    usage: list[str] = []
    for d in (dev, *sorted(parts, key=lambda p: str(p.sys_name))):
        name = str(d.sys_name)
        for mp in mounts.mountpoints(_devnum(d), d.device_node):
            usage.append(f"{name} mounted at {mp}")
        holders = _holders(d)
        if holders:
            usage.append(f"{name} held by {', '.join(holders)}")
        if d.device_node in swap_paths:
            usage.append(f"{name} is active swap")
    return usage


def _exclusive_claims(devices: list[Any]) -> list[str]:
    """Devices the kernel holds exclusively although nothing above explained it.

    An ``O_EXCL`` open of a block device node fails with EBUSY while the
    kernel has it claimed, e.g. mounted in another mount namespace that this
    process's mountinfo does not show.
    """
    found: list[str] = []
    for d in devices:
        node = d.device_node
        if not node:
            continue
        try:
            if os.stat(node).st_rdev != int(d.device_number):
                continue  # a node of that name that is not this device
            # (a claim left open by Ctrl-C would make the device look claimed from then on)
            opens(node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno_mod.EBUSY:
                found.append(
                    f"{d.sys_name} is claimed exclusively by the kernel (O_EXCL open gives EBUSY): "
                    "mounted in another mount namespace, or held by a driver"
                )
    return found


def current_usage(
    name: str,
    context: Any | None = None,
    *,
    mountinfo: str | None = None,
    swaps: str | None = None,
    exclusive: bool = True,
) -> list[str]:
    """What uses the disk *name* and its partitions right now: mounts, holders, swap.

    The report's ``BlockDevice.usage`` is what the probe saw, which may be
    old (a cached report, a mount since); a decision that must not be wrong
    (passthrough writes bypass any filesystem) asks here at that moment.
    With *exclusive*, a disk nothing else explains is also tried with an
    ``O_EXCL`` open (EBUSY: claimed where this process cannot see it).
    Raises ``FileNotFoundError`` when there is no such disk.
    """
    ctx = context if context is not None else udev_context()
    try:
        dev = pyudev.Devices.from_name(ctx, "block", name)
    except pyudev.DeviceNotFoundError as exc:
        raise FileNotFoundError(errno_mod.ENOENT, f"no block device {name!r}", name) from exc
    parts = [p for p in ctx.list_devices(subsystem="block", DEVTYPE="partition") if p.parent == dev]
    mounts = parse_mountinfo(mountinfo if mountinfo is not None else read_attr(MOUNTINFO) or "")
    swap_paths = parse_swaps(swaps if swaps is not None else read_attr(SWAPS) or "")
    usage = usage_lines(dev, parts, mounts, swap_paths)
    if exclusive and not usage:
        usage = _exclusive_claims([dev, *parts])
    return usage
