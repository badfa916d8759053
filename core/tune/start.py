"""``[core] tune = "on-start"``: a bounded calibration when ``open_stack`` finds no valid measurement."""

from __future__ import annotations

import os

from uringstack.probe.tune_cache import load_state
from uringstack.probe.tuning import TuneState
from uringstack.tune import runner

ON_START_BUDGET_S = 3.0
"""Calibration budget of ``[core] tune = "on-start"``: start-up waits this long, once per key."""


def calibrate_on_start(before: TuneState) -> TuneState:
    """Calibrate the current directory's file system; the state looked up afterwards.

    Never raises: start-up must survive a failed calibration, so the failure
    becomes a line in ``before.ignored`` and the plan follows its rules.
    """
    try:
        runner.tune([os.getcwd()], ON_START_BUDGET_S)
    except Exception as exc:  # start-up must survive a failed calibration: rules apply
        before.ignored.append(f"core.tune = on-start: calibrating {os.getcwd()} failed: {exc}")
        return before
    return load_state("")
