"""despite_signals: bookkeeping run to its end through raising signals, but never forever."""

from __future__ import annotations

import pytest

from uringstack.ring.interrupts import RETRIES, despite_signals


def test_a_step_cut_short_is_run_again_until_it_finishes() -> None:
    runs: list[int] = []

    def step() -> str:
        runs.append(1)
        if len(runs) < 3:
            raise KeyboardInterrupt  # what a raising signal handler does inside the step
        return "done"

    assert despite_signals(step) == "done" and len(runs) == 3


def test_a_step_that_always_fails_raises_instead_of_spinning() -> None:
    runs: list[int] = []

    def broken() -> None:
        runs.append(1)
        raise AttributeError("a bug of its own")

    with pytest.raises(AttributeError, match="a bug of its own"):
        despite_signals(broken)
    assert len(runs) == RETRIES + 1
