"""The calibration: which candidates to run, in what order, within the time budget.

The candidate space is the product of the dimensions (batch size and worker
count from the core, one dimension per plugin that answers
``uringstack_tune_candidates``), far too many to measure in seconds.  So the
search is one dimension at a time (coordinate descent): start from every
dimension's first (cheapest) choice, then for each dimension in turn measure
its other choices with the rest at the best so far, and keep a choice only
if it beats the current best by :data:`~uringstack.probe.tuning.MIN_GAIN`.
That is 2 + sum(choices - 1) runs, and every dimension's comparison differs
in that dimension alone, which is what the plan quotes.

The baseline runs twice, first and second: the difference between the two
is the run-to-run noise of this machine right now (on a busy shared VM it
can reach tens of percent).  A choice must then beat the best by the noise,
not only by MIN_GAIN, so noise never picks the costlier setting.
"""

from __future__ import annotations

import datetime
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.probe.tune_key import MachineFacts, key_of
from uringstack.probe.tuning import (
    MIN_GAIN,
    Measurement,
    TuneChoice,
    TuneDimension,
    TuneRecord,
    TuneState,
    TuneTarget,
    Workload,
)
from uringstack.tune.loop import measure
from uringstack.tune.targets import TuneError, check_target, prepared

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import UringstackPluginManager
    from uringstack.probe.model import Capabilities

DEFAULT_BUDGET_S = 10.0
MAX_BUDGET_S = 86_400.0
MIN_RUN_S = 0.2
"""Shortest measured window worth having; a budget that cannot give every run this is refused."""
SETUP_ESTIMATE_S = 0.1
"""Time to open and close one candidate's stack, taken out of its share of the budget."""

TAIL_S = 0.5
"""Kept from each target's share for what follows its runs: removing the scratch file,
writing the cache, printing and exiting."""
MIN_RUNS = 2
"""A target's share of the budget must fit at least the baseline and one alternative;
candidates that no longer fit are reported as skipped."""

OnRun = Callable[[str, float], None]


def core_dimensions(target: TuneTarget, caps: Capabilities) -> tuple[TuneDimension, TuneDimension | None]:
    """The core's own choices: ops per submission, and one worker against two."""
    qd = target.workload.queue_depth
    sizes = sorted({max(1, qd // 8), max(1, qd // 4)})
    batch = TuneDimension(
        name="batch",
        plugin="core",
        summary="reads per start_read_many call (the rest of the queue depth stays in flight)",
        choices=[TuneChoice(value=str(b), label=f"in batches of {b}") for b in sizes]
        if len(sizes) > 1
        else [TuneChoice(value=str(sizes[0])), TuneChoice(value=str(sizes[0]))],
    )
    cpus = preferred_cpus(target, caps)
    workers = None
    if len(cpus) >= 2 and qd >= 2:
        workers = TuneDimension(
            name="workers",
            plugin="core",
            summary="pinned workers sharing the queue depth",
            choices=[
                TuneChoice(value="1", label="with 1 worker", overrides={"core.cores": cpus[:1]}),
                TuneChoice(value="2", label="with 2 workers", overrides={"core.cores": cpus[:2]}),
            ],
        )
    return batch, workers


def preferred_cpus(target: TuneTarget, caps: Capabilities) -> list[int]:
    """Allowed CPUs, those taking the device's completion interrupts first (waiting there saves an IPI)."""
    allowed = list(caps.cpus.allowed)
    irq = list(getattr(target.device, "irq_cpus", []) or [])
    first = [c for c in irq if c in allowed]
    return first + [c for c in allowed if c not in first]


def dimensions(
    target: TuneTarget, caps: Capabilities, config: StackConfig, pm: UringstackPluginManager
) -> list[TuneDimension]:
    """Every dimension to search, in order: batch, the plugins' (by name), workers."""
    batch, workers = core_dimensions(target, caps)
    offered = pm.pm.hook.uringstack_tune_candidates(target=target, caps=caps, config=config)
    plugin_dims = sorted((d for d in offered if d is not None), key=lambda d: d.name)
    dims = [batch, *plugin_dims]
    if workers is not None:
        dims.append(workers)
    names = [d.name for d in dims]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TuneError(f"two plugins offer the same tune dimension {sorted(dup)}")
    return [d for d in dims if len({c.value for c in d.choices}) > 1]


def planned_runs(dims: list[TuneDimension]) -> int:
    """The baseline twice, then every other choice of every dimension once."""
    return 2 + sum(len(d.choices) - 1 for d in dims)


def _point(dims: list[TuneDimension], chosen: dict[str, TuneChoice]) -> tuple[dict[str, str], dict[str, Any], int]:
    settings = {d.name: chosen[d.name].value for d in dims}
    overrides: dict[str, Any] = {}
    for d in dims:
        overrides.update(chosen[d.name].overrides)
    batch = int(settings.get("batch", "1"))
    return settings, overrides, batch


def tune_target(
    target: TuneTarget,
    caps: Capabilities,
    config: StackConfig,
    pm: UringstackPluginManager,
    budget_s: float,
    *,
    on_run: OnRun | None = None,
    facts: MachineFacts | None = None,
) -> TuneRecord:
    """Search the candidates for one prepared target within *budget_s* seconds."""
    started = time.perf_counter()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    dims = dimensions(target, caps, config, pm)
    runs_left = planned_runs(dims)
    # while measuring, plugins in auto must follow their rules, not an older measurement
    quiet = caps.model_copy(update={"tuning": TuneState(searched="not used while tuning")})
    fixed: dict[str, Any] = {}
    if not any(d.name == "workers" for d in dims):
        fixed["core.cores"] = preferred_cpus(target, caps)[:1]
    measurements: list[Measurement] = []
    compared: dict[str, list[int]] = {}
    overhead: list[float] = []  # per run beyond its window (stack set-up, warm-up, drain), learnt

    def run(chosen: dict[str, TuneChoice]) -> int:
        nonlocal runs_left
        settings, overrides, batch = _point(dims, chosen)
        remaining = budget_s - (time.perf_counter() - started)
        # the last warm run's overhead with a margin (the first run pays for cold caches)
        cost = 1.2 * (overhead[-1] if len(overhead) >= 2 else SETUP_ESTIMATE_S)
        seconds = remaining / max(runs_left, 1) - cost
        runs_left -= 1
        label = ", ".join(f"{k}={v}" for k, v in settings.items())
        if remaining < cost + MIN_RUN_S:
            # the budget is a limit: what no longer fits is reported, not run
            m = Measurement(
                settings=settings,
                overrides={**fixed, **overrides},
                status="skipped",
                reason=f"budget exhausted ({remaining:.2f} s left)",
            )
        else:
            seconds = max(MIN_RUN_S, seconds)
            if on_run:
                on_run(label, seconds)
            t0 = time.perf_counter()
            # the hard stop: a set-up slower than foreseen shortens this window, not the budget
            closing = 1.2 * max((x.teardown_s for x in measurements), default=SETUP_ESTIMATE_S / 2)
            m = measure(
                target,
                settings,
                {**fixed, **overrides},
                batch,
                seconds,
                quiet,
                pm,
                deadline=started + budget_s,
                teardown_s=closing,
            )
            overhead.append(max(0.0, time.perf_counter() - t0 - m.seconds))
        measurements.append(m)
        return len(measurements) - 1

    chosen = {d.name: d.choices[0] for d in dims}
    first = run(chosen)
    best = run(chosen)  # the same candidate again: the warm baseline, and the noise
    noise = 0.0
    a, b = measurements[first], measurements[best]
    if a.status == b.status == "ok" and max(a.iops, b.iops) > 0:
        noise = abs(a.iops - b.iops) / max(a.iops, b.iops)
        b.reason = "; ".join(x for x in (b.reason, f"baseline again: {noise:.0%} from the first run (the noise)") if x)
    elif b.status != "ok" and a.status == "ok":
        best = first
    gain = max(MIN_GAIN, noise)
    for d in dims:
        indexes = [best]  # the current best has this dimension at its first choice
        winner = chosen[d.name]
        for choice in d.choices[1:]:
            trial = {**chosen, d.name: choice}
            i = run(trial)
            indexes.append(i)
            cand, cur = measurements[i], measurements[best]
            if cand.status == "ok" and (cur.status != "ok" or cand.iops > cur.iops * (1 + gain)):
                best, winner = i, choice
        chosen[d.name] = winner
        compared[d.name] = indexes
    ok = [i for i, m in enumerate(measurements) if m.status == "ok"]
    return TuneRecord(
        target=target.given,
        kind=target.kind,
        key=key_of(target.given, facts),
        tuned_at=stamp,
        elapsed_s=round(time.perf_counter() - started, 2),
        workload=target.workload,
        measurements=measurements,
        compared=compared,
        noise=round(noise, 4),
        best=best if best in ok else (max(ok, key=lambda i: measurements[i].iops) if ok else None),
        notes=[f"{d.name} ({d.plugin}): {d.summary}" for d in dims if d.summary],
    )


def check_budget(budget_s: float, targets: int, runs: int = MIN_RUNS, option: str = "--budget") -> None:
    """Refuse a budget that cannot give every run of every target a useful window; *option*
    is what the caller's user sets it with (named in the error)."""
    if not 0 < budget_s < float("inf"):  # (NaN fails this too: every comparison with it is false)
        raise TuneError(f"{option} {budget_s:g}: must be a positive, finite number of seconds")
    if budget_s > MAX_BUDGET_S:
        # (1e12 passed: every run's deadline overflowed time.sleep, all candidates failed, and
        # the record of no success replaced a good cache entry, until session 32)
        raise TuneError(f"{option} {budget_s:g}: more than {MAX_BUDGET_S:g} s (a day); give a shorter budget")
    # (each target's share keeps TAIL_S too: without it the advised minimum was refused
    # again later, "leaving 0.1 s", for a budget that could never fit)
    need = round(targets * (runs * (MIN_RUN_S + SETUP_ESTIMATE_S) + TAIL_S), 3)
    if budget_s < need:
        raise TuneError(
            f"{option} {budget_s:g}: too short for {targets} target(s) x ~{runs} runs; give at least {need:.1f} s"
        )


def tune(
    targets: list[str],
    budget_s: float = DEFAULT_BUDGET_S,
    *,
    workload: Workload | None = None,
    on_target: Callable[[str, int], None] | None = None,
    on_run: OnRun | None = None,
    write_cache: bool = True,
    cache_directory: Any = None,
    facts: MachineFacts | None = None,
    spent_s: float = 0.0,
    budget_option: str = "--budget",
) -> list[tuple[TuneRecord, str]]:
    """Calibrate every target within *budget_s* in all; returns each record and where it was stored.

    *spent_s* is time already used from the budget (the CLI passes the time
    since its command started, so the command as a whole keeps to ``--budget``).
    *budget_option* names the budget in errors (``bench --tuned`` sets it with
    ``--tune-budget``: its errors named ``--budget`` until session 32).
    Raises :class:`TuneError` for a bad target or budget before measuring anything.
    """
    # First, before the imports below: under the NVMe VM's emulation they took ~3 s that
    # the budget did not count (session 34: `tune --budget 30` took 32.7 s twice in a row,
    # tune_target given 22.75 s where 19.6 were left)
    started = time.perf_counter() - spent_s  # the budget covers loading, probing and scratch files too
    from uringstack.config import load_config
    from uringstack.plan import fit_uring_to_memlock
    from uringstack.plan.tuning import storage_backend
    from uringstack.probe import probe
    from uringstack.probe.tune_cache import write_entry

    if not targets:
        raise TuneError("no target to tune")
    workload = workload or Workload()
    check_budget(budget_s, len(targets), runs=MIN_RUNS, option=budget_option)
    for given in targets:  # every target, before anything is measured (tune.md: exit 2 first)
        check_target(given, workload)
    loaded = load_config(overrides={"core.tune": "off"})
    if write_cache and loaded.config.core.tune_results:
        # (the cache is written all the same, but no plan of this config reads it)
        warnings.warn(
            f"core.tune_results = {loaded.config.core.tune_results} is set: plans with this config read "
            "that file, not the tune cache written here (`uringstack tune --json` makes such a file)",
            RuntimeWarning,
            stacklevel=2,
        )
    # the stacks measured are fitted to RLIMIT_MEMLOCK (open_stack): where the storage rings
    # do not fit, they run on the fallback, and the records must say so (until session 34
    # they were filed as io_uring's, and plans on the fallback then ignored them)
    caps = fit_uring_to_memlock(probe(plugin_manager=loaded.plugin_manager), loaded.config)
    out: list[tuple[TuneRecord, str]] = []
    for i, given in enumerate(targets):
        device = caps.device_for_path(_block_node(given, caps))
        with prepared(given, workload, device) as target:
            runs = planned_runs(dimensions(target, caps, loaded.config, loaded.plugin_manager))
            # kept for removing the scratch file, writing the cache and exiting
            share = (budget_s - (time.perf_counter() - started)) / (len(targets) - i) - TAIL_S
            need = MIN_RUNS * (MIN_RUN_S + SETUP_ESTIMATE_S)
            if share < need:
                spent = time.perf_counter() - started
                raise TuneError(
                    f"{budget_option} {budget_s:g}: {spent:.1f} s went to start-up, probing and scratch files, "
                    f"and {TAIL_S:g} s is kept for the end, leaving {max(share, 0.0):.1f} s for {target.given}, "
                    f"which needs at least {need:.1f} s; give a larger budget"
                )
            if on_target:
                on_target(target.given, runs)
            record = tune_target(target, caps, loaded.config, loaded.plugin_manager, share, on_run=on_run, facts=facts)
            record.backend = storage_backend(caps, loaded.config)
        where = ""
        if write_cache and record.best is None:
            # A run where no candidate succeeded says nothing about the settings: writing it
            # replaced an earlier good entry with one every plan ignores (session 32).
            warnings.warn(
                f"no candidate succeeded on {target.given}: not written to the tune cache "
                "(an earlier entry for it, if any, is kept)",
                RuntimeWarning,
                stacklevel=2,
            )
        elif write_cache:
            try:
                where = str(write_entry(record, cache_directory))
            except OSError as exc:
                # The measurement is not lost with the cache: it is returned (printed; --json
                # gives a file for [core] tune_results), and the other targets still run.
                # (Until session 27 the error ended the command after the measuring.)
                warnings.warn(
                    f"the results for {target.given} were not written to the tune cache ({exc}); "
                    "`uringstack tune --json` gives them as a file for [core] tune_results",
                    RuntimeWarning,
                    stacklevel=2,
                )
        out.append((record, where))
    return out


def _block_node(given: str, caps: Capabilities) -> str:
    """The probed device node that backs *given* (the node itself for a block device)."""
    import os

    from uringstack.probe.tune_key import identity_of

    try:
        name = identity_of(os.path.abspath(given)).name
    except OSError:
        return given
    for dev in caps.devices:
        if dev.name == name:
            return dev.path
    return given
