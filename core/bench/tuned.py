"""``uringstack bench randread --tuned``: the stack ``auto`` builds after ``uringstack tune``, beside the ladder.

The ladder's rungs each fix their modes, so they measure the same thing
whatever the tune cache holds.  This row is the other side of the issue's
promise: calibrate the bench's own file first (``uringstack tune FILE``, the
cache written as the command writes it), then open a stack with the
**default config**, so every plugin in ``auto`` decides from the measurement,
and drive it the way the measurement says an application should (the batch
size the calibration chose, the queue depth shared by the workers the plan
made).  Its IOPS over the best public-API rung of the same run is the
``summary.tuned.vs_best`` ratio: how close ``auto`` comes to the best mode.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uringstack.bench.api_loops import handle_loop
from uringstack.bench.ladder import Rung
from uringstack.bench.metrics import ModeResult, merge, result_from_loop, wait_loops
from uringstack.bench.spec import BenchSpec

if TYPE_CHECKING:
    from uringstack.probe.model import Capabilities

TUNED = "tuned (auto)"
TUNED_API = "tuned"
"""The row's ``api``: the public API, but kept out of ``summary.best_mode`` (it is compared to it)."""
DEFAULT_TUNE_BUDGET_S = 10.0

Tick = Callable[[], None]

RUNG = Rung(
    TUNED,
    "api",
    "the default config after `uringstack tune` on the file: auto decides from the measurement; "
    "prepared batches (prepare_reads, as the batched rungs) of the measured size, the queue depth "
    "shared by the planned workers",
    prepared=True,
)


def why_not(spec: BenchSpec) -> str:
    """Why the tuned row cannot run for *spec* ("" when it can): tune measures 4 KiB-class random reads."""
    if spec.workload != "randread":
        return f"uringstack tune measures random reads; {spec.workload} has no measurement to follow"
    return ""


def calibrate(spec: BenchSpec, budget_s: float) -> dict[str, Any]:
    """``uringstack tune`` on the bench's file with its queue depth and block size; the cache is written."""
    from uringstack.probe.tuning import Workload
    from uringstack.tune.runner import tune

    t0 = time.perf_counter()
    workload = Workload(block_size=spec.block_size, queue_depth=spec.queue_depth, direct=spec.direct)
    [(record, where)] = tune([spec.file], budget_s, workload=workload, budget_option="--tune-budget")
    best = record.best_measurement()
    return {
        "target": record.target,
        "cache": where,
        "budget_s": budget_s,
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "best": None if best is None else dict(best.settings),
        "best_iops": None if best is None else round(best.iops, 1),
        "noise": record.noise,
    }


def run_tuned(spec: BenchSpec, caps: Capabilities, tick: Tick | None = None) -> ModeResult:
    """The stack of the default config on *spec.file*, measured like a rung."""
    from uringstack.plan.tuning import measured_batch
    from uringstack.stack import open_stack

    # tuning=None: open_stack looks the measurements up, as an application's stack does
    stack = open_stack(caps=caps.model_copy(update={"tuning": None}))
    try:
        workers = stack.workers
        depth = max(1, spec.queue_depth // len(workers))  # the queue depth is shared, as tune measured it
        batch = measured_batch(stack.caps, spec.file) or spec.batch_size
        run = dataclasses.replace(spec, queue_depth=depth, batch=min(batch, depth), workers=len(workers))
        handles = [stack.open(spec.file, direct=spec.direct, writable=False, core=w.cpu) for w in workers]
        loops = [h.worker.submit(handle_loop, h, run, RUNG, i) for i, h in enumerate(handles)]
        row = result_from_loop(TUNED, merge(wait_loops(loops, tick)))
        row.api = TUNED_API
        described = stack.describe()["workers"]
        row.details = {
            "backend": handles[0].backend,
            "loop": "api",
            "batch": run.batch_size,
            "queue_depth_per_worker": depth,
            "measured": bool(stack.caps.tuning and stack.caps.tuning.records),
            "ring_flags": described[0]["rings"].get("storage", {}).get("flags", []),
            "registered_buffers": described[0]["rings"].get("storage", {}).get("registered_buffers", 0),
            "workers": [{"cpu": w["cpu"], "affinity": w["affinity"]} for w in described],
            "decisions": {v.plugin: f"{'on' if v.enabled else 'off'}: {v.reason}" for v in stack.plan.verdicts},
            "notes": [n for n in stack.plan.notes if n.startswith(("tune:", "core:"))],
        }
        for h in handles:
            h.close()
        return row
    finally:
        stack.close()


def tuned_row(
    spec: BenchSpec, caps: Capabilities, tick: Tick | None = None, calibration: dict[str, Any] | None = None
) -> ModeResult:
    """:func:`run_tuned`, or the row saying why it was skipped or how it failed."""
    why = why_not(spec)
    if why:
        return ModeResult(mode=TUNED, kind="uringstack", api=TUNED_API, status="skipped", reason=why)
    if calibration is not None and "error" in calibration:
        # measuring auto's rules here would be mislabelled as the tuned mode
        reason = f"uringstack tune {spec.file} failed: {calibration['error']}"
        return ModeResult(mode=TUNED, kind="uringstack", api=TUNED_API, status="failed", reason=reason)
    try:
        return run_tuned(spec, caps, tick)
    except Exception as exc:
        return ModeResult(
            mode=TUNED, kind="uringstack", api=TUNED_API, status="failed", reason=f"{type(exc).__name__}: {exc}"
        )


def summary(rows: list[ModeResult], best_mode: str | None, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """``summary.tuned``: the tuned row's IOPS over the best public-API rung's, and the calibration."""
    tuned = next((r for r in rows if r.mode == TUNED), None)
    best = next((r for r in rows if r.mode == best_mode and r.status == "ok"), None)
    out: dict[str, Any] = {
        "status": "missing" if tuned is None else tuned.status,
        "iops": None,
        "best_mode": best_mode,
        "vs_best": None,
        "calibration": calibration,
    }
    if tuned is not None and tuned.status == "ok":
        out["iops"] = round(tuned.iops, 1)
        if best is not None and best.iops > 0:
            out["vs_best"] = round(tuned.iops / best.iops, 4)
    return out
