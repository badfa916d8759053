"""A real thread limit (RLIMIT_NPROC of a user, a pids cgroup's pids.max) gives errors that name it.

The prober's case (session 32): at the limit, io_uring's io-wq cannot add the
worker a punted op needs (``fdatasync`` is always punted), so the op completes
with ``-ECANCELED``, and the user saw ``fdatasync failed: Operation canceled``
and nothing more; the stack's own worker thread gave Python's bare
``RuntimeError: can't start new thread``.  Now both name the limit, its count
and the fix; the errno (ECANCELED) and the exception type (a RuntimeError)
are kept.  Each case runs in a child process (the limits are per process or
per user) as root made another user by ``setresuid`` (root ignores RLIMIT_NPROC)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.requires import skip_without

# Shared by the children: a stack whose ops go to a plain io_uring (no SQPOLL: its
# kernel thread, created as root, would not count for the user), and the wait until
# no io_uring kernel thread of the stack's start (a probe's ring) is left, so the
# one thread the limit leaves out is the io-wq worker the fdatasync asks for.
PRELUDE = """
import errno, json, os, resource, sys, threading, time
import uringstack

OVERRIDES = {"core.cores": [0], "core.backend": "uring", "sqpoll.mode": "off"}

def comms():
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                out.append(f.read().strip())
        except OSError:
            pass
    return out

def settle():
    deadline = time.monotonic() + 20
    while any(c.startswith("iou-") for c in comms()):
        if time.monotonic() > deadline:
            raise SystemExit(f"io_uring threads left: {comms()}")
        time.sleep(0.05)

def released():
    # A joined thread stays in /proc/self/task, and counts for RLIMIT_NPROC, until the kernel
    # releases it, a moment after its join returned (an earlier stack's worker): counted in,
    # it left room for one thread more (once on the NVMe VM's 5.10, under TCG).
    deadline = time.monotonic() + 20
    while len(os.listdir("/proc/self/task")) > threading.active_count() + len(
            [c for c in comms() if c.startswith("iou-")]):
        if time.monotonic() > deadline:
            raise SystemExit(f"threads not released: {comms()}")
        time.sleep(0.01)

def at_nproc_limit():
    released()
    os.setresuid(54321, 54321, 0)  # (glibc: every thread) so the process's tasks count for that user
    tasks = len(os.listdir("/proc/self/task"))
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))  # no thread more

def outcome(fn):
    try:
        fn()
        return {"raised": None}
    except Exception as exc:
        return {"raised": type(exc).__name__, "errno": getattr(exc, "errno", None), "message": str(exc),
                "runtime_error": isinstance(exc, RuntimeError),
                "cause": repr(exc.__cause__) if exc.__cause__ is not None else None}
"""

FDATASYNC_AT_NPROC = (
    PRELUDE
    + """
path = sys.argv[1]
with uringstack.open_stack(overrides=OVERRIDES) as stack, stack.open(path) as h:
    settle()
    at_nproc_limit()
    out = {"fdatasync": outcome(h.fdatasync)}
    out["write_durable"] = outcome(lambda: h.write_durable(b"d" * 4096, 0, sync="fdatasync"))
    os.setresuid(0, 0, 0)
print(json.dumps(out))
"""
)

FDATASYNC_AT_PIDS_MAX = (
    PRELUDE
    + """
path, cgroup, parent = sys.argv[1], sys.argv[2], sys.argv[3]
with uringstack.open_stack(overrides=OVERRIDES) as stack, stack.open(path) as h:
    settle()
    with open(f"{cgroup}/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))  # (cgroup.procs: every thread of the process)
    with open(f"{cgroup}/pids.current") as f:
        current = f.read().strip()
    with open(f"{cgroup}/pids.max", "w") as f:
        f.write(current)
    out = {"fdatasync": outcome(h.fdatasync)}
    with open(f"{cgroup}/pids.max", "w") as f:
        f.write("max")
    with open(f"{parent}/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))  # back, so the test can remove the cgroup
print(json.dumps(out))
"""
)

STACK_AT_NPROC = (
    PRELUDE
    + """
uringstack.open_stack(overrides=OVERRIDES).close()  # (imports all: that user may not read the venv)
settle()
at_nproc_limit()
out = {"open_stack": outcome(lambda: uringstack.open_stack(overrides=OVERRIDES).close())}
os.setresuid(0, 0, 0)
print(json.dumps(out))
"""
)


@pytest.fixture(autouse=True)
def _root() -> None:
    """The children make themselves another user (root ignores RLIMIT_NPROC) and write cgroups."""
    if os.geteuid() != 0:
        skip_without("not root: the children make themselves another user and write a pids cgroup")


def run_child(script: str, *args: str) -> dict[str, dict[str, object]]:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, dict[str, object]] = json.loads(proc.stdout)
    return out


def assert_io_wq_hint(result: dict[str, object], limit: str) -> None:
    """ECANCELED kept (callers match on it), the message naming io-wq, the limit and the fix."""
    assert result["raised"] == "UringIOError", result
    assert result["errno"] == errno.ECANCELED, result
    message = str(result["message"])
    assert "Operation canceled" in message
    assert "io_uring's io-wq could not start a worker thread: this process is at its thread limit" in message
    assert limit in message, message
    assert "ulimit -u" in message and "TasksMax=" in message


@pytest.fixture
def data_file(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "f"
    path.write_bytes(b"\0" * 8192)
    return str(path)


def test_fdatasync_at_rlimit_nproc_names_the_limit(data_file: str) -> None:
    out = run_child(FDATASYNC_AT_NPROC, data_file)
    assert_io_wq_hint(out["fdatasync"], "RLIMIT_NPROC ")
    assert "threads of user 54321" in str(out["fdatasync"]["message"])
    # write_durable's flush (or its write, where the file system punts it) the same way
    assert_io_wq_hint(out["write_durable"], "RLIMIT_NPROC ")


@contextlib.contextmanager
def pids_cgroup() -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """A new pids cgroup (v1's pids hierarchy, or under v2's root) and its parent; removed after."""
    v1 = pathlib.Path("/sys/fs/cgroup/pids")
    v2 = pathlib.Path("/sys/fs/cgroup")
    if (v1 / "cgroup.procs").exists():
        parent = v1
    elif (
        "pids" in (v2 / "cgroup.controllers").read_text(errors="replace").split()
        if (v2 / "cgroup.controllers").exists()
        else False
    ):
        parent = v2
        with contextlib.suppress(OSError):
            (v2 / "cgroup.subtree_control").write_text("+pids")
    else:
        skip_without("no pids cgroup controller (neither /sys/fs/cgroup/pids nor pids in cgroup v2's root)")
    cgroup = parent / f"uringstack-test-{uuid.uuid4().hex[:8]}"
    try:
        cgroup.mkdir()
    except OSError as exc:
        skip_without(f"the pids cgroup hierarchy at {parent} is not writable ({exc})")
    try:
        if not (cgroup / "pids.max").exists():
            skip_without(f"{parent} does not give a new cgroup pids.max (pids controller not enabled)")
        yield cgroup, parent
    finally:
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def test_fdatasync_at_pids_max_names_the_cgroup(data_file: str) -> None:
    with pids_cgroup() as (cgroup, parent):
        out = run_child(FDATASYNC_AT_PIDS_MAX, data_file, str(cgroup), str(parent))
    assert_io_wq_hint(out["fdatasync"], f"of cgroup /{cgroup.name} with")
    assert "pids.max " in str(out["fdatasync"]["message"])


def test_a_stack_at_rlimit_nproc_names_the_limit_for_its_worker_thread() -> None:
    """The stack's worker thread refused: ThreadStartError, still a RuntimeError, naming the
    thread and the limit, Python's own error its cause."""
    result = run_child(STACK_AT_NPROC)["open_stack"]
    assert result["raised"] == "ThreadStartError", result
    assert result["runtime_error"] is True
    message = str(result["message"])
    assert message.startswith("can't start new thread 'uringstack-worker-0': this process is at its thread limit")
    assert "RLIMIT_NPROC " in message and "threads of user 54321" in message and "ulimit -u" in message
    assert "can't start new thread" in str(result["cause"])


def test_the_ecanceled_of_a_close_gets_no_hint(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing cancels ops too: that ECANCELED is the library's own, and a thread limit the
    process may also be at is not its cause, so the handle's error then says nothing of it."""
    from uringstack.probe import threadlimits
    from uringstack.stack import open_stack

    monkeypatch.setattr(threadlimits, "iowq_hint", lambda: "HINT")
    path = tmp_path / "f"
    path.write_bytes(b"\0" * 4096)
    with open_stack(overrides={"core.cores": [0], "core.backend": "uring"}) as stack:
        h = stack.open(str(path))
        open_error = h._op_error(errno.ECANCELED, "fdatasync")
        h.close()
        closed_error = h._op_error(errno.ECANCELED, "fdatasync")
    assert open_error.errno == closed_error.errno == errno.ECANCELED
    assert open_error.detail == "HINT"
    assert closed_error.detail == ""
