"""`on` that cannot be honoured is a clear error before anything is built."""

from __future__ import annotations

import os

import pytest

import uringstack
import uringstack.probe
from uringstack.stack import open_stack
from uringstack.types import PlanError


def test_iopoll_on_without_poll_queues_is_a_plan_error() -> None:
    caps = uringstack.probe.probe()
    if any(d.io_poll for d in caps.devices):
        pytest.skip("this machine has a pollable device, so iopoll 'on' is possible")
    with pytest.raises(PlanError) as info:
        open_stack(overrides={"iopoll.mode": "on"}, caps=caps)
    message = str(info.value)
    assert "iopoll is configured 'on' but cannot be used" in message
    assert "poll queues" in message


def test_fallback_disabled_where_io_uring_is_blocked_is_a_plan_error() -> None:
    from uringstack.testing import make_fake_capabilities

    caps = make_fake_capabilities(uring="seccomp", cores=sorted(os.sched_getaffinity(0)))
    with pytest.raises(PlanError, match=r"io_uring is not usable here .*enable the fallback plugin"):
        open_stack(overrides={"core.disabled_plugins": ["fallback"]}, caps=caps)


def test_top_level_exports_resolve() -> None:
    for name in uringstack.__all__:
        assert getattr(uringstack, name) is not None


def test_exports_list_matches_the_lazy_table() -> None:
    assert sorted(uringstack.__all__) == sorted(uringstack._EXPORTS)
