"""io_uring flag and opcode names, with the values of the installed headers."""

from __future__ import annotations

import enum

from uringstack.ring.native import lib
from uringstack.ring.opnames import FEATURE_NAMES, OPCODE_NAMES


class SetupFlag(enum.IntFlag):
    """``IORING_SETUP_*`` flags passed to ``io_uring_setup``."""

    IOPOLL = lib.IORING_SETUP_IOPOLL
    SQPOLL = lib.IORING_SETUP_SQPOLL
    SQ_AFF = lib.IORING_SETUP_SQ_AFF
    CQSIZE = lib.IORING_SETUP_CQSIZE
    CLAMP = lib.IORING_SETUP_CLAMP
    ATTACH_WQ = lib.IORING_SETUP_ATTACH_WQ
    R_DISABLED = lib.IORING_SETUP_R_DISABLED
    SUBMIT_ALL = lib.IORING_SETUP_SUBMIT_ALL
    COOP_TASKRUN = lib.IORING_SETUP_COOP_TASKRUN
    TASKRUN_FLAG = lib.IORING_SETUP_TASKRUN_FLAG
    SQE128 = lib.IORING_SETUP_SQE128
    CQE32 = lib.IORING_SETUP_CQE32
    SINGLE_ISSUER = lib.IORING_SETUP_SINGLE_ISSUER
    DEFER_TASKRUN = lib.IORING_SETUP_DEFER_TASKRUN


# Flags a probe tries one by one: the features a plan may ask for.
PROBED_SETUP_FLAGS: tuple[SetupFlag, ...] = (
    SetupFlag.SQPOLL,
    SetupFlag.IOPOLL,
    SetupFlag.SQE128,
    SetupFlag.CQE32,
    SetupFlag.SINGLE_ISSUER,
    SetupFlag.COOP_TASKRUN,
    SetupFlag.DEFER_TASKRUN,
)

# Flags that only tune behaviour: dropping them on EINVAL keeps a correct ring
# (fio drops them too).  SQE128/CQE32/IOPOLL/SQPOLL change what the ring can
# carry, so dropping them is recorded and the plan decides whether that is fatal.
OPTIONAL_SETUP_FLAGS = (
    SetupFlag.SINGLE_ISSUER
    | SetupFlag.COOP_TASKRUN
    | SetupFlag.TASKRUN_FLAG
    | SetupFlag.DEFER_TASKRUN
    | SetupFlag.SUBMIT_ALL
    | SetupFlag.CLAMP
)


class SqeFlag(enum.IntFlag):
    """``IOSQE_*`` per-submission flags."""

    FIXED_FILE = lib.IOSQE_FIXED_FILE
    IO_DRAIN = lib.IOSQE_IO_DRAIN
    IO_LINK = lib.IOSQE_IO_LINK
    IO_HARDLINK = lib.IOSQE_IO_HARDLINK
    ASYNC = lib.IOSQE_ASYNC


class Op(enum.IntEnum):
    """The opcodes uringstack submits (kernel ``IORING_OP_*`` numbers)."""

    NOP = lib.US_OP_NOP
    READV = lib.US_OP_READV
    WRITEV = lib.US_OP_WRITEV
    FSYNC = lib.US_OP_FSYNC
    READ_FIXED = lib.US_OP_READ_FIXED
    WRITE_FIXED = lib.US_OP_WRITE_FIXED
    ASYNC_CANCEL = lib.US_OP_ASYNC_CANCEL
    READ = lib.US_OP_READ
    WRITE = lib.US_OP_WRITE
    URING_CMD = lib.US_OP_URING_CMD


def opcode_name(number: int) -> str:
    """Name of an ``IORING_OP_*`` number, or ``OP_<n>`` for one newer than our table."""
    return OPCODE_NAMES[number] if 0 <= number < len(OPCODE_NAMES) else f"OP_{number}"


def feature_names(bits: int) -> list[str]:
    """Names of the ``IORING_FEAT_*`` bits set in *bits* (unknown bits as ``BIT_<n>``)."""
    names = []
    for bit in range(64):
        if bits & (1 << bit):
            names.append(FEATURE_NAMES.get(1 << bit, f"BIT_{bit}"))
    return names


FSYNC_DATASYNC: int = lib.IORING_FSYNC_DATASYNC
