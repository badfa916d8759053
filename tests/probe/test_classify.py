"""Blocker classification and parsing, with every input injected."""

from __future__ import annotations

import errno

import pytest

from uringstack.cli.probe_report import verdicts
from uringstack.probe.kernel import (
    CAP_IPC_LOCK,
    CAP_SYS_ADMIN,
    KernelFacts,
    ProcessStatus,
    parse_process_status,
)
from uringstack.probe.model import Capabilities, CpuInfo, MemlockInfo, NofileInfo
from uringstack.probe.system import parse_cpulist
from uringstack.probe.uring import classify, probe_uring
from uringstack.probe.usage import parse_mountinfo, parse_swaps
from uringstack.ring.kernel import RingProbe

NO_FILTER = ProcessStatus(seccomp_mode=0, seccomp_filters=0)
FILTERED = ProcessStatus(seccomp_mode=2, seccomp_filters=1)
ADMIN = ProcessStatus(cap_eff=1 << CAP_SYS_ADMIN)


def facts(**kw: object) -> KernelFacts:
    base: dict[str, object] = {
        "system": "Linux", "release": "6.8.0", "io_uring_disabled": 0, "io_uring_group": -1,
        "status": NO_FILTER, "gids": frozenset({1000}),
    }  # fmt: skip
    base.update(kw)
    return KernelFacts(**base)


def test_usable() -> None:
    assert classify(0, facts()) == ("none", "")


def test_not_linux() -> None:
    blocker, reason = classify(0, facts(system="Darwin"))
    assert blocker == "not_linux" and "Darwin" in reason
    support = probe_uring(facts(system="Darwin"))
    assert not support.usable and support.blocker == "not_linux"


def test_enosys_old_kernel() -> None:
    blocker, reason = classify(errno.ENOSYS, facts(release="4.19.0"))
    assert blocker == "enosys"
    assert "4.19.0" in reason and "CONFIG_IO_URING" in reason


def test_enosys_under_seccomp_mentions_filter() -> None:
    # a kernel before 6.6 has no kernel.io_uring_disabled: no io_uring and a filter look alike
    blocker, reason = classify(errno.ENOSYS, facts(status=FILTERED, io_uring_disabled=None))
    assert blocker == "enosys" and "seccomp" in reason


def test_enosys_under_seccomp_where_the_sysctl_exists_is_seccomp() -> None:
    """Until session 32 this was "kernel has no io_uring", on a kernel whose
    kernel.io_uring_disabled (present only with io_uring) proves otherwise."""
    blocker, reason = classify(errno.ENOSYS, facts(status=FILTERED, io_uring_disabled=0))
    assert blocker == "seccomp"
    assert reason.startswith("io_uring_setup blocked by seccomp (ENOSYS from a seccomp filter, 1 filter(s)")
    assert "has no io_uring" not in reason
    assert "allows io_uring_setup/io_uring_enter/io_uring_register" in reason


def test_enosys_without_a_filter_is_no_io_uring_even_with_the_sysctl() -> None:
    assert classify(errno.ENOSYS, facts(io_uring_disabled=0))[0] == "enosys"


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS])
@pytest.mark.parametrize("syscall", ["io_uring_enter", "io_uring_register"])
def test_a_later_syscall_denied_by_a_filter_is_seccomp(syscall: str, err: int) -> None:
    blocker, reason = classify(err, facts(status=FILTERED), syscall=syscall)
    assert blocker == "seccomp"
    assert reason.startswith(f"{syscall} blocked by seccomp ({errno.errorcode[err]} from a seccomp filter")


def test_a_later_syscall_eperm_without_a_filter_names_it() -> None:
    blocker, reason = classify(errno.EPERM, facts(), syscall="io_uring_enter")
    assert blocker == "eperm" and reason.startswith("io_uring_enter returned EPERM")


def test_a_child_killed_by_sigsys_is_seccomp_with_the_kill_action() -> None:
    import signal

    blocker, reason = classify(0, facts(status=FILTERED), syscall="io_uring_enter", killed_by=signal.SIGSYS)
    assert blocker == "seccomp"
    assert reason.startswith("io_uring_enter blocked by seccomp with the kill action")


def test_probe_uring_enter_failure_is_unusable_and_tries_no_flag() -> None:
    found = RingProbe(errno=errno.EPERM, syscall="io_uring_enter", features=0b11)
    support = probe_uring(facts(status=FILTERED), kernel_probe=lambda: found,
                          flag_probe=lambda f: pytest.fail("flags must not be tried"))  # fmt: skip
    assert not support.usable and support.blocker == "seccomp"
    assert all("io_uring_enter: EPERM" in f.error for f in support.setup_flags.values())


def test_an_unreadable_opcode_table_is_not_zero_opcodes() -> None:
    why = "io_uring_register(IORING_REGISTER_PROBE) returned EINVAL: kernel older than 5.6"
    support = probe_uring(facts(), kernel_probe=lambda: RingProbe(opcodes=None, opcode_error=why),
                          flag_probe=lambda f: 0)  # fmt: skip
    assert support.usable and support.opcode_error == why
    caps = Capabilities(kernel_release="5.4.0", system="Linux", python="3", uring=support,
                        memlock=MemlockInfo(soft_bytes=-1, hard_bytes=-1, cap_ipc_lock=True),
                        nofile=NofileInfo(soft=1024, hard=1024), cpus=CpuInfo(online=[0], allowed=[0]))  # fmt: skip
    line = verdicts(caps, None, None)[0].line()
    assert "0 opcodes" not in line and f"opcodes unknown: {why}" in line


def test_no_fork_without_a_seccomp_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    # the forked check is for filters that may kill: without one the probe costs no fork
    from uringstack.ring import params

    monkeypatch.setattr(params, "syscalls_in_child", lambda: pytest.fail("forked without a filter"))
    monkeypatch.setattr(params, "probe_kernel", lambda: RingProbe(errno=errno.ENOSYS))
    assert probe_uring(facts()).blocker == "enosys"
    calls: list[int] = []
    monkeypatch.setattr(params, "syscalls_in_child", lambda: calls.append(1))
    probe_uring(facts(status=FILTERED))
    assert calls == [1]


def test_sysctl_2_wins_over_seccomp() -> None:
    blocker, reason = classify(errno.EPERM, facts(io_uring_disabled=2, status=FILTERED))
    assert blocker == "sysctl_disabled"
    assert "io_uring_disabled=2" in reason


@pytest.mark.parametrize("group", [None, -1])
def test_sysctl_1_without_group(group: int | None) -> None:
    blocker, reason = classify(errno.EPERM, facts(io_uring_disabled=1, io_uring_group=group))
    assert blocker == "sysctl_disabled"
    assert "CAP_SYS_ADMIN" in reason and "unset" in reason


def test_sysctl_1_not_member_of_group() -> None:
    blocker, reason = classify(errno.EPERM, facts(io_uring_disabled=1, io_uring_group=42))
    assert blocker == "sysctl_disabled"
    assert "group 42" in reason


def test_sysctl_1_member_of_group_so_eperm_is_seccomp() -> None:
    f = facts(io_uring_disabled=1, io_uring_group=1000, status=FILTERED)
    assert classify(errno.EPERM, f)[0] == "seccomp"


def test_sysctl_1_admin_without_filter_is_unexplained_eperm() -> None:
    blocker, reason = classify(errno.EPERM, facts(io_uring_disabled=1, status=ADMIN))
    assert blocker == "eperm"
    assert "LSM" in reason


def test_eperm_with_seccomp_filter() -> None:
    blocker, reason = classify(errno.EPERM, facts(status=FILTERED))
    assert blocker == "seccomp"
    assert "blocked by seccomp" in reason and "1 filter(s)" in reason


def test_eperm_old_kernel_without_filter_count() -> None:
    # Before 5.9 there is no Seccomp_filters line; mode 2 alone must suffice.
    status = ProcessStatus(seccomp_mode=2, seccomp_filters=None)
    assert classify(errno.EPERM, facts(status=status, io_uring_disabled=None))[0] == "seccomp"


def test_eperm_without_seccomp() -> None:
    assert classify(errno.EPERM, facts())[0] == "eperm"


def test_enomem_names_memlock() -> None:
    blocker, reason = classify(errno.ENOMEM, facts(), memlock_soft_bytes=65536)
    assert blocker == "enomem" and "RLIMIT_MEMLOCK" in reason and "65536" in reason
    # not only old kernels: the limit is per user, shared by all of its processes
    assert "before 5.12, and later ones" in reason and "all of that user's processes" in reason


def test_other_errno() -> None:
    blocker, reason = classify(errno.EFAULT, facts())
    assert blocker == "other" and "EFAULT" in reason


def test_probe_uring_records_rejected_flag() -> None:
    from uringstack.ring.flags import SetupFlag

    def flag_probe(flag: int) -> int:
        return errno.EINVAL if flag == SetupFlag.DEFER_TASKRUN else 0

    support = probe_uring(facts(), kernel_probe=lambda: RingProbe(features=0b11, opcodes=(0, 22, 46)),
                          flag_probe=flag_probe)  # fmt: skip
    assert support.usable
    assert support.opcodes == ["NOP", "READ", "URING_CMD"]
    assert support.features == ["SINGLE_MMAP", "NODROP"]
    assert support.accepts("SQPOLL")
    assert not support.accepts("DEFER_TASKRUN")
    assert support.setup_flags["DEFER_TASKRUN"].errno == errno.EINVAL
    assert support.setup_flags["DEFER_TASKRUN"].error.startswith("EINVAL")


def test_probe_uring_enosys_marks_flags_untried() -> None:
    support = probe_uring(facts(), kernel_probe=lambda: RingProbe(errno=errno.ENOSYS),
                          flag_probe=lambda f: pytest.fail("flags must not be tried"))  # fmt: skip
    assert support.blocker == "enosys"
    assert all("not tried" in f.error for f in support.setup_flags.values())


def test_parse_process_status() -> None:
    text = "Name:\tpython\nCapEff:\t0000000000204000\nSeccomp:\t2\nSeccomp_filters:\t3\n"
    st = parse_process_status(text)
    assert (st.seccomp_mode, st.seccomp_filters) == (2, 3)
    assert st.has_cap(CAP_SYS_ADMIN) and st.has_cap(CAP_IPC_LOCK)
    assert not st.has_cap(0)
    assert st.seccomp_filtered


def test_parse_cpulist() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("0") == [0]
    assert parse_cpulist("") == []


def test_parse_mountinfo_and_swaps() -> None:
    text = (
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        "40 22 0:34 / /mnt/my\\040disk rw - btrfs /dev/nvme0n1p2 rw\n"
    )
    mounts = parse_mountinfo(text)
    assert mounts.mountpoints((254, 1), None) == ["/"]
    assert mounts.mountpoints((259, 2), "/dev/nvme0n1p2") == ["/mnt/my disk"]
    assert mounts.mountpoints((8, 0), "/dev/sda") == []
    assert parse_swaps("Filename Type Size Used Priority\n/dev/sda2 partition 1 0 -2\n") == {"/dev/sda2"}


def _caps(**uring: object) -> Capabilities:
    return Capabilities.model_validate({
        "kernel_release": "6.8.0", "system": "Linux", "python": "3.11",
        "uring": {"usable": True, **uring},
        "memlock": MemlockInfo(soft_bytes=64 * 1024, hard_bytes=64 * 1024).model_dump(),
        "nofile": {"soft": 1024, "hard": 524288},
        "cpus": CpuInfo(online=[0, 1, 2, 3], allowed=[0, 1, 2, 3]).model_dump(),
    })  # fmt: skip


def test_verdicts_name_the_missing_piece() -> None:
    # The io_uring line is the probe's own; feature lines come from the plugins
    # (tests/pluginmanager/test_probe_verdicts.py), so without plugins there are none.
    ok = {"accepted": True}
    caps = _caps(opcodes=["READ", "WRITE"], setup_flags={"SQPOLL": ok})
    [line] = [v.line() for v in verdicts(caps)]
    assert line == "io_uring: usable (2 opcodes, kernel 6.8.0)"
