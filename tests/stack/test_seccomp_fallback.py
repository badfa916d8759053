"""Where io_uring is blocked by seccomp (as in Docker), open_stack still gives a working stack."""

from __future__ import annotations

import json
import pathlib
import platform
import subprocess
import sys

import pytest

SECCOMP = pathlib.Path(__file__).parents[1] / "probe" / "seccomp_deny_uring.py"

CHILD = r"""
import json, os, sys
from uringstack.stack import open_stack
path = sys.argv[1]
with open_stack() as stack:
    with stack.open(path, create=True) as h:
        h.write_from(b"hello fallback", 0)
        h.fdatasync()
        buf = bytearray(14)
        h.read_into(buf, 0)
        print(json.dumps({
            "usable": stack.caps.uring.usable,
            "blocker": stack.caps.uring.blocker,
            "backend": h.backend,
            "default_backend": stack.plan.default_backend,
            "reason": stack.plan.default_backend_reason,
            "rings": sum(len(w.rings) for w in stack.workers),
            "data": buf.decode(),
        }))
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is written for x86_64 syscall numbers")
def test_seccomp_blocked_io_uring_yields_a_fallback_stack(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SECCOMP), sys.executable, "-c", CHILD, str(tmp_path / "f")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["usable"] is False
    assert report["blocker"] == "seccomp"
    assert report["backend"] == "fallback"
    assert report["default_backend"] == "fallback"
    assert "seccomp" in report["reason"]
    assert report["rings"] == 0
    assert report["data"] == "hello fallback"
