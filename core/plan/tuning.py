"""How measurements reach a plan: looked up once per plan, read by the plan's decisions.

:func:`attach_tuning` gives a capability report its ``tuning`` (the records
that hold here, from the cache or ``[core] tune_results``).  It never
measures itself: ``[core] tune = "on-start"`` hands it a *calibrate* function
(``open_stack`` passes :func:`uringstack.tune.start.calibrate_on_start`),
because the tuner builds stacks and so sits above the plan.  Nothing here
raises: a failure is a line in ``caps.tuning.ignored`` and the plan falls
back to rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from uringstack.probe.tune_cache import load_state
from uringstack.probe.tuning import TuneState

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities

Calibrate = Callable[[TuneState], TuneState]
"""Runs a calibration and returns the state looked up after it (or *before* with the failure noted)."""


def attach_tuning(caps: Capabilities, config: StackConfig, calibrate: Calibrate | None = None) -> Capabilities:
    """*caps* with ``tuning`` looked up (kept when it already has one), less the records
    measured on the backend this config's stack does not use.

    *calibrate* runs when ``[core] tune = "on-start"`` finds no valid
    measurement (``None``: a dry run such as ``make_plan`` never measures).
    """
    state = caps.tuning
    if state is None:
        state = load_state(config.core.tune_results)
        if (
            calibrate is not None
            and config.core.tune == "on-start"
            and not state.records
            and not config.core.tune_results
        ):
            state = calibrate(state)
    held = _on_this_backend(state, storage_backend(caps, config))
    return caps if held is caps.tuning else caps.model_copy(update={"tuning": held})


def storage_backend(caps: Capabilities, config: StackConfig) -> Literal["uring", "fallback"]:
    """``uring`` when the stack's storage rings are io_uring's, else ``fallback`` (the config
    forces it, or io_uring is unusable here): what a plan builds and a tune run measures."""
    return "uring" if caps.uring.usable and config.core.backend != "fallback" else "fallback"


def _on_this_backend(state: TuneState, backend: str) -> TuneState:
    """*state* without the records measured on the other backend, each ignored with why: a
    tune run under ``URINGSTACK_CORE__BACKEND=fallback`` measured the thread pool, and its
    worker count was applied to every io_uring plan after it (until session 32)."""
    other = [a for a in state.records if a.record.backend and a.record.backend != backend]
    if not other:
        return state
    return state.model_copy(
        update={
            "records": [a for a in state.records if a not in other],
            "ignored": [
                *state.ignored,
                *(
                    f"{a.source} ({a.record.target}): measured on the {a.record.backend} backend; "
                    f"this config's stack uses {backend}"
                    for a in other
                ),
            ],
        }
    )


def measured_cores(caps: Capabilities) -> tuple[list[int], str] | None:
    """The worker CPUs the measurement chose, and the reason; ``None`` without a measurement."""
    state = caps.tuning
    if state is None:
        return None
    best: list[int] = []
    why: list[str] = []
    for applied in state.records:
        record = applied.record
        comparison = record.comparison("workers")
        if comparison is None:
            continue
        winner = next(
            (
                record.measurements[i]
                for i in record.compared["workers"]
                if record.measurements[i].settings.get("workers") == comparison.best
            ),
            None,
        )
        cores = list(winner.overrides.get("core.cores", [])) if winner else []
        if len(cores) > len(best):
            best = cores
        why.append(comparison.describe({"1": "with 1 worker", "2": "with 2 workers"}))
    if not best:
        return None
    allowed = list(caps.cpus.allowed)
    if any(c not in allowed for c in best):
        best = allowed[: len(best)]
    return best, "; ".join(why)


def measured_batch(caps: Capabilities, target: str | None = None) -> int | None:
    """The batch size (reads per ``start_read_many``) the calibration chose, ``None`` without one.

    The stack cannot pick it for the application; a caller that can (the
    bench's tuned row) asks here.  A record of *target* itself is preferred.
    """
    state = caps.tuning
    if state is None:
        return None
    found = state.comparisons("batch")
    if target is not None:
        mine = [c for c in found if c.target == os.path.abspath(target)]
        found = mine or found
    for comparison in found:
        if comparison.best.isdigit():
            return int(comparison.best)
    return None


def plan_notes(caps: Capabilities) -> list[str]:
    """What the plan should say about measurements: which apply, which were ignored."""
    state = caps.tuning
    if state is None:
        return []
    notes = [f"tune: ignored {line}" for line in state.ignored]
    for applied in state.records:
        r = applied.record
        best = r.best_measurement()
        if best is None:
            continue
        # Only the dimensions the run compared: the others' values in the best measurement
        # were never put against another (a plan registering buffers read "best fixedbuf=off"
        # after a run whose fixedbuf=on candidate the budget skipped, until session 32)
        compared = {k: v for k, v in best.settings.items() if r.comparison(k) is not None}
        settings = ", ".join(f"{k}={v}" for k, v in compared.items()) or "nothing compared"
        skipped = sorted(set(best.settings) - set(compared))
        notes.append(
            f"tune: using {r.target} ({applied.source}, tuned {r.tuned_at}): best {settings} "
            f"at {best.iops:,.0f} IOPS, {best.cpu_us_per_io:.1f} µs CPU per I/O"
            + (f" (not compared: {', '.join(skipped)})" if skipped else "")
        )
        batch = r.comparison("batch")
        if batch is not None:
            notes.append(
                f"tune: issue reads in batches of {batch.best} per start_read_many/read_many call "
                f"({batch.describe({v: f'in batches of {v}' for v in batch.iops})})"
            )
    if not state.records:
        notes.append(f"tune: {state.no_measurement()}; plugins in auto follow their rules")
    return notes
