"""Kernel facts without a ring: release versions (the one parser of ``uname -r`` that
the ring layer, which chooses how to talk to the kernel, and the probe's defect
table share) and io_uring's size limits (the ring layer and the config check them)."""

from __future__ import annotations

import re

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
