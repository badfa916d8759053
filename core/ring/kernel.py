"""Kernel facts without a ring: release versions (the one parser of ``uname -r`` that
the ring layer, which chooses how to talk to the kernel, and the probe's defect
table share) and io_uring's size limits (the ring layer and the config check them)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SQ_ENTRIES = 32768
"""``IORING_MAX_ENTRIES``: io_uring_setup refuses more SQ entries (without ``IORING_SETUP_CLAMP``)."""
MAX_CQ_ENTRIES = 2 * MAX_SQ_ENTRIES
"""``IORING_MAX_CQ_ENTRIES``."""

_UPSTREAM = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_upstream(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` from the start of a kernel release such as ``6.1.0-57-amd64``."""
    m = _UPSTREAM.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} does not start with a kernel version X.Y[.Z]")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def release_before(release: str, version: tuple[int, int]) -> bool:
    """True when the kernel *release* is older than *version* ``(major, minor)``; an
    unparsable release counts as old (the careful choice for what depends on it)."""
    try:
        return parse_upstream(release)[:2] < version
    except ValueError:
        return True


SYSCALL_NAMES = ("io_uring_setup", "io_uring_enter", "io_uring_register")
"""The three io_uring syscalls, in the order the probe tries them."""


@dataclass(frozen=True)
class RingProbe:
    """What trying io_uring's three syscalls found (``ring.params.probe_kernel``).

    ``errno`` is 0, or the errno of ``syscall``: the first of ``SYSCALL_NAMES``
    that failed (a seccomp filter may deny any one of them alone).
    ``killed_by`` is the signal that killed a forked child trying ``syscall``
    (SIGSYS: a seccomp filter whose action kills), 0 otherwise.  ``opcodes`` is
    ``None`` when the opcode table could not be read, with ``opcode_error`` saying
    why: never "no opcodes"."""

    errno: int = 0
    syscall: str = "io_uring_setup"
    features: int = 0
    opcodes: tuple[int, ...] | None = ()
    opcode_error: str = ""
    killed_by: int = 0
