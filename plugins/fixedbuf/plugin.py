"""The fixedbuf plugin: registered (fixed) buffers and files on every storage ring.

A registered buffer is pinned and mapped into the kernel once, so READ_FIXED /
WRITE_FIXED skip the per-I/O page pinning of O_DIRECT (buffered handles read and
write leases with plain ops: ``buffers.fixed_opcodes_pay``); a registered file skips the per-I/O
fd lookup and reference count.  Pinned memory counts against RLIMIT_MEMLOCK
for processes without CAP_IPC_LOCK: where the limit is too low the pool is
shrunk or skipped with the reason in the plan, never failing the stack in
``auto``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import Field, field_validator

from uringstack.errors import UringIOError
from uringstack.feature import Decision, Feature
from uringstack.hookspecs import hookimpl
from uringstack.plugins.fixedbuf.files import FixedFileTable
from uringstack.plugins.fixedbuf.pool import BufferPool
from uringstack.ring.flags import SetupFlag
from uringstack.tune.model import TuneDimension
from uringstack.types import FeatureConfig, FeatureMode

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring import Ring
    from uringstack.stack import Stack, Worker
    from uringstack.stack.handle import FileHandle
    from uringstack.tune.model import TuneTarget

T = TypeVar("T")
NAME = "fixedbuf"
FILES_KEY = "fixedbuf.files"
_ROLES = ("storage",)
MEMLOCK_HINT = (
    "raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, systemd `LimitMEMLOCK=infinity`, "
    "Docker `--ulimit memlock=-1`) or grant CAP_IPC_LOCK"
)


class FixedbufConfig(FeatureConfig):
    """``[fixedbuf]``: registered buffers and files."""

    mode: FeatureMode = Field("auto", description="auto: register where memlock allows; on: required; off: never")
    buffer_size: int = Field(65536, ge=4096, le=1 << 30, description="bytes per registered buffer (multiple of 4096)")
    count: int = Field(64, ge=1, le=16384, description="registered buffers per ring")
    min_count: int = Field(8, ge=1, description="in auto, fewer buffers than this is not worth registering")
    files: int = Field(
        64,
        ge=0,
        le=65536,
        description=(
            "fixed-file slots per ring (0: no registered files); at most RLIMIT_NOFILE's soft limit, "
            "auto shrinks the table to 3/4 of it"
        ),
    )

    @field_validator("buffer_size")
    @classmethod
    def _page_multiple(cls, v: int) -> int:
        if v % 4096:
            raise ValueError("must be a multiple of 4096 (page size)")  # (the message adds "got")
        return v


def buffers_that_fit(caps: Capabilities, cfg: FixedbufConfig, rings: int) -> tuple[int, str]:
    """How many buffers per ring the memlock limit allows, and the reason."""
    want = cfg.buffer_size * cfg.count * rings
    if caps.memlock.cap_ipc_lock:
        return cfg.count, "CAP_IPC_LOCK: pinned memory is not limited"
    limit = caps.memlock.soft_bytes
    if limit < 0:
        return cfg.count, "RLIMIT_MEMLOCK is unlimited"
    # Other pinned memory of the process shares the limit (the rings' own memory too, charged
    # to it on recent kernels without CAP_IPC_LOCK): leave a quarter free.  Until session 27
    # a pool filling the whole limit "fitted" and the last worker's registration failed
    # (8 MiB, 2 workers: worker 1 registered none, the plan said both would).
    budget = limit * 3 // 4
    if want <= budget:
        return cfg.count, (
            f"{want >> 10} KiB pinned fits RLIMIT_MEMLOCK ({limit >> 10} KiB, a quarter of it left for the "
            "process's other pinned memory)"
        )
    fit = budget // (cfg.buffer_size * max(rings, 1))
    return fit, (
        f"RLIMIT_MEMLOCK is {limit >> 10} KiB, so the pools may pin {budget >> 10} KiB (a quarter is left "
        f"for the process's other pinned memory), but {cfg.count} x {cfg.buffer_size >> 10} KiB buffers on "
        f"{rings} ring(s) need {want >> 10} KiB"
    )


NOFILE_HINT = "raise RLIMIT_NOFILE (`ulimit -n`, systemd `LimitNOFILE=`) or lower fixedbuf.files"


def files_that_fit(caps: Capabilities, cfg: FixedbufConfig) -> tuple[int, str]:
    """How many fixed-file slots per ring RLIMIT_NOFILE allows, and the reason ("" when all fit).

    The kernel refuses a file table with more slots than RLIMIT_NOFILE's soft
    limit (EMFILE): until session 32 the plan promised 64 slots under a limit
    of 32 and open_stack failed with "Too many open files".  ``on`` gets what it
    asks for up to the limit (beyond it, a plan error); ``auto`` leaves a quarter
    of the limit for the process's own descriptors (stdio, the rings, their
    eventfds, files opened outside the stack), since a slot only holds a
    descriptor the process has open: slots beyond that could never be filled.
    """
    soft = caps.nofile.soft
    if not cfg.files or soft < 0:
        return cfg.files, ""
    if cfg.mode == "on":
        if cfg.files <= soft:
            return cfg.files, ""
        return 0, (
            f"fixedbuf.files = {cfg.files} fixed-file slots per ring, but RLIMIT_NOFILE is {soft} and the "
            f"kernel refuses a file table larger than it (EMFILE); raise the limit to at least {cfg.files} "
            f"(`ulimit -n {cfg.files}`, systemd `LimitNOFILE=`) or set fixedbuf.files <= {soft}"
        )
    budget = soft * 3 // 4
    if cfg.files <= budget:
        return cfg.files, ""
    return budget, (
        f"RLIMIT_NOFILE is {soft}, so the file table may have {budget} slots (a quarter is left for the "
        f"process's own descriptors), but fixedbuf.files is {cfg.files}"
    )


def _plan_files(caps: Capabilities, config: StackConfig) -> tuple[int, str]:
    return files_that_fit(caps, FEATURE.section(config))


LABELS = {"on": "with registered buffers and files", "off": "without"}


def measured(caps: Capabilities, cfg: FixedbufConfig) -> tuple[bool | None, str]:
    """In ``auto``: (True/False when ``uringstack tune`` measured on against off, else None; the reason)."""
    if cfg.mode != "auto":
        return None, ""
    found = caps.tuning.comparisons(NAME) if caps.tuning is not None else []
    if not found:
        why = caps.tuning.no_measurement(NAME) if caps.tuning is not None else "no measurement looked up"
        return None, f"auto, {why}: rule: register where RLIMIT_MEMLOCK allows"
    return all(c.best == "on" for c in found), "auto: " + "; ".join(c.describe(LABELS) for c in found)


def _plan_count(caps: Capabilities, config: StackConfig) -> tuple[int, str]:
    cfg = FEATURE.section(config)
    rings = len(caps.cpus.allowed) if config.core.cores == "auto" else len(config.core.cores)
    return buffers_that_fit(caps, cfg, rings)


def _decide(caps: Capabilities, config: StackConfig) -> Decision:
    cfg = FEATURE.section(config)
    if cfg.mode == "off":
        return Decision(False, "off (config)")
    if not caps.uring.usable or config.core.backend == "fallback":
        return Decision(False, "no io_uring rings to register with")
    wins, decided = measured(caps, cfg)
    if wins is False:
        return Decision(False, decided)
    files, files_why = _plan_files(caps, config)
    if files_why and cfg.mode == "on":
        return Decision(False, files_why, NOFILE_HINT)
    count, why = _plan_count(caps, config)
    if decided:
        why = f"{decided}; {why}"
    # the file table's own shrinking, said after the buffers' verdict, with its fix
    files_note = f"; file table shrunk to {files} slots: {files_why}. {NOFILE_HINT}" if files_why else ""
    if not files and files_why:
        files_note = f"; no registered files: {files_why}. {NOFILE_HINT}"
    if count >= cfg.count:
        return Decision(
            True,
            f"{cfg.count} x {cfg.buffer_size >> 10} KiB buffers and {files} file slots per ring ({why}){files_note}",
        )
    if cfg.mode == "on":
        return Decision(False, why, MEMLOCK_HINT)
    if count >= cfg.min_count:
        return Decision(True, f"shrunk to {count} buffers per ring: {why}{files_note}", MEMLOCK_HINT)
    return Decision(
        bool(files),
        f"no registered buffers ({why}); registered files only{files_note}" if files else f"skipped: {why}{files_note}",
        MEMLOCK_HINT,
    )


FEATURE = Feature(NAME, FixedbufConfig, _decide)
uringstack_config_sections, uringstack_check_support = FEATURE.hooks()


@hookimpl
def uringstack_tune_candidates(target: TuneTarget, caps: Capabilities, config: StackConfig) -> TuneDimension | None:
    if not caps.uring.usable or config.core.backend == "fallback":
        return None
    wl = target.workload
    on = {
        "fixedbuf.mode": "on",
        # one buffer per read in flight, of the read's size: what the measured workload leases
        "fixedbuf.buffer_size": max(4096, -(-wl.block_size // 4096) * 4096),
        "fixedbuf.count": max(1, wl.queue_depth),
        "fixedbuf.min_count": 1,
    }
    return TuneDimension.off_or_on(NAME, "registered buffers (READ_FIXED) and a registered file", LABELS, on)


@hookimpl
def uringstack_ring_created(ring: Ring, worker: Worker, config: StackConfig) -> None:
    if ring.params.role not in _ROLES:
        return
    cfg = FEATURE.section(config)
    if cfg.mode == "off" or measured(worker.stack.caps, cfg)[0] is False:
        return
    count, why = _plan_count(worker.stack.caps, config)
    count = min(count, cfg.count)
    if count >= cfg.count or (cfg.mode == "auto" and count >= cfg.min_count):
        try:
            pool = BufferPool(ring, cfg.buffer_size, count)
        except UringIOError as exc:
            if cfg.mode == "on" or exc.errno != errno.ENOMEM:
                raise
            worker.note(
                NAME, f"registering {count} buffers failed with ENOMEM ({why}); none registered. " + MEMLOCK_HINT
            )
        else:
            worker.buffers.register(NAME, pool)
            worker.note(NAME, f"registered {count} x {cfg.buffer_size >> 10} KiB buffers")
    else:
        worker.note(NAME, f"no registered buffers: {why}. {MEMLOCK_HINT}")
    files, files_why = _plan_files(worker.stack.caps, config)
    if files_why:
        worker.note(NAME, f"fixed-file table of {files} slots, not {cfg.files}: {files_why}")
    if files:
        try:
            table = FixedFileTable(ring, files)
        except UringIOError as exc:
            # The limit the plan read may have been lowered since (a cached report, setrlimit
            # after probing): in auto the stack works without registered files, as it does
            # without registered buffers when memlock refuses them.
            if cfg.mode == "on" or exc.errno != errno.EMFILE:
                raise
            worker.note(NAME, f"registering a {files}-slot file table failed with EMFILE; none. {NOFILE_HINT}")
        else:
            worker.resources[FILES_KEY] = table
            worker.note(NAME, f"registered a {files}-slot fixed-file table")


def _on_ring_owner(worker: Worker, table: FixedFileTable, fn: Callable[[int], T], arg: int) -> T:
    """Run a registration on the thread the kernel accepts it from.

    A SINGLE_ISSUER ring takes io_uring_register only from its creator, the
    worker (EEXIST, "File exists", from any other thread); other rings take it
    from any thread, so the opening thread does it without a thread hop.
    """
    if table.ring.flags & SetupFlag.SINGLE_ISSUER:
        return worker.call(fn, arg)
    return fn(arg)


@hookimpl
def uringstack_file_opened(handle: FileHandle, worker: Worker) -> None:
    table = worker.resources.get(FILES_KEY)
    if not isinstance(table, FixedFileTable) or handle.ring is not table.ring:
        return
    slot = _on_ring_owner(worker, table, table.attach, handle.fd)
    if slot is not None:
        handle.fixed_index = slot


@hookimpl
def uringstack_file_closed(handle: FileHandle, worker: Worker) -> None:
    table = worker.resources.get(FILES_KEY)
    slot = handle.fixed_index
    if isinstance(table, FixedFileTable) and slot is not None and not table.ring.closed:
        _on_ring_owner(worker, table, table.detach, slot)
        handle.fixed_index = None


@hookimpl
def uringstack_stack_teardown(stack: Stack) -> None:
    for worker in stack.workers:
        table = worker.resources.pop(FILES_KEY, None)
        if isinstance(table, FixedFileTable):
            worker.call(table.close)
        pool = worker.buffers.unregister(NAME)
        if isinstance(pool, BufferPool):
            worker.call(pool.close)
