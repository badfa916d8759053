"""Calibration: ``uringstack tune`` measures candidate settings on the real device.

Plugins offer settings through the ``uringstack_tune_candidates`` hook; the
runner (:mod:`~uringstack.tune.runner`) measures them with short runs through
the public API and stores one record per target in the cache
(:mod:`~uringstack.probe.tune_cache`); every later plan finds the records that
hold on this machine in ``caps.tuning`` (:class:`TuneState`) and plugins in
``auto`` decide from them.  See docs/tune.md.

This package module imports only the data models (:mod:`uringstack.probe.tuning`).
"""

from __future__ import annotations

from uringstack.probe.tuning import TuneChoice, TuneDimension, TuneState, TuneTarget

__all__ = ["TuneChoice", "TuneDimension", "TuneState", "TuneTarget"]
