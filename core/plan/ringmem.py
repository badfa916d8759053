"""Rings that fit RLIMIT_MEMLOCK, on kernels that charge a ring's own memory to it.

A process without CAP_IPC_LOCK is charged each ring's SQEs and CQEs against
RLIMIT_MEMLOCK on kernels whose ring memory is a region (6.18; the probe asks:
``caps.memlock.rings_charged``).  Until session 32 the plan never compared
them: under a 16 KiB limit it promised two 256-entry rings (7 pages each), the
first ring took the whole limit (shrunk to 128 entries when its setup failed)
and the second failed with ENOMEM, with nothing falling back.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from uringstack.ring.params import MEMLOCK_HINT, MIN_ENTRIES, RingParams, ring_memory_pages

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities

PAGE = 4096
HINT = MEMLOCK_HINT


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
            _halve(p)
        total = sum(params_pages(p) for p in rings)
    now = sorted({p.entries for p in rings})
    why = (
        f"RLIMIT_MEMLOCK is {caps.memlock.soft_bytes} bytes ({limit} pages) and this kernel charges ring memory "
        f"to it (no CAP_IPC_LOCK): {len(rings)} ring(s) of {'/'.join(map(str, sizes))} entries need {before} pages"
    )
    for p in rings:
        p.reasons.append(f"core: entries shrunk to {p.entries}: {why}")
    return f"core: rings shrunk to {'/'.join(map(str, now))} entries ({total} pages): {why}; {HINT}"


def _halve(params: RingParams) -> None:
    """One step of :func:`shrink_to_fit` for one ring (none below :data:`MIN_ENTRIES`)."""
    if params.entries > MIN_ENTRIES:
        params.entries //= 2
        if params.cq_entries is not None:
            params.cq_entries = max(params.cq_entries // 2, params.entries)


def smallest_pages(params: RingParams) -> int:
    """What the ring *params* describe is charged once :func:`shrink_to_fit` has made it as
    small as it makes any ring (*params* is left as it is)."""
    small = copy.deepcopy(params)
    while small.entries > MIN_ENTRIES:
        _halve(small)
    return params_pages(small)


def no_room_reason(caps: Capabilities, workers: int, storage: int, need: int, roles: tuple[str, ...]) -> str:
    """Why a feature's extra rings (*roles*, *need* pages for *workers* workers) are left out:
    the storage rings take *storage* of the charged limit's pages."""
    limit = charged_limit_pages(caps)
    return (
        f"no room for its {'/'.join(roles)} ring(s) under RLIMIT_MEMLOCK: the limit is "
        f"{caps.memlock.soft_bytes} bytes ({limit} pages), this kernel charges ring memory to it "
        f"(no CAP_IPC_LOCK), the rings already planned for {workers} worker(s) take {storage} and "
        f"its own would need {need} more even at {MIN_ENTRIES} entries"
    )
