"""The calibration's data models, under the import path plugins use.

They live in :mod:`uringstack.probe.tuning` (the probe's capability report
carries them, so they sit below everything that reads it); this module
re-exports them for plugins offering candidates to ``uringstack tune``.
"""

from __future__ import annotations

from uringstack.probe.tuning import (
    FORMAT_VERSION,
    MIN_GAIN,
    AppliedRecord,
    Comparison,
    DeviceIdentity,
    Measurement,
    TargetKind,
    TuneChoice,
    TuneDimension,
    TuneDocument,
    TuneKey,
    TuneRecord,
    TuneState,
    TuneTarget,
    Workload,
)

__all__ = [
    "FORMAT_VERSION",
    "MIN_GAIN",
    "AppliedRecord",
    "Comparison",
    "DeviceIdentity",
    "Measurement",
    "TargetKind",
    "TuneChoice",
    "TuneDimension",
    "TuneDocument",
    "TuneKey",
    "TuneRecord",
    "TuneState",
    "TuneTarget",
    "Workload",
]
