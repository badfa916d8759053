"""Fake measurements: records as `uringstack tune` would write them, with chosen IOPS."""

from __future__ import annotations

from typing import Any

from uringstack.probe.tune_key import MachineFacts, key_of
from uringstack.probe.tuning import Measurement, TargetKind, TuneRecord


def fake_record(
    target: str,
    comparisons: dict[str, dict[str, float]],
    *,
    facts: MachineFacts | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    kind: TargetKind = "directory",
) -> TuneRecord:
    """A record of *target* whose dimension D compared values with the given IOPS.

    ``comparisons = {"sqpoll": {"off": 100e3, "on": 121e3}}``: the first value
    of each dimension is its baseline; *overrides* maps ``"dim=value"`` to the
    config overrides of that measurement.
    """
    overrides = overrides or {}
    base = {d: next(iter(v)) for d, v in comparisons.items()}
    measurements: list[Measurement] = []
    compared: dict[str, list[int]] = {}
    for dim, values in comparisons.items():
        idx = []
        for value, iops in values.items():
            settings = {**base, dim: value}
            measurements.append(
                Measurement(
                    settings=settings,
                    overrides=overrides.get(f"{dim}={value}", {}),
                    iops=iops,
                    cpu_us_per_io=10.0,
                    ops=int(iops),
                    seconds=1.0,
                )
            )
            idx.append(len(measurements) - 1)
        compared[dim] = idx
    best = max(range(len(measurements)), key=lambda i: measurements[i].iops)
    return TuneRecord(
        target=target,
        kind=kind,
        key=key_of(target, facts),
        tuned_at="2026-11-30T19:40:00+00:00",
        elapsed_s=9.0,
        measurements=measurements,
        compared=compared,
        best=best,
    )
