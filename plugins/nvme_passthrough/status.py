"""NVMe completion status decoding and the exception it becomes.

For ``IORING_OP_URING_CMD`` on an NVMe generic char device the CQE's ``res``
is ``-errno`` when the kernel failed the request itself, and a positive value
when the controller completed it with an error.  That positive value is the
Linux driver's view of the completion queue entry's status field with the
phase bit shifted out (``le16_to_cpu(cqe->status) >> 1``)::

    bits  7:0  SC   status code
    bits 10:8  SCT  status code type
    bits 12:11 CRD  command retry delay
    bit  13    M    more (error log page has details)
    bit  14    DNR  do not retry

Names follow the NVMe Base Specification 2.0 (figures "Generic Command
Status Values", "Command Specific Status Values", "Media and Data Integrity
Errors", "Path Related Status") and the NVM Command Set Specification for
the I/O-command codes 0x80 and up.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from uringstack.errors import UringIOError

SCT_GENERIC = 0x0
SCT_COMMAND_SPECIFIC = 0x1
SCT_MEDIA = 0x2
SCT_PATH = 0x3
SCT_VENDOR = 0x7

SCT_NAMES: dict[int, str] = {
    SCT_GENERIC: "Generic Command Status",
    SCT_COMMAND_SPECIFIC: "Command Specific Status",
    SCT_MEDIA: "Media and Data Integrity Error",
    SCT_PATH: "Path Related Status",
    SCT_VENDOR: "Vendor Specific",
}

GENERIC_STATUS: dict[int, str] = {
    0x00: "Successful Completion",
    0x01: "Invalid Command Opcode",
    0x02: "Invalid Field in Command",
    0x03: "Command ID Conflict",
    0x04: "Data Transfer Error",
    0x05: "Commands Aborted due to Power Loss Notification",
    0x06: "Internal Error",
    0x07: "Command Abort Requested",
    0x08: "Command Aborted due to SQ Deletion",
    0x09: "Command Aborted due to Failed Fused Command",
    0x0A: "Command Aborted due to Missing Fused Command",
    0x0B: "Invalid Namespace or Format",
    0x0C: "Command Sequence Error",
    0x0D: "Invalid SGL Segment Descriptor",
    0x0E: "Invalid Number of SGL Descriptors",
    0x0F: "Data SGL Length Invalid",
    0x10: "Metadata SGL Length Invalid",
    0x11: "SGL Descriptor Type Invalid",
    0x12: "Invalid Use of Controller Memory Buffer",
    0x13: "PRP Offset Invalid",
    0x14: "Atomic Write Unit Exceeded",
    0x15: "Operation Denied",
    0x16: "SGL Offset Invalid",
    0x18: "Host Identifier Inconsistent Format",
    0x19: "Keep Alive Timer Expired",
    0x1A: "Keep Alive Timeout Invalid",
    0x1B: "Command Aborted due to Preempt and Abort",
    0x1C: "Sanitize Failed",
    0x1D: "Sanitize In Progress",
    0x1E: "SGL Data Block Granularity Invalid",
    0x1F: "Command Not Supported for Queue in CMB",
    0x20: "Namespace is Write Protected",
    0x21: "Command Interrupted",
    0x22: "Transient Transport Error",
    0x23: "Command Prohibited by Command and Feature Lockdown",
    0x24: "Admin Command Media Not Ready",
    # NVM command set (I/O commands)
    0x80: "LBA Out of Range",
    0x81: "Capacity Exceeded",
    0x82: "Namespace Not Ready",
    0x83: "Reservation Conflict",
    0x84: "Format In Progress",
}

COMMAND_SPECIFIC_STATUS: dict[int, str] = {
    0x00: "Completion Queue Invalid",
    0x01: "Invalid Queue Identifier",
    0x02: "Invalid Queue Size",
    0x03: "Abort Command Limit Exceeded",
    0x05: "Asynchronous Event Request Limit Exceeded",
    0x06: "Invalid Firmware Slot",
    0x07: "Invalid Firmware Image",
    0x08: "Invalid Interrupt Vector",
    0x09: "Invalid Log Page",
    0x0A: "Invalid Format",
    0x0B: "Firmware Activation Requires Conventional Reset",
    0x0C: "Invalid Queue Deletion",
    0x0D: "Feature Identifier Not Saveable",
    0x0E: "Feature Not Changeable",
    0x0F: "Feature Not Namespace Specific",
    0x10: "Firmware Activation Requires NVM Subsystem Reset",
    0x11: "Firmware Activation Requires Controller Level Reset",
    0x12: "Firmware Activation Requires Maximum Time Violation",
    0x13: "Firmware Activation Prohibited",
    0x14: "Overlapping Range",
    0x15: "Namespace Insufficient Capacity",
    0x16: "Namespace Identifier Unavailable",
    0x18: "Namespace Already Attached",
    0x19: "Namespace Is Private",
    0x1A: "Namespace Not Attached",
    0x1B: "Thin Provisioning Not Supported",
    0x1C: "Controller List Invalid",
    0x1D: "Device Self-test In Progress",
    0x1E: "Boot Partition Write Prohibited",
    0x1F: "Invalid Controller Identifier",
    0x20: "Invalid Secondary Controller State",
    0x21: "Invalid Number of Controller Resources",
    0x22: "Invalid Resource Identifier",
    0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
    0x24: "ANA Group Identifier Invalid",
    0x25: "ANA Attach Failed",
    # NVM command set (I/O commands)
    0x80: "Conflicting Attributes",
    0x81: "Invalid Protection Information",
    0x82: "Attempted Write to Read Only Range",
    0x83: "Command Size Limit Exceeded",
    # Zoned namespace command set
    0xB8: "Zone Boundary Error",
    0xB9: "Zone Is Full",
    0xBA: "Zone Is Read Only",
    0xBB: "Zone Is Offline",
    0xBC: "Zone Invalid Write",
    0xBD: "Too Many Active Zones",
    0xBE: "Too Many Open Zones",
    0xBF: "Invalid Zone State Transition",
}

MEDIA_STATUS: dict[int, str] = {
    0x80: "Write Fault",
    0x81: "Unrecovered Read Error",
    0x82: "End-to-end Guard Check Error",
    0x83: "End-to-end Application Tag Check Error",
    0x84: "End-to-end Reference Tag Check Error",
    0x85: "Compare Failure",
    0x86: "Access Denied",
    0x87: "Deallocated or Unwritten Logical Block",
    0x88: "End-to-End Storage Tag Check Error",
}

PATH_STATUS: dict[int, str] = {
    0x00: "Internal Path Error",
    0x01: "Asymmetric Access Persistent Loss",
    0x02: "Asymmetric Access Inaccessible",
    0x03: "Asymmetric Access Transition",
    0x60: "Controller Pathing Error",
    0x70: "Host Pathing Error",
    0x71: "Command Aborted By Host",
}

_TABLES: dict[int, dict[int, str]] = {
    SCT_GENERIC: GENERIC_STATUS,
    SCT_COMMAND_SPECIFIC: COMMAND_SPECIFIC_STATUS,
    SCT_MEDIA: MEDIA_STATUS,
    SCT_PATH: PATH_STATUS,
}

_DNR = 1 << 14
_MORE = 1 << 13


@dataclass(frozen=True)
class NvmeStatus:
    """A decoded NVMe completion status."""

    raw: int
    sct: int
    sc: int
    crd: int
    more: bool
    dnr: bool

    @property
    def ok(self) -> bool:
        """True for Successful Completion."""
        return self.sct == SCT_GENERIC and self.sc == 0

    @property
    def name(self) -> str:
        """The specification's name for (SCT, SC), or a description of an unknown code."""
        table = _TABLES.get(self.sct)
        if table is not None and self.sc in table:
            return table[self.sc]
        if self.sct == SCT_VENDOR:
            return f"Vendor Specific status 0x{self.sc:02x}"
        kind = SCT_NAMES.get(self.sct, f"status code type {self.sct}")
        return f"unknown {kind} 0x{self.sc:02x}"

    @property
    def retryable(self) -> bool:
        """Whether the controller allows a retry (the DNR bit is clear)."""
        return not self.dnr

    def describe(self) -> str:
        """One line: name, SCT/SC and the DNR/More bits."""
        bits = []
        if self.dnr:
            bits.append("DNR")
        if self.more:
            bits.append("More")
        if self.crd:
            bits.append(f"CRD={self.crd}")
        extra = f", {' '.join(bits)}" if bits else ""
        return (
            f"NVMe status 0x{self.raw:04x}: {self.name} "
            f"(SCT 0x{self.sct:x} {SCT_NAMES.get(self.sct, 'reserved')}, SC 0x{self.sc:02x}{extra})"
        )


def decode_status(raw: int) -> NvmeStatus:
    """Split a uring_cmd CQE result > 0 (the driver's NVMe status) into its fields."""
    if raw < 0:
        raise ValueError(f"{raw} is a -errno result, not an NVMe status")
    return NvmeStatus(
        raw=raw,
        sct=(raw >> 8) & 0x7,
        sc=raw & 0xFF,
        crd=(raw >> 11) & 0x3,
        more=bool(raw & _MORE),
        dnr=bool(raw & _DNR),
    )


def status_name(sct: int, sc: int) -> str:
    """Name of status code *sc* of type *sct*."""
    return decode_status(((sct & 0x7) << 8) | (sc & 0xFF)).name


class NvmeStatusError(UringIOError):
    """The controller completed an NVMe command with an error status.

    ``errno`` is EIO (as the block layer would report it); ``nvme_status`` is
    the decoded :class:`NvmeStatus`, ``lba`` the starting LBA of the failed
    command (None for Flush) and ``index`` the position in the batch of the op
    it belongs to (an op larger than one command carries is several commands).
    """

    def __init__(
        self,
        raw_status: int,
        op: str,
        filename: str | None = None,
        *,
        lba: int | None = None,
        index: int | None = None,
    ) -> None:
        self.nvme_status = decode_status(raw_status)
        where = []
        if lba is not None:
            where.append(f"LBA {lba}")
        if index is not None:
            where.append(f"op {index} of the batch")
        detail = self.nvme_status.describe()
        if where:
            detail += " at " + ", ".join(where)
        super().__init__(errno.EIO, op, filename, detail)
        self.lba = lba
        self.index = index

    @property
    def status_name(self) -> str:
        """The specification's name of the status (e.g. ``"LBA Out of Range"``)."""
        return self.nvme_status.name
