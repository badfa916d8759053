"""A fork() child must not inherit a module-level lock that a parent thread held at fork time.

``fork()`` copies a held ``threading.Lock`` as held, and the thread that would
release it does not exist in the child: the child's first call that takes the
lock hangs for good.  Each module-level lock a child may take is therefore
replaced in the child (``os.register_at_fork``).  Each case runs in its own
interpreter: a thread holds the lock, the process forks, and the child does
what takes it (``uringstack.open`` on the default stack, a log's shared stack,
the IOPOLL poller registry, the punt memo, the asyncio bridges, a log's
lock registry, the reaper of dropped objects).  A hang is a child killed by its alarm after 15 s,
not a hung test.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = r"""
import importlib, json, os, signal, sys, threading

mod_name, attr, action, d = sys.argv[1:5]
mod = importlib.import_module(mod_name)
held, release = threading.Event(), threading.Event()


def hold():
    with getattr(mod, attr):
        held.set()
        release.wait()


threading.Thread(target=hold, daemon=True).start()
held.wait()


def child():
    if action == "open":
        import uringstack
        p = os.path.join(d, "child")
        with uringstack.open(p, "wb") as f:
            f.write(b"child")
        with uringstack.open(p, "rb") as f:
            return f.read().decode()
    if action == "shared_stack":
        from uringstack.wal.io import shared_stack
        return type(shared_stack("auto")).__name__
    lock = getattr(mod, attr)  # what the child's code takes, looked up as the module does
    if not lock.acquire(timeout=3):
        return "hung"
    lock.release()
    return "ok"


pid = os.fork()
if pid == 0:
    signal.alarm(15)  # a hung child dies of SIGALRM (default action) instead of hanging the test
    try:
        out = child()
    except BaseException as exc:
        out = "error: " + repr(exc)
    with open(os.path.join(d, "child.json"), "w") as rep:
        json.dump(out, rep)
    os._exit(0)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    print(json.dumps(f"hung (killed by {signal.Signals(os.WTERMSIG(status)).name})"), flush=True)
    sys.exit(0)
release.set()
with open(os.path.join(d, "child.json")) as rep:
    print(json.dumps(json.load(rep)), flush=True)
"""

CASES = [
    ("uringstack.fileobj.default_stack", "_lock", "open", "child"),
    ("uringstack.wal.io", "_shared_lock", "shared_stack", "Stack"),
    ("uringstack.ring.polling", "_pollers_lock", "acquire", "ok"),
    ("uringstack.probe.punts", "_lock", "acquire", "ok"),
    ("uringstack.ring.aio", "_bridges_lock", "acquire", "ok"),
    ("uringstack.wal.segment", "_registry_lock", "acquire", "ok"),  # (its before-fork wait is bounded)
    ("uringstack.reaper", "_lock", "acquire", "ok"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("module", "attr", "action", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_fork_child_does_not_inherit_a_held_module_lock(
    tmp_path: pathlib.Path, module: str, attr: str, action: str, expected: str
) -> None:
    args = [sys.executable, "-c", SCRIPT, module, attr, action, str(tmp_path)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=90)
    lines = out.stdout.strip().splitlines()
    assert lines, f"no report (exit {out.returncode}): {out.stderr[-3000:]}"
    assert json.loads(lines[-1]) == expected, out.stderr[-3000:]
    assert out.returncode == 0, out.stderr[-3000:]
