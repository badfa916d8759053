"""Run a command under a seccomp filter that denies io_uring_setup with EPERM.

Usage: ``python seccomp_deny_uring.py CMD [ARG...]``.  This is what Docker's
default seccomp profile does to io_uring; the filter is installed for real
(prctl + BPF), so the probe under test meets the kernel's own EPERM.  Every
other syscall is allowed.  x86_64 only: the filter checks the audit arch and
lets other ABIs through unfiltered, so the test skips elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
NR_IO_URING_SETUP = 425  # x86_64

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


def install_filter(errno_value: int = 1) -> None:
    """Deny io_uring_setup with *errno_value* (EPERM) for this process and its children."""
    program = [
        SockFilter(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        SockFilter(BPF_JMP_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),  # other ABI: allow
        SockFilter(BPF_LD_W_ABS, 0, 0, OFF_NR),
        SockFilter(BPF_JMP_JEQ_K, 0, 1, NR_IO_URING_SETUP),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | (errno_value & 0xFFFF)),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
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


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: seccomp_deny_uring.py CMD [ARG...]")
    install_filter()
    # The filter survives execve, so the command runs exactly as under Docker.
    os.execvp(sys.argv[1], sys.argv[1:])
