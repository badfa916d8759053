"""Locked-memory and open-file limits, CPUs and NUMA nodes: what a plan may pin and register."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from uringstack.probe.kernel import CAP_IPC_LOCK, read_process_status
from uringstack.probe.model import CpuInfo, MemlockInfo, NofileInfo

_CPU_ONLINE = Path("/sys/devices/system/cpu/online")
_NODE_DIR = Path("/sys/devices/system/node")


def parse_cpulist(text: str) -> list[int]:
    """Parse the kernel's cpulist format (``"0-3,8,10-11"``) into sorted CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(lo))
    return sorted(cpus)


def memlock_info() -> MemlockInfo:
    """RLIMIT_MEMLOCK (soft, hard; -1 = unlimited) and whether CAP_IPC_LOCK lifts it.

    Registered buffers are pinned pages charged to RLIMIT_MEMLOCK unless the
    process has CAP_IPC_LOCK, so both facts decide whether a pool fits.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    return MemlockInfo(
        soft_bytes=-1 if soft == inf else soft,
        hard_bytes=-1 if hard == inf else hard,
        cap_ipc_lock=read_process_status().has_cap(CAP_IPC_LOCK),
    )


def nofile_info() -> NofileInfo:
    """RLIMIT_NOFILE (soft, hard; -1 = unlimited): the most fixed-file slots a ring may register."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return NofileInfo(soft=-1 if soft == inf else soft, hard=-1 if hard == inf else hard)


def numa_nodes(node_dir: Path = _NODE_DIR) -> dict[int, list[int]]:
    """NUMA node number -> its CPUs, from ``/sys/devices/system/node/nodeN/cpulist``."""
    nodes: dict[int, list[int]] = {}
    try:
        entries = sorted(node_dir.iterdir())
    except OSError:
        return nodes  # kernel without CONFIG_NUMA: no node directory at all
    for entry in entries:
        suffix = entry.name.removeprefix("node")
        if suffix == entry.name or not suffix.isdigit():
            continue
        try:
            nodes[int(suffix)] = parse_cpulist((entry / "cpulist").read_text())
        except OSError:
            nodes[int(suffix)] = []
    return nodes


def cpu_info(online_path: Path = _CPU_ONLINE, node_dir: Path = _NODE_DIR) -> CpuInfo:
    """Online CPUs (sysfs), CPUs this process may run on (affinity) and NUMA nodes."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        online = parse_cpulist(online_path.read_text())
    except OSError:
        online = allowed  # no sysfs (some containers): affinity is the best we know
    return CpuInfo(online=online, allowed=allowed, numa_nodes=numa_nodes(node_dir))
