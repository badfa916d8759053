"""The rings the default file-object stack really built have no SQPOLL, and no poller thread runs.

tests/fileobj/test_default_stack.py checks the *plan*; this checks what the
kernel was asked for: every ring's setup flags (``Ring.flags``) and its
fdinfo (``Ring.sq_thread()``), and that no ``iou-sqp-*`` thread belongs to
the process while a file object is open.  (The probe's SQPOLL acceptance test
creates and destroys one SQPOLL ring, whose poller lives for some tens of
milliseconds; that one must be gone, not stay.)  It runs in a child process
so no other test's stack or poller is in sight, with the sqpoll plugin's
``auto`` rules relaxed so that a plain ``open_stack()`` does plan a poller:
the child checks that premise too, after the default stack's check.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from tests.requires import skip_without

CHILD = r"""
import json, os, sys, time
import uringstack
from uringstack.fileobj.default_stack import default_stack
from uringstack.ring.flags import SetupFlag
from uringstack.stack import open_stack

PF_IO_WORKER = 0x10  # include/linux/sched.h: the task is an io_uring thread (poller or io-wq worker)

def pollers():
    # A poller names itself "iou-sqp-PID" when it first runs; until then (a loaded machine
    # may not have run it yet when io_uring_setup returns) it has its creator's name, and
    # only its PF_IO_WORKER flag shows what it is: such a thread counts too
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        flags = int(stat[stat.rindex(")") + 2 :].split()[6])
        if flags & PF_IO_WORKER and not comm.startswith("iou-wrk"):
            names.append(comm if comm.startswith("iou-sqp") else f"io thread {tid} not yet named ({comm})")
    return names

def settled_pollers(wait_s=5.0):
    # the probe's throw-away SQPOLL ring is torn down asynchronously: give its poller time to go
    deadline = time.monotonic() + wait_s
    while pollers() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pollers()

out = {}
with uringstack.open(sys.argv[1], "rb") as f:
    assert f.read() == b"x" * 65536
    stack = default_stack()
    rings = [r for w in stack.workers for r in w.rings.values()]
    out["rings"] = [[r.params.name, int(r.flags), r.sq_thread()] for r in rings]
    out["pollers"] = settled_pollers()
with open_stack() as plain:
    prings = [r for w in plain.workers for r in w.rings.values()]
    out["premise"] = any(r.flags & SetupFlag.SQPOLL for r in prings)
    out["premise_pollers"] = pollers()
print(json.dumps(out))
"""


def test_default_stack_rings_have_no_sqpoll_and_no_poller_runs(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 65536)
    env = {k: v for k, v in os.environ.items() if k not in ("URINGSTACK_CONFIG", "URINGSTACK_SQPOLL__MODE")}
    # sqpoll "auto" would turn on here: one worker, the other CPU spare for a poller
    env |= {"URINGSTACK_SQPOLL__MIN_CPUS": "1", "URINGSTACK_CORE__CORES": "[0]"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    sqpoll = 1 << 1  # IORING_SETUP_SQPOLL
    assert out["rings"], out
    assert [(name, flags & sqpoll, thread) for name, flags, thread in out["rings"]] == [
        (name, 0, None) for name, _, _ in out["rings"]
    ], f"the default file-object stack built SQPOLL rings: {out['rings']}"
    assert out["pollers"] == [], f"SQPOLL poller threads run beside the default stack: {out['pollers']}"
    if not out["premise"]:
        skip_without("a CPU spare for an SQPOLL poller (sqpoll 'auto' plans none here, so the check proves little)")
    assert out["premise_pollers"], "a plain stack with SQPOLL rings shows its poller: the thread check can see one"
