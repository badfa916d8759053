"""Can this process use io_uring, and if not, exactly why?  What does the kernel accept?

Every answer comes from asking the kernel: a plain ring is created to learn the
feature bits and opcodes, and one ring per setup flag to learn which flags the
kernel really accepts.  Version tables are never consulted, because distribution
kernels backport features and sysctls/seccomp/LSMs take them away again.
"""

from __future__ import annotations

import errno as errno_mod
import os
import signal
from collections.abc import Callable

from uringstack.probe.kernel import CAP_SYS_ADMIN, KernelFacts
from uringstack.probe.model import FlagSupport, UringBlocker, UringSupport
from uringstack.ring.kernel import RingProbe

# How a blocker is described to a user: (blocker, one sentence).
Verdict = tuple[UringBlocker, str]


def _errname(err: int) -> str:
    return errno_mod.errorcode.get(err, f"errno {err}")


_ALLOW_ALL = "io_uring_setup/io_uring_enter/io_uring_register"

# What the stack loses without a syscall that io_uring_setup's success does not promise.
_NEEDED_FOR = {
    "io_uring_enter": "every submission and wait goes through it, so no I/O could complete",
    "io_uring_register": "uringstack registers buffers, files and the asyncio eventfd through it",
}


def _filter_count(facts: KernelFacts) -> str:
    filters = facts.status.seccomp_filters
    return f", {filters} filter(s)" if filters is not None else ""


def classify_killed(syscall: str, signum: int, facts: KernelFacts) -> Verdict:
    """Explain a forked child killed by signal *signum* (-1: unknown) while calling *syscall*."""
    if signum == signal.SIGSYS:
        return "seccomp", (
            f"{syscall} blocked by seccomp with the kill action (a forked test child died of SIGSYS"
            f"{_filter_count(facts)}; systemd's SystemCallFilter= kills by default): this process "
            f"would be killed by its first {syscall}; allow {_ALLOW_ALL} (systemd: add @aio to "
            "SystemCallFilter=, or set SystemCallErrorNumber=EPERM so a denied call fails instead of killing)"
        )
    how = "an unknown signal" if signum < 0 else signal.Signals(signum).name
    return "other", f"a forked child testing {syscall} was killed by {how} under this process's seccomp filter"


def _classify_after_setup(err: int, syscall: str, facts: KernelFacts) -> Verdict:
    # io_uring_setup worked, so the kernel has io_uring: an EPERM or ENOSYS from a later
    # syscall is a filter (or an LSM), never a missing feature.
    name = _errname(err)
    needed = _NEEDED_FOR.get(syscall, "")
    if err in (errno_mod.EPERM, errno_mod.ENOSYS, errno_mod.EACCES) and facts.status.seccomp_filtered:
        return "seccomp", (
            f"{syscall} blocked by seccomp ({name} from a seccomp filter{_filter_count(facts)}; "
            f"io_uring_setup is allowed, but {needed}): run with a profile that allows {_ALLOW_ALL}"
        )
    if err == errno_mod.EPERM:
        return "eperm", (
            f"{syscall} returned EPERM although io_uring_setup worked and no seccomp filter is "
            f"installed ({needed}; an LSM such as SELinux or AppArmor?)"
        )
    if syscall == "IORING_OP_NOP":
        return "other", f"a NOP submitted through io_uring_enter completed with {name}: {os.strerror(err)}"
    return "other", f"{syscall} failed with {name}: {os.strerror(err)} ({needed})"


def classify(
    err: int,
    facts: KernelFacts,
    memlock_soft_bytes: int | None = None,
    *,
    syscall: str = "io_uring_setup",
    killed_by: int = 0,
) -> Verdict:
    """Explain the result *err* (0 or a positive errno) of *syscall* (by default: creating
    a plain ring), or the signal *killed_by* a forked child trying it.

    Pure function of its inputs so each branch is unit-tested.  The order
    matters: the sysctl is checked before seccomp because ``io_uring_disabled=2``
    forbids everybody, even a process that also runs under a filter.
    """
    if facts.system != "Linux":
        return "not_linux", f"io_uring exists only on Linux (this is {facts.system})"
    if killed_by:
        return classify_killed(syscall, killed_by, facts)
    if err == 0:
        return "none", ""
    if syscall != "io_uring_setup":
        return _classify_after_setup(err, syscall, facts)
    name = _errname(err)
    if err == errno_mod.ENOSYS:
        if facts.io_uring_disabled is not None and facts.status.seccomp_filtered:
            # kernel.io_uring_disabled exists only in a kernel built with io_uring (6.6+):
            # the ENOSYS can only be the filter's answer.
            return "seccomp", (
                "io_uring_setup blocked by seccomp (ENOSYS from a seccomp filter"
                f"{_filter_count(facts)}; kernel {facts.release} has io_uring, as "
                "kernel.io_uring_disabled exists): run with a profile that allows "
                f"{_ALLOW_ALL}"
            )
        reason = f"io_uring_setup returned ENOSYS: kernel {facts.release} has no io_uring"
        if facts.status.seccomp_filtered:
            # Some seccomp profiles answer ENOSYS instead of EPERM; say both.
            reason += " (or a seccomp filter answers ENOSYS for it)"
        else:
            reason += " (built without CONFIG_IO_URING, or older than 5.1)"
        return "enosys", reason
    if err == errno_mod.EPERM:
        disabled = facts.io_uring_disabled
        if disabled == 2:
            return "sysctl_disabled", (
                "kernel.io_uring_disabled=2: io_uring is disabled for every process "
                "(set it to 0, or to 1 with kernel.io_uring_group)"
            )
        if disabled == 1:
            group = facts.io_uring_group
            in_group = group is not None and group >= 0 and group in facts.gids
            admin = facts.status.has_cap(CAP_SYS_ADMIN)
            if not in_group and not admin:
                if group is None or group < 0:
                    who = "only CAP_SYS_ADMIN may create rings (kernel.io_uring_group is unset)"
                else:
                    who = (
                        f"only members of group {group} (kernel.io_uring_group) or "
                        "CAP_SYS_ADMIN may create rings and this process is neither"
                    )
                return "sysctl_disabled", f"kernel.io_uring_disabled=1: {who}"
        if facts.status.seccomp_filtered:
            filters = facts.status.seccomp_filters
            count = f", {filters} filter(s)" if filters is not None else ""
            return "seccomp", (
                "io_uring_setup blocked by seccomp (EPERM from a seccomp filter"
                f"{count}; Docker's default profile does this: run with a profile "
                "that allows io_uring_setup/io_uring_enter/io_uring_register)"
            )
        return "eperm", (
            "io_uring_setup returned EPERM although neither kernel.io_uring_disabled "
            "nor a seccomp filter explains it (an LSM such as SELinux or AppArmor?)"
        )
    if err == errno_mod.ENOMEM:
        limit = ""
        if memlock_soft_bytes is not None and memlock_soft_bytes >= 0:
            limit = f" (soft limit {memlock_soft_bytes} bytes)"
        # Not only "before 5.12": 6.18 charges ring memory to the user's locked memory again
        # for a process without CAP_IPC_LOCK (measured: a 64 KiB limit took three 256-entry
        # rings, and another process of the same user holding them made this one fail).
        return "enomem", (
            f"io_uring_setup returned ENOMEM: the ring's memory did not fit RLIMIT_MEMLOCK{limit}. "
            "Kernels before 5.12, and later ones such as 6.18 for a process without CAP_IPC_LOCK, "
            "charge ring memory to the user's locked memory, which all of that user's processes "
            "share; raise `ulimit -l` (systemd: LimitMEMLOCK=)"
        )
    return "other", f"io_uring_setup failed with {name}: {os.strerror(err)}"


KernelProbe = Callable[[], RingProbe]
FlagProbe = Callable[[int], int]


def rings_charged_to_memlock() -> bool | None:
    """Does the kernel charge a ring's own memory to this process's RLIMIT_MEMLOCK?

    Asked, not looked up: a 4-entry ring (2 pages where charged) is made with the
    soft limit at 0, and ENOMEM means charged; any other answer than success or
    ENOMEM leaves the question open (``None``).  A forked child lowers its own limit
    for that (:func:`uringstack.ring.params.memlock_charged_in_child`): lowered here,
    the limit of the whole process would be 0 for that instant, and another thread's
    ring or buffer registration would get ENOMEM.  Only where the fork fails (a pids
    limit) and this process has a single thread is it asked in process.
    """
    from uringstack.ring import params as ring_params

    try:
        return ring_params.memlock_charged_in_child()
    except OSError:
        if _threads_in_process() != 1:
            return None
    return _charged_in_process()


def _threads_in_process() -> int:
    """The kernel's thread count for this process (io_uring workers included), 0 if unknown."""
    from uringstack.probe.kernel import read_process_status

    # (the status reader shared with the seccomp and thread-limit checks: no file of its own,
    # and no codec lookup, which at a thread limit, under another user, could fail)
    return read_process_status().threads or 0


def _charged_in_process() -> bool | None:
    import resource

    from uringstack.ring import params as ring_params
    from uringstack.ring.flags import SetupFlag

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, hard))
        err = ring_params.try_setup_flag(SetupFlag(0))
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
    return {0: False, errno_mod.ENOMEM: True}.get(err)


def probe_uring(
    facts: KernelFacts,
    *,
    memlock_soft_bytes: int | None = None,
    kernel_probe: KernelProbe | None = None,
    flag_probe: FlagProbe | None = None,
) -> UringSupport:
    """Create rings to learn what io_uring offers this process.

    *kernel_probe* and *flag_probe* default to the real ring creation in
    :mod:`uringstack.ring.params`; tests pass fakes to reach branches this
    machine cannot (ENOSYS, a failing flag).
    """
    if facts.system != "Linux":
        blocker, reason = classify(0, facts)
        return UringSupport(usable=False, blocker=blocker, reason=reason)

    # Imported late: the binding is a compiled extension that exists only on Linux.
    from uringstack.ring import params as ring_params
    from uringstack.ring.flags import PROBED_SETUP_FLAGS, SetupFlag, feature_names, opcode_name

    kprobe = kernel_probe or (lambda: _probe_syscalls(facts))
    fprobe = flag_probe or (lambda f: ring_params.try_setup_flag(SetupFlag(f)))

    found = kprobe()
    err = found.errno
    blocker, reason = classify(err, facts, memlock_soft_bytes, syscall=found.syscall, killed_by=found.killed_by)
    usable = err == 0 and not found.killed_by
    support = UringSupport(
        usable=usable,
        blocker=blocker,
        reason=reason,
        io_uring_disabled_sysctl=facts.io_uring_disabled,
        opcode_error=found.opcode_error,
    )
    support.feature_bits = found.features
    support.features = feature_names(found.features)
    if not usable:
        # Trying flags would only repeat the same error once per flag (or, for a filter
        # that kills, kill this process).
        what = f"{found.syscall} killed the test child" if found.killed_by else _errname(err)
        if found.syscall != "io_uring_setup" and not found.killed_by:
            what = f"{found.syscall}: {what}"
        why = f"not tried: io_uring unusable ({what})"
        support.setup_flags = {
            str(flag.name): FlagSupport(accepted=False, errno=err, error=why) for flag in PROBED_SETUP_FLAGS
        }
        return support
    support.opcodes = [opcode_name(op) for op in found.opcodes or ()]
    flags: dict[str, FlagSupport] = {}
    for flag in PROBED_SETUP_FLAGS:
        ferr = fprobe(int(flag))
        flags[str(flag.name)] = FlagSupport(
            accepted=ferr == 0,
            errno=ferr,
            error="" if ferr == 0 else f"{_errname(ferr)}: {os.strerror(ferr)}",
        )
    support.setup_flags = flags
    return support


def _probe_syscalls(facts: KernelFacts) -> RingProbe:
    from uringstack.ring import params as ring_params

    if facts.status.seccomp_mode == 2:
        # Only under a filter: its action may be to kill, so a forked child tries the
        # syscalls first.  Without one nothing can kill us, and the probe costs no fork.
        killed = ring_params.syscalls_in_child()
        if killed is not None:
            return killed
    return ring_params.probe_kernel()
