"""fork() after open_stack: the child gets a clear error, the parent is never affected.

Each scenario runs in its own interpreter (so a hang is a subprocess timeout,
not a stuck suite) that opens a stack, forks, and reports as JSON what the
child saw and what the parent could still do afterwards.  The child exits
normally, so its GC and atexit run over the inherited objects too.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

BACKENDS = {
    "uring": {"core.backend": "auto", "fallback.mode": "auto"},
    "fallback": {"core.backend": "fallback"},
}

SCRIPT = r"""
import asyncio, json, os, sys, threading, time
from uringstack.errors import ForkedChildError
from uringstack.stack import open_stack

overrides, d = json.loads(sys.argv[1]), sys.argv[2]
path = os.path.join(d, "f")
report = {}


def in_time(fn, what, timeout=15.0):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = repr(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        print(json.dumps({"hung": what}), flush=True)
        os._exit(3)
    if "error" in box:
        return "error: " + box["error"]
    return box["value"]


def fork_child(body):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = {}
        try:
            body(out)
        except BaseException as exc:
            out["unexpected"] = repr(exc)
        os.write(w, json.dumps(out).encode())
        os.close(w)
        sys.exit(0)  # a normal exit: GC and atexit run over the inherited stack
    os.close(w)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print(json.dumps({"hung": "child"}), flush=True)
            os._exit(3)
        time.sleep(0.01)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    return {"exit": os.waitstatus_to_exitcode(status), **json.loads(data or b"{}")}


def refused(fn):
    try:
        fn()
    except ForkedChildError as exc:
        return str(exc)
    except BaseException as exc:
        return "wrong error: " + repr(exc)
    return "not refused"


stack = open_stack(overrides=overrides)
h = stack.open(path, create=True)
h.write_from(b"P" * 8192, 0)
h.fdatasync()
report["backend"] = h.backend
prepared = h.prepare_reads([bytearray(4096)])  # one buffer: the QD1 path of PreparedIO.run
prepared.run([0])  # the first call binds the op; the next takes the one-frame path
prepared.run([4096])


def parent_io(tag):
    buf = bytearray(8192)
    n = h.read_into(buf, 0)
    h.write_from(tag.encode() * 4096, 8192)
    back = bytearray(4096)
    h.read_into(back, 8192)
    got = asyncio.run(h.read(4096, 0))
    return n == 8192 and bytes(buf) == b"P" * 8192 and bytes(back) == tag.encode() * 4096 and got == b"P" * 4096


def user_child(out):
    buf = bytearray(10)
    out["read_into"] = refused(lambda: h.read_into(buf, 0))
    out["write_from"] = refused(lambda: h.write_from(b"c", 0))
    out["start"] = refused(lambda: h.start_write_many([0], [b"c"]))
    out["prepared_run"] = refused(lambda: prepared.run([0]))
    out["io"] = refused(lambda: h.io.start_rw(True, [0], [b"c"]))
    out["async"] = refused(lambda: asyncio.run(h.read(10, 0)))
    out["open"] = refused(lambda: stack.open(path))
    rings = [r for w in stack.workers for r in w.rings.values()]
    if rings:
        out["ring"] = refused(lambda: rings[0].reap())
    stack.close()  # must not cancel, unregister or close anything of the parent's
    with open_stack(overrides=overrides) as own:  # the child's own stack works
        with own.open(os.path.join(d, "child"), create=True) as c:
            c.write_from(b"child", 0)
            b = bytearray(5)
            c.read_into(b, 0)
            out["own_stack"] = bytes(b).decode()


def idle_child(out):
    out["idle"] = True  # neither uses nor closes the stack: only GC/atexit touch it


report["child1"] = fork_child(user_child)
report["parent_after_child1"] = in_time(lambda: parent_io("1"), "parent I/O after child 1")
report["child2"] = fork_child(idle_child)
report["parent_after_child2"] = in_time(lambda: parent_io("2"), "parent I/O after child 2")
in_time(stack.close, "parent stack.close")
print(json.dumps(report), flush=True)
"""


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_fork_child_gets_a_clear_error_and_the_parent_is_unaffected(backend: str, tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(BACKENDS[backend]), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert lines, f"no report (exit {out.returncode}): {out.stderr[-3000:]}"
    report = json.loads(lines[-1])
    assert "hung" not in report, f"{report['hung']} hung: {out.stderr[-3000:]}"
    assert out.returncode == 0, out.stderr[-3000:]
    assert report["backend"] == backend
    child = report["child1"]
    assert child["exit"] == 0 and "unexpected" not in child, child
    ops = ("read_into", "write_from", "start", "prepared_run", "io", "async", "open")
    for op in ops + (("ring",) if backend == "uring" else ()):
        assert "forked process" in child[op] and "Open a new stack in the child" in child[op], (op, child[op])
    # the handle's own error (not only its ring's), as every other handle call gives
    assert "the handle of" in child["prepared_run"], child["prepared_run"]
    assert child["own_stack"] == "child"
    assert report["child2"] == {"exit": 0, "idle": True}
    assert report["parent_after_child1"] is True, report["parent_after_child1"]
    assert report["parent_after_child2"] is True, report["parent_after_child2"]
    assert (tmp_path / "f").read_bytes() == b"P" * 8192 + b"2" * 4096
