"""The plan fits the rings into RLIMIT_MEMLOCK where the kernel charges ring memory to it.

Under ``prlimit --memlock=16384`` without CAP_IPC_LOCK on 6.18 the probe's 4-entry
ring fitted, the plan promised two 256-entry rings (7 pages each, the limit is 4)
and open_stack raised RingSetupError ENOMEM: the first ring took the whole limit
and nothing fell back."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.config import load_config
from uringstack.plan import Plan, make_plan
from uringstack.probe.model import Capabilities, MemlockInfo
from uringstack.testing import make_fake_capabilities
from uringstack.types import PlanError


def _caps(limit: int, charged: bool | None = True) -> Capabilities:
    memlock = MemlockInfo(soft_bytes=limit, hard_bytes=limit, cap_ipc_lock=False, rings_charged=charged)
    return make_fake_capabilities(cores=2, memlock=memlock)


def _plan(caps: Capabilities, **overrides: Any) -> Plan:
    loaded = load_config(None, env={}, overrides={"core.cores": [0, 1], **overrides})
    return make_plan(caps, loaded.config, loaded.plugin_manager)


def _entries(plan: Plan) -> list[int]:
    return [r.entries for w in plan.workers for r in w.rings]


def test_rings_are_shrunk_together_to_fit_a_small_limit() -> None:
    plan = _plan(_caps(16 << 10))
    assert _entries(plan) == [64, 64]  # 2 pages each: the 4-page limit
    assert any("rings shrunk to 64 entries" in n and "RLIMIT_MEMLOCK is 16384" in n for n in plan.notes), plan.notes
    assert all(any("entries shrunk to 64" in r for r in ring.reasons) for w in plan.workers for ring in w.rings)


def test_without_room_for_the_smallest_rings_auto_chooses_the_fallback_and_says_why() -> None:
    plan = _plan(_caps(8 << 10))
    assert not plan.io_uring_usable and plan.default_backend != "uring"
    assert _entries(plan) == []
    assert "RLIMIT_MEMLOCK is 8192" in plan.io_uring_reason and "ulimit -l" in plan.io_uring_reason
    fallback = next(v for v in plan.verdicts if v.plugin == "fallback")
    assert fallback.enabled


def test_backend_uring_without_room_for_the_rings_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="RLIMIT_MEMLOCK is 8192"):
        _plan(_caps(8 << 10), **{"core.backend": "uring"})


def test_rings_are_left_alone_where_the_kernel_does_not_charge_them_or_the_limit_allows() -> None:
    assert _entries(_plan(_caps(16 << 10, charged=False))) == [256, 256]
    assert _entries(_plan(_caps(16 << 10, charged=None))) == [256, 256]
    assert _entries(_plan(_caps(8 << 20))) == [256, 256]


CHILD = r"""
import json, os, sys
import uringstack
with uringstack.open_stack(overrides={"core.cores": sorted(os.sched_getaffinity(0))[:2]}) as stack:
    with stack.open(sys.argv[1], create=True) as h:
        h.write_from(b"still works", 0)
        buf = bytearray(11); h.read_into(buf, 0)
    print(json.dumps({"charged": stack.caps.memlock.rings_charged, "backend": stack.plan.default_backend,
                      "entries": [r.entries for w in stack.plan.workers for r in w.rings],
                      "data": buf.decode()}))
"""


@pytest.mark.parametrize("limit", [16384, 8192])
def test_open_stack_under_a_small_memlock_limit_builds_what_the_plan_says(limit: int, tmp_path: Any) -> None:
    out = subprocess.run(
        ["prlimit", f"--memlock={limit}:{limit}", "--", "setpriv", "--bounding-set", "-ipc_lock", "--inh-caps",
         "-ipc_lock", "--", sys.executable, "-c", CHILD, str(tmp_path / "f")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["data"] == "still works", report
    if not report["charged"]:
        skip_without("a kernel that charges ring memory to RLIMIT_MEMLOCK (the host's 6.18 does)")
    if limit == 8192:
        assert report["backend"] != "uring" and report["entries"] == [], report
    else:
        assert report["backend"] == "uring" and max(report["entries"]) <= 64, report
