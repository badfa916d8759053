"""The sqpoll plugin: a kernel thread polls the submission queue (IORING_SETUP_SQPOLL).

With SQPOLL, submitting is a store to shared memory: no io_uring_enter while
the poller is awake.  It wakes slowly after ``idle_ms`` of idleness (liburing
then sets IORING_SQ_NEED_WAKEUP and ``io_uring_submit`` enters once to wake
it), and it burns a whole CPU while busy: on a machine whose every core runs
a worker, the poller competes with the application and loses more than it
saves.  ``auto`` follows ``uringstack tune``'s measurement of SQPOLL on and
off where one holds (``caps.tuning``, docs/tune.md); without one it enables
SQPOLL only on machines with ``min_cpus`` CPUs or more and a CPU left over
for the poller, and says which rule applied.  O_DSYNC writes through an SQPOLL ring
took milliseconds on kernel 6.18 (fio shows the same), so the WAL never
writes through one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from uringstack.feature import Feature
from uringstack.hookspecs import hookimpl
from uringstack.plan import worker_cpus
from uringstack.ring.flags import SetupFlag
from uringstack.ring.params import ring_name
from uringstack.tune.model import TuneDimension
from uringstack.types import FeatureConfig, FeatureMode, PlanError

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring.params import RingParams
    from uringstack.tune.model import TuneTarget

NAME = "sqpoll"
_ROLES = ("storage",)


class SqpollConfig(FeatureConfig):
    """``[sqpoll]``: kernel-side submission polling."""

    mode: FeatureMode = Field("auto", description="auto: only with a spare CPU for the poller; on; off")
    idle_ms: int = Field(1000, ge=1, le=60_000, description="poller sleeps after this much idleness")
    cpu: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        "auto",
        description=(
            "CPU for the poller; auto: a CPU without a worker, else the worker's own. "
            "A CPU that is not online, or not allowed for this process (cpuset, taskset), is a plan error"
        ),
    )
    share: bool = Field(True, description="all rings share the first ring's poller (IORING_SETUP_ATTACH_WQ)")
    # 2000 µs: measured at QD32 on the 2-vCPU VM, 200 µs left 0.023 io_uring_enter per I/O
    # (completions took longer than the spin) while 2000 µs reached 0.0001 (BENCHMARKS.md).
    spin_us: int = Field(
        2000, ge=0, le=1_000_000, description="busy-poll the CQ this long before sleeping in the kernel"
    )
    min_spare_cpus: int = Field(1, ge=0, description="auto enables SQPOLL only with this many CPUs free of workers")
    min_cpus: int = Field(4, ge=1, description="auto enables SQPOLL only on machines with at least this many CPUs")


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    cfg = FEATURE.section(config)
    _check_cpu(caps, cfg)
    if cfg.mode == "off":
        return False, "off (config)"
    if not caps.uring.usable or config.core.backend == "fallback":
        return False, "no io_uring rings"
    if not caps.uring.accepts("SQPOLL"):
        err = caps.uring.setup_flags.get("SQPOLL")
        return False, f"the kernel refuses IORING_SETUP_SQPOLL ({err.error if err else 'not probed'})"
    if "SQPOLL_NONFIXED" not in caps.uring.features:
        # Before 5.11 the poller serves only registered files: every op on a plain
        # descriptor completes with -EBADF, and a stack opens more files than it can
        # register.  (Debian 11's 5.10 has the feature: a backport of a later io_uring.)
        return False, (
            "this kernel's SQPOLL serves only registered files (no IORING_FEAT_SQPOLL_NONFIXED, "
            "kernels before 5.11): I/O on any other descriptor would fail with EBADF"
        )
    if cfg.mode == "on":
        return True, "on (config)"
    measured = caps.tuning.comparisons(NAME) if caps.tuning is not None else []
    if measured:
        # SQPOLL costs a CPU: it must win on every tuned target
        enabled = all(c.best == "on" for c in measured)
        return enabled, "auto: " + "; ".join(c.describe(LABELS) for c in measured)
    why = caps.tuning.no_measurement(NAME) if caps.tuning is not None else "no measurement looked up"
    if len(caps.cpus.allowed) < cfg.min_cpus:
        return False, (
            f"auto, {why}: rule min_cpus: {len(caps.cpus.allowed)} CPUs < {cfg.min_cpus}, so the poller "
            f"and its busy completion wait would take most of the machine; "
            f'set [sqpoll] mode = "on" to use it anyway'
        )
    workers = worker_cpus(caps, config)
    spare = [c for c in caps.cpus.allowed if c not in workers]
    if len(spare) < cfg.min_spare_cpus:
        return False, (
            f"auto, {why}: rule min_spare_cpus: {len(spare)} CPU(s) free of workers "
            f"({len(workers)} of {len(caps.cpus.allowed)} run one) < {cfg.min_spare_cpus}, so a polling "
            f'thread would compete with them; set [sqpoll] mode = "on" or give fewer cores to workers '
            f"to use it"
        )
    if not spare:  # min_spare_cpus = 0: the poller runs beside a worker (see _poller_cpu)
        where = (
            f"one poller, on CPU {workers[0]} beside its worker, serves every ring (share)"
            if cfg.share
            else "each ring's poller shares its worker's CPU"
        )
        return True, f"auto, {why}: rule min_spare_cpus = 0: {where}"
    return True, f"auto, {why}: rule: CPU {spare[0]} is free of workers and polls the submission queues"


LABELS = {"on": "with SQPOLL", "off": "without"}


def _poller_cpu(caps: Capabilities, config: StackConfig, params: RingParams) -> int | None:
    cfg = FEATURE.section(config)
    if cfg.cpu != "auto":
        return cfg.cpu
    workers = worker_cpus(caps, config)
    spare = [c for c in caps.cpus.allowed if c not in workers]
    return spare[0] if spare else params.core


def _check_cpu(caps: Capabilities, cfg: SqpollConfig) -> None:
    """An explicit ``cpu`` must be one the kernel can pin the poller to.

    Checked at plan time: the kernel refuses with EINVAL an sq_thread_cpu that
    is offline or outside the CPUs the process may run on (its affinity, which
    a cpuset or taskset narrows), and the ring setup would then drop the
    pinning and run unpinned.  Until session 32 only "online" was checked:
    under ``taskset -c 1`` the plan said "poller on cpu 0" and the poller floated.
    """
    if cfg.mode == "off" or cfg.cpu == "auto" or cfg.cpu in caps.cpus.allowed:
        return
    allowed = ", ".join(map(str, caps.cpus.allowed)) or "none found"
    if cfg.cpu not in caps.cpus.online:
        online = ", ".join(map(str, caps.cpus.online)) or "none found"
        raise PlanError(
            f"sqpoll.cpu = {cfg.cpu}: CPU {cfg.cpu} is not online on this machine (online CPUs: {online}; "
            f"this process may run on: {allowed})"
        )
    raise PlanError(
        f"sqpoll.cpu = {cfg.cpu}: CPU {cfg.cpu} is online but not among the CPUs this process may run on "
        f"(allowed CPUs: {allowed}; a cpuset or taskset narrows them), and the kernel refuses to pin the "
        f'poller outside them; set sqpoll.cpu to one of {allowed} or to "auto"'
    )


FEATURE = Feature(NAME, SqpollConfig, _decide)
uringstack_config_sections, uringstack_check_support = FEATURE.hooks()


@hookimpl
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    if params.role not in _ROLES:
        return
    enabled, reason, _ = FEATURE.decide(caps, config)
    if not enabled:
        params.reasons.append(f"sqpoll: not set: {reason}")
        return
    cfg = FEATURE.section(config)
    params.add(SetupFlag.SQPOLL, f"sqpoll: {reason}; idle {cfg.idle_ms} ms")
    params.sq_thread_idle_ms = cfg.idle_ms
    params.spin_us = max(params.spin_us, cfg.spin_us)
    if FEATURE.section(config).mode == "on":
        params.required |= SetupFlag.SQPOLL
    first = worker_cpus(caps, config)[0]
    if cfg.share and params.core != first:
        # No CPU of its own: the kernel gives an attached ring the poller thread of the
        # ring it attaches to, wherever that one runs (its fdinfo names that thread and
        # CPU), so a CPU here would only make the plan show a poller that does not exist
        params.attach_to = ring_name(first, params.role)
        params.reasons.append(f"sqpoll: shares the poller of {params.attach_to} (ATTACH_WQ)")
    else:
        params.sq_thread_cpu = _poller_cpu(caps, config, params)


@hookimpl
def uringstack_tune_candidates(target: TuneTarget, caps: Capabilities, config: StackConfig) -> TuneDimension | None:
    if not caps.uring.accepts("SQPOLL") or config.core.backend == "fallback":
        return None
    return TuneDimension.off_or_on(NAME, "a kernel thread polls the submission queue (IORING_SETUP_SQPOLL)", LABELS)
