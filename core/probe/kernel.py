"""Facts about the running kernel and this process that decide whether io_uring may be used.

Nothing here creates a ring: these are the *explanations* the uring probe needs
when ``io_uring_setup`` fails (which sysctl, which seccomp state, which
capabilities and groups this process has).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

# Capability bit numbers from <linux/capability.h>.
CAP_IPC_LOCK = 14
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24

_SYSCTL_DISABLED = Path("/proc/sys/kernel/io_uring_disabled")
_SYSCTL_GROUP = Path("/proc/sys/kernel/io_uring_group")
_PROC_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class ProcessStatus:
    """The lines of ``/proc/self/status`` the probe interprets.

    ``seccomp_mode`` is 0 (none), 1 (strict) or 2 (filter); ``seccomp_filters``
    counts installed filters (``Seccomp_filters:``, Linux 5.9+; ``None`` when
    the kernel does not print it).  ``cap_eff`` is the effective capability mask.
    ``threads`` (``Threads:``) and ``real_uid`` (the first ``Uid:`` field, the one
    RLIMIT_NPROC counts tasks under) serve the thread-limit check
    (:mod:`uringstack.probe.threadlimits`); ``None`` where the file lacks them.
    """

    seccomp_mode: int = 0
    seccomp_filters: int | None = None
    cap_eff: int = 0
    threads: int | None = None
    real_uid: int | None = None

    def has_cap(self, bit: int) -> bool:
        """True when capability number *bit* is in the effective set."""
        return bool(self.cap_eff >> bit & 1)

    @property
    def seccomp_filtered(self) -> bool:
        """True when at least one seccomp filter can return an errno for our syscalls."""
        return self.seccomp_mode == 2 or bool(self.seccomp_filters)


@dataclass(frozen=True)
class KernelFacts:
    """Everything :func:`uringstack.probe.uring.classify` needs, injectable for tests."""

    system: str
    release: str
    io_uring_disabled: int | None = None
    io_uring_group: int | None = None
    status: ProcessStatus = field(default_factory=ProcessStatus)
    gids: frozenset[int] = frozenset()


def parse_process_status(text: str) -> ProcessStatus:
    """Parse the ``Seccomp``, ``Seccomp_filters``, ``CapEff``, ``Threads`` and ``Uid`` lines of a status file."""
    mode = 0
    filters: int | None = None
    cap_eff = 0
    threads: int | None = None
    real_uid: int | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Seccomp":
            mode = int(value)
        elif key == "Seccomp_filters":
            filters = int(value)
        elif key == "CapEff":
            cap_eff = int(value, 16)
        elif key == "Threads":
            threads = int(value)
        elif key == "Uid":
            real_uid = int(value.split()[0])
    return ProcessStatus(
        seccomp_mode=mode, seccomp_filters=filters, cap_eff=cap_eff, threads=threads, real_uid=real_uid
    )


def _read_int(path: Path) -> int | None:
    # Absent file = the kernel predates the knob (io_uring_disabled is 6.6+).
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_process_status(path: Path = _PROC_STATUS) -> ProcessStatus:
    """This process's seccomp state and capabilities (all zero where unreadable)."""
    try:
        return parse_process_status(path.read_text())
    except OSError:
        return ProcessStatus()


def kernel_facts() -> KernelFacts:
    """Collect the facts for this process on this machine."""
    system = platform.system()
    if system != "Linux":
        return KernelFacts(system=system, release=platform.release())
    return KernelFacts(
        system=system,
        release=platform.release(),
        io_uring_disabled=_read_int(_SYSCTL_DISABLED),
        io_uring_group=_read_int(_SYSCTL_GROUP),
        status=read_process_status(),
        gids=frozenset({os.getegid(), *os.getgroups()}),
    )


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_CPU_ONLINE = Path("/sys/devices/system/cpu/online")


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "unreadable"


def process_environment() -> dict[str, str]:
    """The facts of this process's environment that a probe report depends on, as text.

    ``probe_cached`` reuses a report only where these are all equal: a report taken
    in an unrestricted shell says nothing about a process under seccomp, after
    ``sysctl kernel.io_uring_disabled=2``, or with another RLIMIT_MEMLOCK, CPU mask,
    capability set or user.  Cheap on purpose (a few /proc reads and getrlimit
    calls): it is what a cache saves a probe for.  A seccomp filter is known by mode
    and count only, as its program cannot be read without CAP_SYS_ADMIN.
    """
    import resource

    status = read_process_status()
    try:
        allowed = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # (not Linux)
        allowed = "unknown"
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "boot_id": _read_text(_BOOT_ID),
        "seccomp": f"mode {status.seccomp_mode}, filters {status.seccomp_filters}",
        "io_uring_disabled": _read_text(_SYSCTL_DISABLED),
        "io_uring_group": _read_text(_SYSCTL_GROUP),
        "rlimit_memlock": f"{memlock[0]} {memlock[1]}",
        "rlimit_nofile": f"{nofile[0]} {nofile[1]}",
        "cap_eff": f"{status.cap_eff:016x}",
        "cpus_allowed": allowed,
        "cpus_online": _read_text(_CPU_ONLINE),
        "uids": f"{os.getuid()} {os.geteuid()}",
        "gids": f"{os.getgid()} {os.getegid()} groups " + ",".join(str(g) for g in sorted(os.getgroups())),
    }
