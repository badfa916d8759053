"""The capability report: one pydantic model of what this machine can do.

Produced by :func:`uringstack.probe.probe` and consumed by every plugin when
it plans; printable as a table (``uringstack probe``) or JSON (``--json``) and
cacheable (it round-trips through ``model_dump_json``/``model_validate_json``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from uringstack.probe.defects import DefectFinding, ruling_out
from uringstack.probe.tuning import TuneState

UringBlocker = Literal["none", "not_linux", "enosys", "sysctl_disabled", "seccomp", "eperm", "enomem", "other"]


class FlagSupport(BaseModel):
    """Whether the kernel accepted one setup flag when a ring was created with it."""

    model_config = ConfigDict(frozen=True)

    accepted: bool
    errno: int = 0
    error: str = ""


class UringSupport(BaseModel):
    """Whether io_uring can be used by this process, and exactly why not."""

    usable: bool
    blocker: UringBlocker = "none"
    reason: str = ""
    io_uring_disabled_sysctl: int | None = None
    features: list[str] = Field(default_factory=list)
    feature_bits: int = 0
    opcodes: list[str] = Field(default_factory=list)
    opcode_error: str = ""
    """Why ``opcodes`` is unknown (the opcode table could not be read); empty when it was read.
    An unread table is never "no opcodes"."""
    setup_flags: dict[str, FlagSupport] = Field(default_factory=dict)

    def accepts(self, flag_name: str) -> bool:
        """True when the kernel accepted the setup flag *flag_name* (e.g. ``"SQPOLL"``)."""
        support = self.setup_flags.get(flag_name)
        return bool(self.usable and support is not None and support.accepted)

    def supports_op(self, opcode_name: str) -> bool:
        return self.usable and opcode_name in self.opcodes


class MemlockInfo(BaseModel):
    """RLIMIT_MEMLOCK in bytes; -1 means unlimited.

    ``cap_ipc_lock``: the process has CAP_IPC_LOCK, so pinned (registered)
    buffers are not charged against the limit.
    """

    soft_bytes: int
    hard_bytes: int
    cap_ipc_lock: bool = False
    rings_charged: bool | None = None
    """Whether this kernel charges a ring's own memory (SQEs, CQEs) to RLIMIT_MEMLOCK for this
    process: a 4-entry ring made under a soft limit of 0 failed with ENOMEM (6.18 does; 6.1
    does not).  ``None``: not measured (CAP_IPC_LOCK exempts the process, an unlimited limit,
    or io_uring unusable)."""
    no_room_for: dict[str, str] = Field(default_factory=dict)
    """Set by the plan, not measured: features in ``auto`` whose extra rings (``ring_roles``)
    do not fit the charged limit beside the storage rings, each with the reason.  Their
    verdict is "disabled" (:class:`uringstack.feature.Feature` honours it), so ``auto``
    builds the stack without them instead of failing (``uringstack.plan.fit_extra_rings_to_memlock``)."""

    def allows(self, nbytes: int) -> bool:
        return self.soft_bytes < 0 or nbytes <= self.soft_bytes


class NofileInfo(BaseModel):
    """RLIMIT_NOFILE, soft and hard; -1 means unlimited.

    The kernel refuses a registered file table with more slots than the soft
    limit (``io_uring_register_files``: EMFILE), so the limit bounds the
    fixed-file slots a ring can have, besides the descriptors a process may open.
    """

    soft: int
    hard: int


class CpuInfo(BaseModel):
    """CPUs this process may run on and the machine's NUMA layout."""

    online: list[int]
    allowed: list[int]
    numa_nodes: dict[int, list[int]] = Field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.allowed)


class BlockDevice(BaseModel):
    """One block device or NVMe namespace as seen through udev/sysfs."""

    name: str
    path: str
    model: str = ""
    size_bytes: int = 0
    logical_block_size: int = 512
    physical_block_size: int = 512
    max_hw_sectors_kb: int | None = None
    """``queue/max_hw_sectors_kb``: the largest request the driver takes (None: unknown)."""
    max_segments: int | None = None
    """``queue/max_segments``: scatter-gather segments per request (None: unknown)."""
    rotational: bool = False
    io_poll: bool = False
    io_poll_reason: str = ""
    nvme: bool = False
    controller: str | None = None
    nsid: int | None = None
    poll_queues: int | None = None
    generic_char: str | None = None
    generic_char_accessible: bool = False
    generic_char_error: str = ""
    in_use: bool = False
    usage: list[str] = Field(default_factory=list)
    partitions: list[str] = Field(default_factory=list)
    irq_cpus: list[int] = Field(default_factory=list)
    """CPUs that receive this device's completion interrupts (empty: unknown)."""


class Capabilities(BaseModel):
    """Everything the probe found.  Plugins read it; nothing in it is guessed."""

    schema_version: int = 5
    kernel_release: str
    kernel_debian_version: str | None = None
    """The Debian kernel package version from ``/proc/version`` (``6.1.192-3``), if any."""
    kernel_defects: list[DefectFinding] = Field(default_factory=list)
    """Known defects of this kernel (:mod:`uringstack.probe.defects`): patterns not to use."""
    kernel_version_note: str = ""
    """What the defect matching could not read about the kernel's version and what it used
    instead (:func:`uringstack.probe.defects.version_note`); empty when nothing was missing."""
    system: str
    python: str
    uring: UringSupport
    memlock: MemlockInfo
    nofile: NofileInfo
    cpus: CpuInfo
    devices: list[BlockDevice] = Field(default_factory=list)
    device_scan_error: str = ""
    environment: dict[str, str] = Field(default_factory=dict)
    """The process environment the report was taken in (seccomp, io_uring sysctls, limits,
    capabilities, CPU mask, ids, boot; :func:`uringstack.probe.kernel.process_environment`):
    a cached report is reused only where it is the same."""
    extras: dict[str, Any] = Field(default_factory=dict)
    tuning: TuneState | None = None
    """Measurements from ``uringstack tune`` that hold here (docs/tune.md); ``None`` until the
    plan looks them up.  Not a probe result: the probe never measures."""

    def defect_ruling_out(self, pattern: str, accepted: list[str] | tuple[str, ...] = ()) -> DefectFinding | None:
        """The known defect of this kernel that rules out *pattern*, unless its id is in *accepted*."""
        return ruling_out(self.kernel_defects, pattern, accepted)

    def usage_now(self, device: BlockDevice) -> list[str]:
        """What uses *device* (or a partition of it) at this moment: mounts, holders, swap.

        ``device.usage`` is what the probe saw when the report was made, which
        may be a cached report; a decision that must not be stale (NVMe
        passthrough writes bypass any filesystem on the namespace) asks here.
        Read through :mod:`uringstack.probe.usage`, the probe's own reader.
        """
        from uringstack.probe.usage import current_usage

        return current_usage(device.name)

    def device_for_path(self, path: str) -> BlockDevice | None:
        """The probed device whose node (block or generic char) is *path*."""
        for dev in self.devices:
            if path in (dev.path, dev.generic_char):
                return dev
        return None
