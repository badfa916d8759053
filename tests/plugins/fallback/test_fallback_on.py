"""``[fallback] mode = "on"`` is ``[core] backend = "fallback"``, as documented (session 28).

Before, ``on`` only made the fallback answer for the targets no other plugin
took first: io_uring rings were still built, 64 buffers per ring registered
(8 MiB pinned), ``sqpoll.mode = "on"`` started a polling thread, and NVMe
targets went to iopoll and passthrough; with ``backend = "fallback"`` none of it.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from uringstack.config import load_config
from uringstack.stack import open_stack
from uringstack.types import PlanError


def test_on_builds_no_ring_and_serves_every_file_with_the_pool(tmp_path: pathlib.Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    with open_stack(overrides={"fallback.mode": "on", "core.cores": [cpu]}) as stack:
        assert stack.config.core.backend == "fallback"
        assert [w.rings for w in stack.workers] == [{}]
        assert stack.plan.default_backend == "fallback"
        with stack.open(tmp_path / "f", create=True) as h:
            assert h.backend == "fallback"
            assert h.write_from(b"x" * 4096, 0) == 4096


def test_on_says_where_the_backend_came_from() -> None:
    loaded = load_config(env={"URINGSTACK_FALLBACK__MODE": "on"})
    assert loaded.config.core.backend == "fallback"
    assert loaded.provenance["core.backend"] == "fallback.mode (env:URINGSTACK_FALLBACK__MODE)"
    assert any("[fallback] mode = 'on'" in note for note in loaded.notes)


def test_on_refuses_a_ring_feature_as_the_fallback_backend_does() -> None:
    for overrides in ({"fallback.mode": "on"}, {"core.backend": "fallback"}):
        with pytest.raises(PlanError, match="sqpoll"):
            open_stack(overrides={**overrides, "sqpoll.mode": "on"}).close()
