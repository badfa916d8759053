"""Block devices and NVMe namespaces as udev sees them, for IOPOLL and passthrough plans.

Everything comes from pyudev (sysfs + the udev database) so the same code runs
against a real machine and against a umockdev test bed.  The generic char
device ``/dev/ngXnY`` of a namespace is found by its parent device (controller,
or subsystem for a multipath head) plus the namespace id — never by its name:
with CONFIG_NVME_MULTIPATH the block device is numbered by *subsystem*
(``nvme<subsys>n<head>``) while the char device is numbered by *controller*
(``ng<ctrl>n<head>``), and ``<head>`` is an instance number, not the NSID.
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uringstack.probe.blockdev import read_attr
from uringstack.probe.irq import device_irq_cpus
from uringstack.probe.model import BlockDevice
from uringstack.probe.udev import udev_context
from uringstack.probe.usage import MOUNTINFO, SWAPS, Mounts, parse_mountinfo, parse_swaps, usage_lines
from uringstack.ring.interrupts import with_descriptor

_MODULE_DIR = Path("/sys/module")

# _IO('N', 0x40) from <linux/nvme_ioctl.h>: returns the namespace id of an open
# namespace (block or generic char).  The ngXnY sysfs directory has no ``nsid``
# attribute (nvme_cdev_add registers it without attribute groups), so on real
# hardware this ioctl is how a char device's NSID is learnt.
NVME_IOCTL_ID = 0x4E40

_NVME_PARENTS = ("nvme", "nvme-subsystem")


def read_module_param(module: str, param: str, module_dir: Path = _MODULE_DIR) -> int | None:
    """Integer module parameter from sysfs, ``None`` when the module or parameter is absent."""
    text = read_attr(module_dir / module / "parameters" / param)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _errtext(exc: OSError) -> str:
    name = errno_mod.errorcode.get(exc.errno or 0, "error")
    return f"{name}: {exc.strerror}"


def namespace_id(fd: int) -> int:
    """The NVMe namespace id of the open namespace *fd* (block or generic char), by ``NVME_IOCTL_ID``.

    Raises ``OSError`` (ENOTTY) when *fd* is not an NVMe namespace.
    """
    return int(fcntl.ioctl(fd, NVME_IOCTL_ID))


def try_open(path: str) -> tuple[bool, str, int | None]:
    """Open *path* read-only as this process; return (ok, error text, NSID via ioctl or None).

    Opening is the only honest test of access: mode bits do not show ACLs,
    LSMs or device cgroups.  The NSID ioctl fails harmlessly on anything
    that is not an NVMe namespace (ENOTTY on a umockdev file).
    """
    try:
        nsid = with_descriptor(path, os.O_RDONLY | os.O_CLOEXEC, _namespace_id_or_none)
    except OSError as exc:
        return False, _errtext(exc), None
    return True, "", nsid


def _namespace_id_or_none(fd: int) -> int | None:
    try:
        return namespace_id(fd)
    except OSError:
        return None


def _attr(device: Any, name: str) -> str | None:
    value = device.attributes.get(name)
    if value is None:
        return None
    return bytes(value).decode(errors="replace").strip()


def _attr_int(device: Any, name: str) -> int | None:
    text = _attr(device, name)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _driver(device: Any) -> str:
    """Driver of the nearest ancestor that has one (virtio_blk, nvme, ...)."""
    for dev in (device, *device.ancestors):
        if dev.driver:
            return str(dev.driver)
    return ""


def _nvme_parent(device: Any) -> Any | None:
    parent = device.parent
    if parent is not None and parent.subsystem in _NVME_PARENTS:
        return parent
    return None


@dataclass
class GenericChar:
    """One ``nvme-generic`` char device and what this process can do with it."""

    name: str
    node: str
    parent_sys_path: str
    nsid: int | None
    accessible: bool
    error: str


def scan_generic_chars(context: Any) -> list[GenericChar]:
    """Every ``/dev/ngXnY`` with its parent, NSID (attribute, else ioctl) and access."""
    chars: list[GenericChar] = []
    for dev in context.list_devices(subsystem="nvme-generic"):
        node = dev.device_node
        if node is None or dev.parent is None:
            continue
        ok, error, ioctl_nsid = try_open(node)
        nsid = _attr_int(dev, "nsid")
        if nsid is None:
            nsid = ioctl_nsid
        chars.append(GenericChar(dev.sys_name, node, dev.parent.sys_path, nsid, ok, error))
    return chars


def _io_poll_reason(
    io_poll: int | None,
    nvme: bool,
    driver: str,
    nvme_poll_queues: int | None,
    virtio_poll_queues: int | None,
) -> str:
    if io_poll == 1:
        return ""
    if io_poll is None:
        return "this kernel has no queue/io_poll attribute for the device"
    if nvme:
        if nvme_poll_queues is None:
            return "no poll queues (nvme module parameter poll_queues not readable)"
        if nvme_poll_queues == 0:
            return "no poll queues (nvme poll_queues=0)"
        return (
            f"io_poll=0 although nvme poll_queues={nvme_poll_queues}: the controller "
            "was probed before the setting (reset it) or this is a multipath head"
        )
    if driver == "virtio_blk":
        if virtio_poll_queues:
            return f"io_poll=0 although virtio_blk poll_queues={virtio_poll_queues}"
        return "virtio-blk has no poll queues (virtio_blk poll_queues=0)"
    if driver:
        return f"driver {driver} has no poll queues"
    return "no poll queues (virtual device without a polling driver)"


def scan_block_devices(
    context: Any | None = None,
    *,
    mountinfo: str | None = None,
    swaps: str | None = None,
    module_dir: Path = _MODULE_DIR,
) -> list[BlockDevice]:
    """All whole-disk block devices and NVMe namespaces, with poll and usage facts.

    *mountinfo*/*swaps* default to this process's ``/proc`` files; tests pass
    text.  Devices without a node (hidden multipath path disks ``nvmeXcYnZ``)
    and unattached loop devices are left out: nothing can be opened there.
    """
    ctx = context if context is not None else udev_context()
    mounts = parse_mountinfo(mountinfo if mountinfo is not None else read_attr(MOUNTINFO) or "")
    swap_paths = parse_swaps(swaps if swaps is not None else read_attr(SWAPS) or "")
    nvme_pq = read_module_param("nvme", "poll_queues", module_dir)
    virtio_pq = read_module_param("virtio_blk", "poll_queues", module_dir)

    partitions: dict[str, list[Any]] = defaultdict(list)
    for part in ctx.list_devices(subsystem="block", DEVTYPE="partition"):
        if part.parent is not None:
            partitions[part.parent.sys_path].append(part)

    chars = scan_generic_chars(ctx)
    by_key = {(c.parent_sys_path, c.nsid): c for c in chars if c.nsid is not None}
    unresolved: dict[str, list[GenericChar]] = defaultdict(list)
    for c in chars:
        if c.nsid is None:
            unresolved[c.parent_sys_path].append(c)

    disks = [d for d in ctx.list_devices(subsystem="block", DEVTYPE="disk") if d.device_node]
    namespaces_per_parent: dict[str, int] = defaultdict(int)
    for d in disks:
        parent = _nvme_parent(d)
        if parent is not None:
            namespaces_per_parent[parent.sys_path] += 1

    result: list[BlockDevice] = []
    for dev in sorted(disks, key=lambda d: str(d.sys_name)):
        size_bytes = (_attr_int(dev, "size") or 0) * 512
        if dev.sys_name.startswith("loop") and size_bytes == 0:
            continue  # unattached loop device
        parent = _nvme_parent(dev)
        driver = _driver(dev)
        nvme = parent is not None or driver == "nvme"
        io_poll = _attr_int(dev, "queue/io_poll")
        bd = BlockDevice(
            name=dev.sys_name,
            path=dev.device_node,
            model=_model(dev, parent, driver),
            size_bytes=size_bytes,
            logical_block_size=_attr_int(dev, "queue/logical_block_size") or 512,
            max_hw_sectors_kb=_attr_int(dev, "queue/max_hw_sectors_kb"),
            max_segments=_attr_int(dev, "queue/max_segments"),
            physical_block_size=_attr_int(dev, "queue/physical_block_size") or 512,
            rotational=_attr_int(dev, "queue/rotational") == 1,
            io_poll=io_poll == 1,
            io_poll_reason=_io_poll_reason(io_poll, nvme, driver, nvme_pq, virtio_pq),
            nvme=nvme,
            controller=parent.sys_name if parent is not None else None,
            nsid=_attr_int(dev, "nsid") if nvme else None,
            poll_queues=nvme_pq if nvme else virtio_pq if driver == "virtio_blk" else None,
            partitions=sorted(p.sys_name for p in partitions.get(dev.sys_path, [])),
            irq_cpus=device_irq_cpus(dev.sys_name),
        )
        if parent is not None:
            _attach_generic_char(bd, parent.sys_path, by_key, unresolved, namespaces_per_parent)
        _fill_usage(bd, dev, partitions.get(dev.sys_path, []), mounts, swap_paths)
        result.append(bd)
    return result


def _model(dev: Any, parent: Any | None, driver: str) -> str:
    model = dev.properties.get("ID_MODEL")
    if model:
        return str(model).replace("_", " ")
    if parent is not None:  # NVMe controller or subsystem: both carry ``model``
        text = _attr(parent, "model")
        if text:
            return text
    device_model = _attr(dev, "device/model")
    if device_model:
        return device_model
    return {"virtio_blk": "virtio-blk"}.get(driver, "")


def _attach_generic_char(
    bd: BlockDevice,
    parent_sys_path: str,
    by_key: dict[tuple[str, int], GenericChar],
    unresolved: dict[str, list[GenericChar]],
    namespaces_per_parent: dict[str, int],
) -> None:
    match = by_key.get((parent_sys_path, bd.nsid)) if bd.nsid is not None else None
    if match is None:
        pending = unresolved.get(parent_sys_path, [])
        if len(pending) == 1 and namespaces_per_parent[parent_sys_path] == 1:
            # One namespace and one char device of unknown NSID under the same
            # parent: they can only belong together (a count, not a name).
            match = pending[0]
        elif pending:
            names = ", ".join(c.name for c in pending)
            bd.generic_char_error = (
                f"cannot tell which of {names} is this namespace: their NSID is unknown "
                f"({pending[0].error or 'NVME_IOCTL_ID failed'})"
            )
            return
    if match is None:
        bd.generic_char_error = "no generic char device (kernel older than 5.13?)"
        return
    bd.generic_char = match.node
    bd.generic_char_accessible = match.accessible
    bd.generic_char_error = match.error


def _fill_usage(bd: BlockDevice, dev: Any, parts: list[Any], mounts: Mounts, swap_paths: set[str]) -> None:
    bd.usage = usage_lines(dev, parts, mounts, swap_paths)
    bd.in_use = bool(bd.usage)
