"""Names of io_uring opcodes and feature bits (pure data: usable without the C binding)."""

from __future__ import annotations

# Every opcode name the kernel headers of liburing 2.3 know, by number, for the
# probe report (the kernel may know more: those are shown as numbers).
OPCODE_NAMES: tuple[str, ...] = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD",
    "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE",
    "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE",
    "FILES_UPDATE", "STATX", "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV",
    "OPENAT2", "EPOLL_CTL", "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE",
    "SHUTDOWN", "RENAMEAT", "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING",
    "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC",
    "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV",
    "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC", "EPOLL_WAIT",
    "READV_FIXED", "WRITEV_FIXED", "PIPE",
)  # fmt: skip


# IORING_FEAT_* bits (stable kernel ABI; liburing 2.3 lacks the newest names).
FEATURE_NAMES: dict[int, str] = {
    1 << 0: "SINGLE_MMAP", 1 << 1: "NODROP", 1 << 2: "SUBMIT_STABLE", 1 << 3: "RW_CUR_POS",
    1 << 4: "CUR_PERSONALITY", 1 << 5: "FAST_POLL", 1 << 6: "POLL_32BITS",
    1 << 7: "SQPOLL_NONFIXED", 1 << 8: "EXT_ARG", 1 << 9: "NATIVE_WORKERS",
    1 << 10: "RSRC_TAGS", 1 << 11: "CQE_SKIP", 1 << 12: "LINKED_FILE", 1 << 13: "REG_REG_RING",
    1 << 14: "RECVSEND_BUNDLE", 1 << 15: "MIN_TIMEOUT", 1 << 16: "RW_ATTR",
    1 << 17: "NO_IOWAIT",
}  # fmt: skip
FEAT_RW_CUR_POS = 1 << 3
"""Reads and writes at offset -1 use and move the file position, as read(2)/write(2) (Linux 5.6)."""
