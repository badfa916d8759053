"""The plan: what the stack will build on this machine, and why.

``make_plan`` is a dry run: it asks every plugin for its verdict and lets
each adjust the parameters of every ring, but creates nothing.  The same
plan is printed by ``uringstack plan`` and built by ``open_stack``, so what
the user reads is what runs.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, PrivateAttr

from uringstack.plan.ringmem import (
    charged_limit_pages,
    no_room_reason,
    params_pages,
    shrink_to_fit,
    smallest_pages,
    without_room_for_rings,
)
from uringstack.plan.tuning import attach_tuning, measured_cores, plan_notes, storage_backend
from uringstack.ring.params import RingParams
from uringstack.types import FeatureVerdict, PlanError, Target, TargetKind

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import UringstackPluginManager
    from uringstack.probe.model import Capabilities
    from uringstack.types import BackendFactory


class RingPlan(BaseModel):
    """One ring of one worker."""

    name: str
    role: str
    core: int | None
    entries: int
    flags: list[str]
    required: list[str] = Field(default_factory=list)
    sq_thread_cpu: int | None = None
    sq_thread_idle_ms: int = 0
    attach_to: str | None = None
    spin_us: int = 0
    max_in_flight: int | None = None
    reasons: list[str] = Field(default_factory=list)


class WorkerPlan(BaseModel):
    """One worker: a thread pinned to one CPU, owning its rings."""

    index: int
    cpu: int | None
    rings: list[RingPlan] = Field(default_factory=list)


class TargetPlan(BaseModel):
    """Which backend would serve a probed device, and why."""

    target: str
    kind: str
    backend: str
    reason: str


class Plan(BaseModel):
    """Everything ``open_stack`` will build, with the reason for each decision."""

    io_uring_usable: bool
    io_uring_reason: str
    default_backend: str
    default_backend_reason: str
    plugins: list[str]
    verdicts: list[FeatureVerdict]
    workers: list[WorkerPlan]
    targets: list[TargetPlan] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    _params: dict[str, RingParams] = PrivateAttr(default_factory=dict)

    def ring_params(self, name: str) -> RingParams:
        """A fresh copy of the parameters the ring *name* is built from."""
        return copy.deepcopy(self._params[name])


def _flag_names(flags: Any) -> list[str]:
    return [f.name for f in type(flags) if f in flags and f.name is not None]


def _ring_plan(name: str, p: RingParams) -> RingPlan:
    return RingPlan(
        name=name,
        role=p.role,
        core=p.core,
        entries=p.entries,
        flags=_flag_names(p.effective_flags()),
        required=_flag_names(p.required),
        sq_thread_cpu=p.sq_thread_cpu,
        sq_thread_idle_ms=p.sq_thread_idle_ms,
        attach_to=p.attach_to,
        spin_us=p.spin_us,
        max_in_flight=p.max_in_flight,
        reasons=list(p.reasons),
    )


def worker_cpus(caps: Capabilities, config: StackConfig) -> list[int]:
    """CPUs that get a worker: ``core.cores`` if set, else the measured best (``uringstack tune``),
    else every CPU we may run on."""
    cores = config.core.cores
    if cores == "auto":
        measured = measured_cores(caps)
        return measured[0] if measured else list(caps.cpus.allowed)
    bad = [c for c in cores if c not in caps.cpus.allowed]
    if bad:
        raise PlanError(f"core.cores: CPUs {bad} are not available to this process (allowed: {caps.cpus.allowed})")
    return list(cores)


CORE_BACKEND = "uring"
"""The name of the core's own backend: the worker's io_uring storage ring
(:class:`uringstack.stack.uring_backend.UringBackend`)."""

CORE_BACKEND_REASON = "io_uring storage ring of the worker"


def select_backend(
    target: Target, caps: Capabilities, config: StackConfig, pm: UringstackPluginManager
) -> BackendFactory | None:
    """The plugin's backend factory that serves *target*; ``None``: the core's io_uring (:data:`CORE_BACKEND`).

    Raises :class:`PlanError` when neither can serve it.  The plan names the
    core's backend without building it; the stack opens it.
    """
    require_uring(caps, config)
    chosen = pm.select_backend(target=target, caps=caps, config=config)
    if chosen is not None:
        return chosen
    if config.core.backend == "fallback":
        where = (
            "it is listed in core.disabled_plugins"
            if "fallback" in config.core.disabled_plugins
            else "it is not installed"
        )
        raise PlanError(
            f"core.backend = 'fallback' but no plugin serves {target.path} without io_uring: "
            f"the fallback plugin is not loaded ({where})"
        )
    if not caps.uring.usable:
        raise PlanError(
            f"io_uring is not usable here ({caps.uring.reason}) and no plugin offers another "
            "backend for it; enable the fallback plugin (remove it from core.disabled_plugins)"
        )
    return None


def require_uring(caps: Capabilities, config: StackConfig) -> None:
    """``core.backend = "uring"`` is a requirement: raise :class:`PlanError` where io_uring is unusable."""
    if config.core.backend == "uring" and not caps.uring.usable:
        raise PlanError(
            f"core.backend = 'uring' requires io_uring, which is not usable here: {caps.uring.reason}; "
            "set core.backend = 'auto' to use the fallback where io_uring is blocked"
        )


def fit_uring_to_memlock(caps: Capabilities, config: StackConfig) -> Capabilities:
    """*caps* with io_uring unusable where not even the smallest storage rings fit RLIMIT_MEMLOCK.

    On kernels that charge ring memory to the limit (``caps.memlock.rings_charged``).
    ``open_stack`` builds from the same report the plan was made from, so the backend
    a handle gets at open time is the one the plan chose.
    """
    if charged_limit_pages(caps) is None:
        return caps
    return without_room_for_rings(caps, config, len(worker_cpus(caps, config)))


def plan_caps(caps: Capabilities, config: StackConfig, pm: UringstackPluginManager) -> Capabilities:
    """The report a plan is made from: *caps* fitted to RLIMIT_MEMLOCK
    (:func:`fit_uring_to_memlock`, then :func:`fit_extra_rings_to_memlock`) with the tune
    measurements of the backend that leaves (``attach_tuning``).  ``make_plan``,
    ``open_stack`` and ``uringstack probe``'s verdict lines all start from it, so the
    verdicts a plan prints are the ones its stack's opens act on.  Running it again on
    its own answer changes nothing."""
    caps = fit_uring_to_memlock(caps, config)
    caps = attach_tuning(caps, config)
    return fit_extra_rings_to_memlock(caps, config, pm)


def fit_extra_rings_to_memlock(caps: Capabilities, config: StackConfig, pm: UringstackPluginManager) -> Capabilities:
    """*caps* with each feature in ``auto`` whose extra rings would not fit a charged
    RLIMIT_MEMLOCK, even at the smallest ring size, beside the storage rings and the
    features before it, named in ``caps.memlock.no_room_for`` (their verdicts honour it).

    Features configured ``on`` keep their rings (a requirement: the plan then fails naming
    the pages, as before); those in ``auto`` are kept in the plugins' order while they fit.
    Until session 34 a plan in ``auto`` raised PlanError here instead: under a container's
    64 KiB limit on a 6.18 host with a polling NVMe disk, 3 workers' storage rings fitted and
    their IOPOLL and passthrough rings did not, so nothing could be opened at all.
    """
    given = caps
    if caps.memlock.no_room_for:  # decided afresh for this config (a report of another plan's)
        caps = caps.model_copy(update={"memlock": caps.memlock.model_copy(update={"no_room_for": {}})})
    limit = charged_limit_pages(caps)
    cpus = worker_cpus(caps, config)
    if limit is None or storage_backend(caps, config) != "uring" or not cpus:
        return caps

    def pages(role: str) -> int:
        params = RingParams(
            entries=config.core.ring_entries, max_in_flight=config.core.max_in_flight, role=role, core=cpus[0]
        )
        _core_ring_decisions(params, caps, config)
        pm.ring_params(params=params, caps=caps, config=config)
        return len(cpus) * smallest_pages(params)

    extras = [v for v in pm.check_support(caps=caps, config=config) if v is not None and v.enabled and v.ring_roles]
    used = pages("storage")
    room: dict[str, str] = {}
    for v in sorted(extras, key=lambda v: v.mode != "on"):  # (stable: the plugins' order within each)
        need = sum(pages(role) for role in v.ring_roles)
        if v.mode == "on" or used + need <= limit:
            used += need
        else:
            room[v.plugin] = no_room_reason(caps, len(cpus), used, need, v.ring_roles)
    if room == given.memlock.no_room_for:
        return given
    return caps.model_copy(update={"memlock": caps.memlock.model_copy(update={"no_room_for": room})})


def make_plan(caps: Capabilities, config: StackConfig, pm: UringstackPluginManager) -> Plan:
    """Ask the plugins and build the plan (no ring is created).

    Raises :class:`PlanError` when the configuration requires what this
    machine cannot do (a feature ``on``, ``core.backend = "uring"`` where
    io_uring is blocked) and :class:`~uringstack.config.ConfigError` when
    settings contradict each other (a plugin raises it from its verdict).

    Measurements of ``uringstack tune`` are looked up first unless *caps*
    already carries them (``caps.tuning``; see docs/tune.md); a plan never
    measures (``core.tune = "on-start"`` calibrates in ``open_stack``).
    """
    caps = plan_caps(caps, config, pm)
    require_uring(caps, config)
    verdicts = [v for v in pm.check_support(caps=caps, config=config) if v is not None]
    impossible = [v for v in verdicts if v.mode == "on" and not v.enabled]
    if impossible:
        raise PlanError("; ".join(f"{v.plugin} is configured 'on' but cannot be used: {v.reason}" for v in impossible))
    uring_for_storage = storage_backend(caps, config) == "uring"
    probe_target = Target(path="<regular file>", kind="file", direct=config.core.direct, writable=True)
    default = select_backend(probe_target, caps, config, pm)
    default_name, default_reason = _named(default)
    plan = Plan(
        io_uring_usable=caps.uring.usable,
        io_uring_reason=caps.uring.reason or "io_uring_setup works in this process",
        default_backend=default_name,
        default_backend_reason=default_reason,
        plugins=pm.plugin_names(),
        verdicts=verdicts,
        workers=[],
    )
    plan.notes.extend(plan_notes(caps))
    if config.core.cores == "auto":
        measured = measured_cores(caps)
        plan.notes.append(
            f"core: workers on CPUs {measured[0]}: {measured[1]}"
            if measured
            else "core: a worker on every allowed CPU (core.cores = auto, no worker-count measurement)"
        )
    roles = ["storage"] if uring_for_storage else []
    for v in verdicts:
        if v.enabled and uring_for_storage:
            roles.extend(r for r in v.ring_roles if r not in roles)
    for index, cpu in enumerate(worker_cpus(caps, config)):
        worker = WorkerPlan(index=index, cpu=cpu)
        for role in roles:
            params = RingParams(
                entries=config.core.ring_entries, max_in_flight=config.core.max_in_flight, role=role, core=cpu
            )
            _core_ring_decisions(params, caps, config)
            pm.ring_params(params=params, caps=caps, config=config)
            name = params.name
            if params.attach_to is not None and params.attach_to not in plan._params:
                raise PlanError(
                    f"ring {name}: attach_to={params.attach_to!r} names no ring planned before it "
                    f"(planned: {', '.join(plan._params) or 'none'})"
                )
            plan._params[name] = params
            worker.rings.append(_ring_plan(name, params))
        plan.workers.append(worker)
    note = shrink_to_fit(list(plan._params.values()), caps)
    if note:
        plan.notes.append(note)
        for worker in plan.workers:
            worker.rings = [_ring_plan(r.name, plan._params[r.name]) for r in worker.rings]
        limit = charged_limit_pages(caps)
        need = sum(params_pages(p) for p in plan._params.values())
        if limit is not None and need > limit:
            raise PlanError(f"{note}; even at their smallest the planned rings need {need} pages")
    if not uring_for_storage:
        plan.notes.append(f"no io_uring rings: {default_reason}")
    for dev in caps.devices:
        # Read-only targets: a dry run opens no device (access is the probe's fact).
        nodes: tuple[tuple[str | None, TargetKind], ...] = ((dev.path, "block"), (dev.generic_char, "nvme_char"))
        for path, kind in nodes:
            if path is None:
                continue
            target = Target(path=path, kind=kind, direct=True, writable=False, device=dev)
            try:
                name, reason = _named(select_backend(target, caps, config, pm))
                plan.targets.append(TargetPlan(target=path, kind=kind, backend=name, reason=reason))
            except PlanError as exc:
                plan.targets.append(TargetPlan(target=path, kind=kind, backend="none", reason=str(exc)))
    return plan


def _named(factory: BackendFactory | None) -> tuple[str, str]:
    """The name and reason of a :func:`select_backend` answer."""
    return (CORE_BACKEND, CORE_BACKEND_REASON) if factory is None else (factory.name, factory.reason)


def _core_ring_decisions(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    """Decisions the core makes itself, recorded like a plugin's.

    SINGLE_ISSUER lets the kernel skip submission locking, but then only the
    thread that created the ring may submit to it or register with it (the
    kernel answers EEXIST otherwise).  A handle submits from whichever thread
    calls it, so the flag is safe only when every call runs on the worker:
    ``auto`` therefore never sets it, and ``on`` sets it and confines each
    handle's I/O to its worker thread (``stack.run_on_workers``,
    ``handle.worker.call``); other threads get ``WrongThreadError``.
    """
    from uringstack.ring.flags import SetupFlag

    mode = config.core.single_issuer
    if mode == "on":
        if not caps.uring.accepts("SINGLE_ISSUER"):
            err = caps.uring.setup_flags.get("SINGLE_ISSUER")
            raise PlanError(
                "core.single_issuer = 'on' but the kernel refuses IORING_SETUP_SINGLE_ISSUER "
                f"({err.error if err else 'not probed'}; Linux 6.0+ needed)"
            )
        params.add(
            SetupFlag.SINGLE_ISSUER,
            "core: SINGLE_ISSUER on (config); this ring's I/O must run on its worker's thread "
            "(stack.run_on_workers, handle.worker.call)",
        )
        params.required |= SetupFlag.SINGLE_ISSUER
    else:
        params.reasons.append(
            f"core: SINGLE_ISSUER {mode}: not set, handles submit from the calling threads under "
            "the ring's lock, which the flag forbids (set core.single_issuer = 'on' to confine "
            "I/O to the worker threads)"
        )
