"""Parameters of one ring, and ring creation with fio-style flag fallback.

A setup flag the running kernel does not know makes ``io_uring_setup`` fail
with EINVAL.  Like fio, we then drop the newest optional flag and retry, and
record what was dropped so the plan can say so; a flag the caller marked as
required is never dropped silently (the error is raised instead).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import Any

from uringstack.errors import RingSetupError
from uringstack.ring.flags import OPTIONAL_SETUP_FLAGS, SetupFlag
from uringstack.ring.kernel import MAX_CQ_ENTRIES, MAX_SQ_ENTRIES, SYSCALL_NAMES, RingProbe
from uringstack.ring.native import ffi, lib

# Order in which flags are given up on EINVAL: newest kernel feature first.
_DROP_ORDER: tuple[SetupFlag, ...] = (
    SetupFlag.DEFER_TASKRUN,
    SetupFlag.SINGLE_ISSUER,
    SetupFlag.TASKRUN_FLAG,
    SetupFlag.COOP_TASKRUN,
    SetupFlag.SUBMIT_ALL,
    SetupFlag.CQE32,
    SetupFlag.SQE128,
    SetupFlag.IOPOLL,
    SetupFlag.ATTACH_WQ,
    SetupFlag.SQ_AFF,
    SetupFlag.SQPOLL,
    SetupFlag.CLAMP,
)


_U32 = 2**32


def ring_name(core: int | None, role: str) -> str:
    """The plan's name of the *role* ring of the worker on CPU *core*: ``"core0/storage"``.

    The one spelling of a ring name: ``attach_to``, the plan and the stack
    all use it."""
    return f"core{core}/{role}"


def _cq_size(entries: int, cq_entries: int | None) -> int:
    """The CQ the kernel makes: *cq_entries* or twice the SQ, each rounded up to a power of two."""
    sq = 1 << (entries - 1).bit_length()
    return 1 << (cq_entries - 1).bit_length() if cq_entries is not None else 2 * sq


_PAGE = 4096
# struct io_rings up to its cache-line aligned cqes[] (heads, tails, masks, flags)
_RINGS_HEADER = 64


def ring_memory_pages(entries: int, flags: SetupFlag = SetupFlag(0), cq_entries: int | None = None) -> int:  # noqa: B008
    """Pages the kernel charges to RLIMIT_MEMLOCK for one ring, where it charges them at all.

    Kernels whose ring memory is a region (6.18; the probe finds out:
    ``caps.memlock.rings_charged``) charge a process without CAP_IPC_LOCK the
    pages of two regions: the rings (a header, the CQEs, and the SQ index
    array) and the SQEs, each rounded up to whole pages (io_uring's
    ``rings_size``).  Measured on 6.18 by the smallest RLIMIT_MEMLOCK that let a
    ring be made: 4 to 64 entries 2 pages, 128: 4, 256: 7, 512: 13, 1024: 26,
    4096: 101; 256 with SQE128: 11, with CQE32: 9 (tests/ring/test_ring_memory.py).
    """
    sq = 1 << (max(entries, 1) - 1).bit_length()
    cq = _cq_size(entries, cq_entries if flags & SetupFlag.CQSIZE else None)
    cqe = 32 if flags & SetupFlag.CQE32 else 16
    sqe = 128 if flags & SetupFlag.SQE128 else 64
    rings = _RINGS_HEADER + cq * cqe
    rings = -(-rings // 64) * 64 + sq * 4  # the SQ array, after a cache-line aligned CQ
    return -(-rings // _PAGE) + -(-sq * sqe // _PAGE)


@dataclass
class RingParams:
    """What one ring is built with; plugins adjust this before the ring exists.

    ``attach_to`` names another ring of the plan (``"core0/storage"``) whose
    SQPOLL thread and io-wq this ring shares (IORING_SETUP_ATTACH_WQ); the
    stack resolves it to ``wq_fd`` when it builds the rings.
    ``role`` names what the ring carries (``"storage"``, ``"iopoll"``,
    ``"passthrough"``); ``required`` holds the flags without which the ring is
    useless for its role (never dropped on EINVAL); ``reasons`` collects one
    line per plugin decision so the plan can explain itself.
    """

    entries: int = 256
    flags: SetupFlag = SetupFlag(0)  # noqa: RUF009 - IntFlag values are immutable
    sq_thread_cpu: int | None = None
    sq_thread_idle_ms: int = 0
    wq_fd: int | None = None
    attach_to: str | None = None
    cq_entries: int | None = None
    role: str = "storage"
    core: int | None = None
    required: SetupFlag = SetupFlag(0)  # noqa: RUF009
    spin_us: int = 0
    max_in_flight: int | None = None
    """Most ops the ring keeps in flight, its queue depth: at most what the CQ holds, its
    entries less ``US_CQ_RESERVE``, which is also the bound when ``None`` (``Ring.cq_cap``).
    A larger batch streams through: each op goes to the kernel as a completion makes room."""
    reasons: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """This ring's name in the plan (:func:`ring_name`)."""
        return ring_name(self.core, self.role)

    def add(self, flag: SetupFlag, reason: str) -> None:
        """Set *flag* and record why."""
        self.flags |= flag
        self.reasons.append(reason)

    def problems(self) -> list[str]:
        """What the kernel would refuse in these parameters, or a CQ too small for one op
        of the ring's own (a batch on it failed with E2BIG), one sentence each (empty when fine).

        Checked before a ring is made: the kernel's one answer to any of
        these is EINVAL, which ring creation would take for an unknown
        optional flag, dropping flags over it and then blaming them."""
        found: list[str] = []

        def whole(value: object, lo: int, hi: int) -> bool:
            return type(value) is int and lo <= value <= hi

        if not whole(self.entries, 1, MAX_SQ_ENTRIES):
            found.append(f"entries={self.entries!r}: the kernel takes 1 to {MAX_SQ_ENTRIES}")
        if self.cq_entries is not None and not whole(self.cq_entries, 1, MAX_CQ_ENTRIES):
            found.append(f"cq_entries={self.cq_entries!r}: the kernel takes 1 to {MAX_CQ_ENTRIES}")
        elif self.cq_entries is not None and type(self.entries) is int and self.cq_entries < self.entries:
            found.append(
                f"cq_entries={self.cq_entries} is below entries={self.entries}: "
                "the kernel refuses a CQ smaller than the SQ"
            )
        elif whole(self.entries, 1, MAX_SQ_ENTRIES) and _cq_size(self.entries, self.cq_entries) <= lib.US_CQ_RESERVE:
            # (a 1-entry ring was made, and every batch on it then failed with E2BIG)
            found.append(
                f"entries={self.entries}, cq_entries={self.cq_entries}: a CQ of "
                f"{_cq_size(self.entries, self.cq_entries)} entries holds no op: the ring keeps "
                f"{lib.US_CQ_RESERVE} for the SQEs it adds itself (2 entries or more, or a larger cq_entries)"
            )
        if self.max_in_flight is not None and not whole(self.max_in_flight, 1, _U32 - 1):
            found.append(f"max_in_flight={self.max_in_flight!r}: a number of ops, 1 or more, or None")
        if not whole(self.sq_thread_idle_ms, 0, _U32 - 1):
            found.append(f"sq_thread_idle_ms={self.sq_thread_idle_ms!r}: milliseconds from 0 to {_U32 - 1}")
        if self.sq_thread_cpu is not None and not whole(self.sq_thread_cpu, 0, _U32 - 1):
            found.append(f"sq_thread_cpu={self.sq_thread_cpu!r}: a CPU number or None")
        if not whole(self.spin_us, 0, _U32 - 1):
            found.append(f"spin_us={self.spin_us!r}: microseconds, 0 or more")
        if not isinstance(self.flags, SetupFlag) or not isinstance(self.required, SetupFlag):
            found.append(f"flags={self.flags!r}, required={self.required!r}: SetupFlag values")
        return found

    def plan_problems(self) -> list[str]:
        """:meth:`problems`, and what makes a ring of the plan useless to the stack.

        Checked where each plugin's ``uringstack_ring_params`` returns (the plan
        names the plugin): a ring made disabled, or polled where buffered I/O
        goes, passed the plan and failed every operation later."""
        found = self.problems()
        if found:
            return found
        if self.flags & SetupFlag.R_DISABLED:
            found.append("flags include R_DISABLED: nothing enables the ring, so every submission to it would fail")
        if self.flags & SetupFlag.IOPOLL and self.role == "storage":
            found.append(
                "IOPOLL on the storage ring: it carries buffered I/O, fsync and pipes, which a polled ring "
                "refuses; polled I/O goes to the iopoll ring (the iopoll plugin)"
            )
        return found

    def effective_flags(self) -> SetupFlag:
        """Flags as passed to the kernel: SQ_AFF/CQSIZE/ATTACH_WQ follow from the fields."""
        flags = self.flags
        if self.sq_thread_cpu is not None and flags & SetupFlag.SQPOLL:
            flags |= SetupFlag.SQ_AFF
        if self.cq_entries is not None:
            flags |= SetupFlag.CQSIZE
        if self.wq_fd is not None:
            flags |= SetupFlag.ATTACH_WQ
        if flags & SetupFlag.DEFER_TASKRUN:
            flags |= SetupFlag.SINGLE_ISSUER  # the kernel requires the pair
            # Completions wait for the submitter's GETEVENTS; only with TASKRUN_FLAG does
            # the kernel say so in the SQ flags, where a non-blocking reap looks
            # (tests/ring/test_audit_defer_taskrun.py).
            flags |= SetupFlag.TASKRUN_FLAG
        return flags


@dataclass
class CreatedRing:
    """A raw ring from :func:`create_raw_ring` and what it took to get it."""

    ring: Any  # cdata ``struct io_uring *``
    flags: SetupFlag
    features: int
    sq_entries: int
    cq_entries: int
    dropped: list[tuple[SetupFlag, str]]
    notes: list[str]


# Rings freed moments ago still count against RLIMIT_MEMLOCK until the kernel's
# deferred teardown ran (the probe creates and closes several), so ENOMEM is
# first retried after short pauses, then the ring is shrunk.
_ENOMEM_PAUSES_S = (0.005, 0.02, 0.05, 0.1, 0.2)
MEMLOCK_HINT = "raise RLIMIT_MEMLOCK (`ulimit -l`, systemd `LimitMEMLOCK=`) or grant CAP_IPC_LOCK"
MIN_ENTRIES = 8  # the smallest ring worth making: a batch of a few ops and their completions


def _init(entries: int, flags: SetupFlag, params: RingParams) -> tuple[int, Any, Any]:
    ring = ffi.new("struct io_uring *")
    p = ffi.new("struct io_uring_params *")
    p.flags = int(flags)
    if flags & SetupFlag.SQ_AFF and params.sq_thread_cpu is not None:
        p.sq_thread_cpu = params.sq_thread_cpu
    if flags & SetupFlag.SQPOLL:
        p.sq_thread_idle = params.sq_thread_idle_ms
    if flags & SetupFlag.ATTACH_WQ and params.wq_fd is not None:
        p.wq_fd = params.wq_fd
    if flags & SetupFlag.CQSIZE and params.cq_entries is not None:
        p.cq_entries = params.cq_entries
    ret = lib.io_uring_queue_init_params(entries, ring, p)
    return ret, ring, p


def create_raw_ring(params: RingParams) -> CreatedRing:
    """Create a ring from *params*, dropping unknown optional flags on EINVAL.

    Raises :class:`RingSetupError` with a hint for EPERM (seccomp or the
    ``kernel.io_uring_disabled`` sysctl), ENOMEM (RLIMIT_MEMLOCK), ENOSYS (no
    io_uring in this kernel) and for an EINVAL that dropping flags cannot cure.
    """
    problems = params.problems()
    if problems:
        raise RingSetupError(errno.EINVAL, "io_uring_setup", None, "; ".join(problems))
    flags = params.effective_flags()
    dropped: list[tuple[SetupFlag, str]] = []
    notes: list[str] = []
    entries = params.entries
    pauses = list(_ENOMEM_PAUSES_S)
    while True:
        ret, ring, p = _init(entries, flags, params)
        if ret == 0:
            return CreatedRing(
                ring=ring,
                flags=SetupFlag(ring.flags),
                features=int(p.features),
                sq_entries=int(p.sq_entries),
                cq_entries=int(p.cq_entries),
                dropped=dropped,
                notes=notes,
            )
        err = -ret
        if err == errno.ENOMEM:
            if pauses:
                time.sleep(pauses.pop(0))
                continue
            if entries > MIN_ENTRIES:
                notes.append(f"{entries} entries did not fit RLIMIT_MEMLOCK (ENOMEM); shrunk to {entries // 2}")
                entries //= 2
                pauses = list(_ENOMEM_PAUSES_S[:2])
                continue
        if err == errno.EINVAL:
            victim = next((f for f in _DROP_ORDER if flags & f and not params.required & f), None)
            if victim is not None:
                why = "kernel rejected it (EINVAL)"
                if not victim & OPTIONAL_SETUP_FLAGS:
                    why += "; the ring works without it, but slower"
                dropped.append((victim, why))
                flags &= ~victim
                if victim == SetupFlag.SQPOLL:
                    flags &= ~SetupFlag.SQ_AFF
                if victim == SetupFlag.DEFER_TASKRUN and not params.flags & SetupFlag.TASKRUN_FLAG:
                    flags &= ~SetupFlag.TASKRUN_FLAG  # added for it (effective_flags)
                continue
        raise RingSetupError(err, "io_uring_setup", None, setup_error_hint(err, flags, params))


def setup_error_hint(err: int, flags: SetupFlag, params: RingParams | None = None) -> str:
    """One sentence on what an ``io_uring_setup`` errno means for the user."""
    if err == errno.EPERM:
        return (
            "io_uring is blocked: a seccomp filter (Docker's default profile) or "
            "the kernel.io_uring_disabled sysctl forbids it"
        )
    if err == errno.ENOSYS:
        return "this kernel has no io_uring (Linux 5.1+ needed, 5.19+ recommended)"
    if err == errno.ENOMEM:
        return "not enough locked memory (RLIMIT_MEMLOCK); raise it with `ulimit -l` or systemd LimitMEMLOCK="
    if err == errno.EINVAL:
        # (reached once every flag the ring can do without was dropped: sizes and other
        # fields were checked before the first try, RingParams.problems)
        sizes = "" if params is None else f", entries {params.entries}, cq_entries {params.cq_entries}"
        return (
            f"the kernel refused the ring with only its required setup flags left ({flags!r}{sizes}): "
            "this kernel lacks one of them, or a field they use (an SQPOLL CPU it does not have)"
        )
    return f"flags {flags!r}"


def try_setup_flag(flag: SetupFlag, entries: int = 4) -> int:
    """Create and destroy a ring with exactly *flag*; return 0 or the errno.

    This is how the probe learns what the kernel accepts: by asking it, not by
    reading a version table.  Companion flags the kernel insists on are added
    (DEFER_TASKRUN needs SINGLE_ISSUER, CQE32 is tried with SQE128 as NVMe
    passthrough uses them together).
    """
    flags = flag
    if flag & SetupFlag.DEFER_TASKRUN:
        flags |= SetupFlag.SINGLE_ISSUER
    ret, ring, _ = _init(entries, flags, RingParams(entries=entries))
    if ret == 0:
        lib.io_uring_queue_exit(ring)
        return 0
    return -ret


def probe_kernel() -> RingProbe:
    """Try io_uring's three syscalls in this process and say which one failed, if any.

    A plain ring is created (io_uring_setup), one NOP is submitted and reaped
    (io_uring_enter) and the opcode table is read (io_uring_register).  A ring
    alone proves nothing about the other two: a seccomp filter may deny
    io_uring_enter (every I/O would fail) or io_uring_register (no registered
    buffers, files or asyncio eventfd) while io_uring_setup works.
    """
    ret, ring, p = _init(4, SetupFlag(0), RingParams(entries=4))
    if ret != 0:
        return RingProbe(errno=-ret)
    try:
        res = ffi.new("int *")
        ret = lib.us_probe_nop(ring, res)
        if ret < 0:
            return RingProbe(errno=-ret, syscall="io_uring_enter", features=int(p.features))
        if res[0] < 0:  # the enter worked but the NOP itself failed: nothing else would work either
            return RingProbe(errno=-res[0], syscall="IORING_OP_NOP", features=int(p.features))
        supported = ffi.new("uint8_t[256]")
        n = lib.us_probe_opcodes(ring, supported)
        if n == -errno.EINVAL:
            # IORING_REGISTER_PROBE is Linux 5.6+: an older kernel runs io_uring but cannot list
            # its opcodes, which is not the same as having none
            why = "io_uring_register(IORING_REGISTER_PROBE) returned EINVAL: kernel older than 5.6"
            return RingProbe(features=int(p.features), opcodes=None, opcode_error=why)
        if n < 0:
            # the stack registers buffers, files and the asyncio eventfd: without the syscall it cannot run
            why = f"io_uring_register failed with {errno.errorcode.get(-n, str(-n))}"
            return RingProbe(
                errno=-n, syscall="io_uring_register", features=int(p.features), opcodes=None, opcode_error=why
            )
        return RingProbe(features=int(p.features), opcodes=tuple(op for op in range(n) if supported[op]))
    finally:
        lib.io_uring_queue_exit(ring)


def memlock_charged_in_child() -> bool | None:
    """Does a ring's memory count against RLIMIT_MEMLOCK?  Asked in a forked child.

    The child lowers its own soft limit to 0 and makes a 4-entry ring: ENOMEM means
    charged, success not, anything else leaves it open (``None``).  A child, because
    rlimits belong to the whole process: lowering the caller's own would fail another
    thread's ring or buffer registration at that instant.  Raises :class:`OSError`
    when the fork itself fails.
    """
    answer = int(lib.us_probe_memlock_charged_in_child())
    if answer < 0:
        raise OSError(-answer, f"fork for the memlock probe failed: {os.strerror(-answer)}")
    return {0: False, 1: True}.get(answer)


def syscalls_in_child() -> RingProbe | None:
    """Try io_uring_setup, io_uring_enter and io_uring_register in a forked child.

    For a process under a seccomp filter: a filter whose action kills (systemd's
    ``SystemCallFilter=`` default, SIGSYS) would kill the caller itself without a
    word.  The child is forked in C and does only raw syscalls and ``_exit``, so this
    is safe in a threaded process.  Returns a :class:`RingProbe` naming the syscall
    that killed the child, or ``None`` when none did (an errno the syscalls return is
    then found again, in process, by :func:`probe_kernel`) or the fork failed.
    """
    out = ffi.new("struct us_child_probe *")
    if lib.us_probe_syscalls_in_child(out) < 0:
        # (fork refused, e.g. at a pids limit: the in-process probe is what ran before
        # this check existed)
        return None
    if out.done:
        return None
    stage = min(max(int(out.stage), 1), len(SYSCALL_NAMES))
    # -1: the child died but its status was reaped elsewhere (SIGCHLD ignored)
    killed_by = int(out.term_signal) if out.waited and out.term_signal else -1
    return RingProbe(syscall=SYSCALL_NAMES[stage - 1], killed_by=killed_by)
