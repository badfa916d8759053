"""Run a command under a seccomp filter that denies io_uring syscalls.

Usage: ``python seccomp_deny_uring.py [--deny setup,enter,register,pwritev2] [--errno EPERM|ENOSYS|N]
[--kill] CMD [ARG...]``.  The default (``--deny setup --errno EPERM``) is what
Docker's default seccomp profile does to io_uring; ``--deny enter`` or
``--deny register`` denies one later syscall alone (io_uring_setup still works),
``--deny pwritev2`` a syscall outside io_uring that the file objects use,
``--errno ENOSYS`` answers as some profiles do, and ``--kill`` kills the process
with SIGSYS instead (SECCOMP_RET_KILL_PROCESS, systemd's ``SystemCallFilter=``
default).  The filter is installed for real (prctl + BPF), so the probe under
test meets the kernel's own answer.  Every other syscall is allowed.  x86_64
only: the filter checks the audit arch and lets other ABIs through unfiltered,
so the test skips elsewhere.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Sequence

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
AUDIT_ARCH_X86_64 = 0xC000003E
NR_IO_URING_SETUP = 425  # x86_64
SYSCALL_NUMBERS = {"setup": NR_IO_URING_SETUP, "enter": 426, "register": 427}  # x86_64
# Other syscalls --deny takes by name (not in "all", which is io_uring's): pwritev2, which
# a write-only file object's C step writes with (tests/fileobj/test_write_direct.py)
OTHER_SYSCALLS = {"pwritev2": 328}  # x86_64

# classic BPF opcodes (linux/bpf_common.h)
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00
BPF_RET_K = 0x06 | 0x00

# offsets in struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }
OFF_NR = 0
OFF_ARCH = 4


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [
        ("len", ctypes.c_ushort),
        ("filter", ctypes.POINTER(SockFilter)),
    ]


def install_filter(errno_value: int = 1, deny: Sequence[str] = ("setup",), *, kill: bool = False) -> None:
    """Deny the io_uring syscalls *deny* (names of ``SYSCALL_NUMBERS``) for this process and its
    children: with *errno_value* (EPERM), or by killing the process when *kill*."""
    numbers = [{**SYSCALL_NUMBERS, **OTHER_SYSCALLS}[name] for name in deny]
    verdict = SECCOMP_RET_KILL_PROCESS if kill else SECCOMP_RET_ERRNO | (errno_value & 0xFFFF)
    n = len(numbers)
    program = [
        SockFilter(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        SockFilter(BPF_JMP_JEQ_K, 0, n + 1, AUDIT_ARCH_X86_64),  # other ABI: allow
        SockFilter(BPF_LD_W_ABS, 0, 0, OFF_NR),
        # each denied number jumps to the verdict; past the last one: allow
        *(SockFilter(BPF_JMP_JEQ_K, n - i, 0, nr) for i, nr in enumerate(numbers)),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        SockFilter(BPF_RET_K, 0, 0, verdict),
    ]
    filters = (SockFilter * len(program))(*program)
    prog = SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(SockFilter)))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                           ctypes.c_ulong, ctypes.c_ulong]  # fmt: skip
    # NO_NEW_PRIVS first: it lets an unprivileged process install a filter.
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def _errno_value(text: str) -> int:
    return int(text) if text.isdigit() else int(getattr(errno, text))


if __name__ == "__main__":
    args = sys.argv[1:]
    deny: list[str] = ["setup"]
    value = errno.EPERM
    kill = False
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option == "--kill":
            kill = True
        elif option == "--deny" and args:
            names = args.pop(0)
            deny = list(SYSCALL_NUMBERS) if names == "all" else names.split(",")
        elif option == "--errno" and args:
            value = _errno_value(args.pop(0))
        else:
            sys.exit(f"seccomp_deny_uring.py: unknown option {option}")
    if not args:
        sys.exit(
            "usage: seccomp_deny_uring.py [--deny setup,enter,register,pwritev2|all] [--errno E] [--kill] CMD [ARG...]"
        )
    install_filter(value, deny, kill=kill)
    # The filter survives execve, so the command runs exactly as under Docker.
    os.execvp(args[0], args)
