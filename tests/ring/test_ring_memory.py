"""What a ring charges to RLIMIT_MEMLOCK, where the kernel charges ring memory (6.18).

The plan fits the rings into the limit with :func:`ring_memory_pages`; the
numbers are the smallest limit (in pages) that let a ring be made, measured on
6.18 without CAP_IPC_LOCK."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.requires import skip_without
from uringstack.ring.flags import SetupFlag
from uringstack.ring.params import ring_memory_pages

MEASURED_6_18 = {4: 2, 8: 2, 16: 2, 32: 2, 64: 2, 128: 4, 256: 7, 512: 13, 1024: 26, 4096: 101}


def test_pages_match_the_measurement() -> None:
    assert {e: ring_memory_pages(e) for e in MEASURED_6_18} == MEASURED_6_18
    assert ring_memory_pages(256, SetupFlag.SQE128) == 11
    assert ring_memory_pages(256, SetupFlag.CQE32) == 9


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
    out = subprocess.run(
        ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["restored"], report  # the probe lowered the soft limit for one call only
    if not report["charged"]:
        skip_without("a kernel that charges ring memory to RLIMIT_MEMLOCK (the host's 6.18 does)")
    assert report["fits_exact"] and not report["fits_one_less"], report
