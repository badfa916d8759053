"""Rings that fit RLIMIT_MEMLOCK, on kernels that charge a ring's own memory to it.

A process without CAP_IPC_LOCK is charged each ring's SQEs and CQEs against
RLIMIT_MEMLOCK on kernels whose ring memory is a region (6.18; the probe asks:
``caps.memlock.rings_charged``).  Until session 32 the plan never compared
them: under a 16 KiB limit it promised two 256-entry rings (7 pages each), the
first ring took the whole limit (shrunk to 128 entries when its setup failed)
and the second failed with ENOMEM, with nothing falling back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uringstack.ring.params import MIN_ENTRIES, RingParams, ring_memory_pages

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities

PAGE = 4096
HINT = "raise RLIMIT_MEMLOCK (`ulimit -l`, systemd `LimitMEMLOCK=`) or grant CAP_IPC_LOCK"


def charged_limit_pages(caps: Capabilities) -> int | None:
    """RLIMIT_MEMLOCK in pages where ring memory is charged to it, else ``None`` (no bound)."""
    mem = caps.memlock
    if not mem.rings_charged or mem.cap_ipc_lock or mem.soft_bytes < 0:
        return None
    return mem.soft_bytes // PAGE


def params_pages(params: RingParams) -> int:
    """What the kernel will charge for the ring *params* describe."""
    return ring_memory_pages(params.entries, params.effective_flags(), params.cq_entries)


def without_room_for_rings(caps: Capabilities, config: StackConfig, workers: int) -> Capabilities:
    """*caps* with io_uring marked unusable (blocker ``enomem``) where not even *workers*
    storage rings of :data:`MIN_ENTRIES` fit the limit, so that ``auto`` chooses the
    fallback with the reason (and ``core.backend = "uring"`` is a plan error naming it)."""
    limit = charged_limit_pages(caps)
    if limit is None or not caps.uring.usable or config.core.backend == "fallback":
        return caps
    need = workers * ring_memory_pages(MIN_ENTRIES)
    if need <= limit:
        return caps
    reason = (
        f"RLIMIT_MEMLOCK is {caps.memlock.soft_bytes} bytes ({limit} pages) and this kernel charges ring "
        f"memory to it (no CAP_IPC_LOCK): {workers} storage ring(s) of even {MIN_ENTRIES} entries need "
        f"{need} pages; {HINT}"
    )
    uring = caps.uring.model_copy(update={"usable": False, "blocker": "enomem", "reason": reason})
    return caps.model_copy(update={"uring": uring})


def shrink_to_fit(rings: list[RingParams], caps: Capabilities) -> str:
    """Halve every ring's entries until all fit the charged limit; the plan's note ("" if untouched).

    All rings shrink together so no worker is left without room (ring setup
    shrinks greedily, one ring at a time: the first took everything).
    """
    limit = charged_limit_pages(caps)
    if limit is None or not rings:
        return ""
    before = sum(params_pages(p) for p in rings)
    if before <= limit:
        return ""
    sizes = sorted({p.entries for p in rings})
    total = before
    while total > limit and any(p.entries > MIN_ENTRIES for p in rings):
        for p in rings:
            if p.entries > MIN_ENTRIES:
                p.entries //= 2
                if p.cq_entries is not None:
                    p.cq_entries = max(p.cq_entries // 2, p.entries)
        total = sum(params_pages(p) for p in rings)
    now = sorted({p.entries for p in rings})
    why = (
        f"RLIMIT_MEMLOCK is {caps.memlock.soft_bytes} bytes ({limit} pages) and this kernel charges ring memory "
        f"to it (no CAP_IPC_LOCK): {len(rings)} ring(s) of {'/'.join(map(str, sizes))} entries need {before} pages"
    )
    for p in rings:
        p.reasons.append(f"core: entries shrunk to {p.entries}: {why}")
    return f"core: rings shrunk to {'/'.join(map(str, now))} entries ({total} pages): {why}; {HINT}"
