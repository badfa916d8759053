"""A fork() child gets its own process-wide default stack; its parent's file objects refuse it.

``uringstack.open`` / ``uringstack.FileIO`` without a stack use "a process-wide
stack built on first use" (docs/api.md).  A fork() child (a multiprocessing
worker with the fork start method) is another process: its first
``uringstack.open`` must build the child's own stack and work, while the file
objects it inherited still raise ``ForkedChildError`` and the parent's files
and stack are untouched.  The scenario runs in its own interpreter, so a hang
is a subprocess timeout.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os, sys
import uringstack
from uringstack.errors import ForkedChildError

d = sys.argv[1]
f = uringstack.open(os.path.join(d, "parent"), "wb")
f.write(b"parent")
f.flush()
pid = os.fork()
if pid == 0:
    out = {}
    try:
        with uringstack.open(os.path.join(d, "child"), "wb") as c:
            c.write(b"child")
        with uringstack.open(os.path.join(d, "child"), "rb") as c:
            out["own"] = c.read().decode()
        with uringstack.FileIO(os.path.join(d, "child2"), "w") as c:
            out["fileio"] = c.write(b"c2")
    except BaseException as exc:
        out["own_error"] = repr(exc)
    try:
        f.write(b"X")
        f.flush()
        out["inherited"] = "not refused"
    except ForkedChildError:
        out["inherited"] = "refused"
    except BaseException as exc:
        out["inherited"] = "wrong error: " + repr(exc)
    with open(os.path.join(d, "report.json"), "w") as rep:
        json.dump(out, rep)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
f.write(b"!")
f.close()
with open(os.path.join(d, "report.json")) as rep:
    report = {"child": json.load(rep), "exit": os.waitstatus_to_exitcode(status)}
with open(os.path.join(d, "parent"), "rb") as p:
    report["parent_file"] = p.read().decode()
print(json.dumps(report), flush=True)
"""


@pytest.mark.timeout(120)
def test_a_fork_child_opens_files_on_its_own_default_stack(tmp_path: pathlib.Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=90)
    lines = out.stdout.strip().splitlines()
    assert lines, f"no report (exit {out.returncode}): {out.stderr[-3000:]}"
    report = json.loads(lines[-1])
    child = report["child"]
    assert report["exit"] == 0
    assert "own_error" not in child, child["own_error"]
    assert child["own"] == "child" and child["fileio"] == 2
    assert (tmp_path / "child2").read_bytes() == b"c2"
    assert child["inherited"] == "refused"
    assert report["parent_file"] == "parent!"
    assert out.returncode == 0, out.stderr[-3000:]
