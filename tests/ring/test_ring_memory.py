"""What a ring charges to RLIMIT_MEMLOCK, where the kernel charges ring memory (6.18).

The plan fits the rings into the limit with :func:`ring_memory_pages`; the
numbers are the smallest limit (in pages) that let a ring be made, measured on
6.18 without CAP_IPC_LOCK."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.requires import skip_without
from uringstack.ring.flags import SetupFlag
from uringstack.ring.params import ring_memory_pages

MEASURED_6_18 = {4: 2, 8: 2, 16: 2, 32: 2, 64: 2, 128: 4, 256: 7, 512: 13, 1024: 26, 4096: 101}


def test_pages_match_the_measurement() -> None:
    assert {e: ring_memory_pages(e) for e in MEASURED_6_18} == MEASURED_6_18
    assert ring_memory_pages(256, SetupFlag.SQE128) == 11
    assert ring_memory_pages(256, SetupFlag.CQE32) == 9


def _without_ipc_lock(script: str) -> dict[str, Any]:
    """The JSON last printed by *script*, run without CAP_IPC_LOCK (ring memory then counts)."""
    out = subprocess.run(
        ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


CHILD = r"""
import json, resource, sys, time
from uringstack.probe.uring import rings_charged_to_memlock
from uringstack.ring.params import _init, RingParams, ring_memory_pages
from uringstack.ring.flags import SetupFlag
from uringstack.ring.native import lib
hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
out = {"charged": rings_charged_to_memlock(), "restored": resource.getrlimit(resource.RLIMIT_MEMLOCK) == before}
def fits(pages):
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (pages * 4096, hard))
    for _ in range(10):  # freed rings are unaccounted by a deferred teardown
        ret, ring, _p = _init(256, SetupFlag(0), RingParams(entries=256))
        if ret == 0:
            lib.io_uring_queue_exit(ring)
            time.sleep(0.05)
            return True
        time.sleep(0.05)
    return False
need = ring_memory_pages(256)
out["fits_exact"] = fits(need)
out["fits_one_less"] = fits(need - 1)
print(json.dumps(out))
"""


def test_a_ring_fits_exactly_the_pages_computed_where_ring_memory_is_charged() -> None:
    report = _without_ipc_lock(CHILD)
    assert report["restored"], report  # the probe lowered the soft limit for one call only
    if not report["charged"]:
        skip_without("a kernel that charges ring memory to RLIMIT_MEMLOCK (the host's 6.18 does)")
    assert report["fits_exact"] and not report["fits_one_less"], report


RACE_CHILD = r"""
import json, resource, threading
from uringstack.probe import uring as probe_uring
from uringstack.ring.params import _init, RingParams
from uringstack.ring.flags import SetupFlag
from uringstack.ring.native import lib

calls = []
real_setrlimit = resource.setrlimit
def watched(which, limits):
    calls.append((which, limits))
    real_setrlimit(which, limits)
resource.setrlimit = watched

# another thread of the process makes rings the whole time the probe asks
stop = threading.Event()
failures = []
made = [0]
def rings():
    while not stop.is_set():
        ret, ring, _p = _init(8, SetupFlag(0), RingParams(entries=8))
        if ret == 0:
            lib.io_uring_queue_exit(ring)
            made[0] += 1
        else:
            failures.append(ret)
worker = threading.Thread(target=rings)
worker.start()
answers = [probe_uring.rings_charged_to_memlock() for _ in range(200)]
stop.set()
worker.join()
print(json.dumps({"answers": sorted(set(map(str, answers))), "setrlimit_calls": len(calls),
                  "failures": failures[:5], "failed": len(failures), "made": made[0]}))
"""


def test_the_memlock_probe_never_lowers_this_processs_limit() -> None:
    # rlimits belong to the process: lowered here even for one call, another thread's
    # ring made at that instant fails with ENOMEM.  The probe asks a forked child.
    report = _without_ipc_lock(RACE_CHILD)
    assert report["setrlimit_calls"] == 0, report
    assert report["failed"] == 0 and report["made"] > 0, report
    assert len(report["answers"]) == 1 and report["answers"][0] in ("True", "False"), report


def test_the_memlock_probe_asks_in_process_only_if_unforkable_and_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from uringstack.probe import uring as probe_uring
    from uringstack.ring import params as ring_params

    def no_fork() -> bool | None:
        raise OSError(11, "fork for the memlock probe failed")

    monkeypatch.setattr(ring_params, "memlock_charged_in_child", no_fork)
    asked: list[str] = []
    monkeypatch.setattr(probe_uring, "_charged_in_process", lambda: asked.append("in process") or True)
    monkeypatch.setattr(probe_uring, "_threads_in_process", lambda: 3)
    assert probe_uring.rings_charged_to_memlock() is None and asked == []
    monkeypatch.setattr(probe_uring, "_threads_in_process", lambda: 1)
    assert probe_uring.rings_charged_to_memlock() is True and asked == ["in process"]
