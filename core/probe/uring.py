"""Can this process use io_uring, and if not, exactly why?  What does the kernel accept?

Every answer comes from asking the kernel: a plain ring is created to learn the
feature bits and opcodes, and one ring per setup flag to learn which flags the
kernel really accepts.  Version tables are never consulted, because distribution
kernels backport features and sysctls/seccomp/LSMs take them away again.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Callable

from uringstack.probe.kernel import CAP_SYS_ADMIN, KernelFacts
from uringstack.probe.model import FlagSupport, UringBlocker, UringSupport

# How a blocker is described to a user: (blocker, one sentence).
Verdict = tuple[UringBlocker, str]


def _errname(err: int) -> str:
    return errno_mod.errorcode.get(err, f"errno {err}")


def classify(err: int, facts: KernelFacts, memlock_soft_bytes: int | None = None) -> Verdict:
    """Explain the result *err* (0 or a positive errno) of creating a plain ring.

    Pure function of its inputs so each branch is unit-tested.  The order
    matters: the sysctl is checked before seccomp because ``io_uring_disabled=2``
    forbids everybody, even a process that also runs under a filter.
    """
    if facts.system != "Linux":
        return "not_linux", f"io_uring exists only on Linux (this is {facts.system})"
    if err == 0:
        return "none", ""
    name = _errname(err)
    if err == errno_mod.ENOSYS:
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


KernelProbe = Callable[[], tuple[int, int, list[int]]]
FlagProbe = Callable[[int], int]


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

    kprobe = kernel_probe or ring_params.probe_kernel
    fprobe = flag_probe or (lambda f: ring_params.try_setup_flag(SetupFlag(f)))

    err, feature_bits, opcodes = kprobe()
    blocker, reason = classify(err, facts, memlock_soft_bytes)
    support = UringSupport(
        usable=err == 0,
        blocker=blocker,
        reason=reason,
        io_uring_disabled_sysctl=facts.io_uring_disabled,
    )
    if err != 0:
        # Trying flags would only repeat the same error once per flag.
        why = f"not tried: io_uring unusable ({_errname(err)})"
        support.setup_flags = {
            str(flag.name): FlagSupport(accepted=False, errno=err, error=why) for flag in PROBED_SETUP_FLAGS
        }
        return support
    support.feature_bits = feature_bits
    support.features = feature_names(feature_bits)
    support.opcodes = [opcode_name(op) for op in opcodes]
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
