"""despite_signals and run_to_end: steps run to their end through raising signals, but never forever."""

from __future__ import annotations

import pytest

from uringstack.ring.interrupts import RETRIES, despite_signals, run_to_end


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


def test_run_to_end_runs_a_flush_cut_short_again_and_returns_the_signals_exception() -> None:
    runs: list[int] = []

    def flush() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise KeyboardInterrupt

    exc = run_to_end(flush)
    assert isinstance(exc, KeyboardInterrupt) and len(runs) == 3


def test_run_to_end_stops_at_a_failure_and_returns_it() -> None:
    runs: list[int] = []

    def flush() -> None:
        runs.append(1)
        raise OSError(28, "No space left on device")

    exc = run_to_end(flush)
    assert isinstance(exc, OSError) and exc.errno == 28 and len(runs) == 1  # never retried


def test_run_to_end_keeps_a_later_runs_failure_as_the_signals_context() -> None:
    runs: list[int] = []

    def flush() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise KeyboardInterrupt
        raise OSError(5, "Input/output error")

    exc = run_to_end(flush)
    assert isinstance(exc, KeyboardInterrupt) and len(runs) == 2
    assert isinstance(exc.__context__, OSError) and exc.__context__.errno == 5


def test_run_to_end_returns_when_every_retry_raises() -> None:
    runs: list[int] = []

    def broken() -> None:
        runs.append(1)
        raise RuntimeError("reentrant call")

    exc = run_to_end(broken)
    assert isinstance(exc, RuntimeError) and len(runs) == RETRIES + 2
    assert isinstance(exc.__context__, RuntimeError)


def test_run_to_end_returns_none_when_the_flush_succeeds() -> None:
    assert run_to_end(lambda: None) is None
