"""A caller's memoryview pinned by the library, left in a garbage cycle, cannot crash the interpreter.

CPython 3.11 clears a ``memoryview`` that the garbage collector finds in a cycle even
while its buffer is exported, and the export's release then frees the view through a
NULL pointer (gh-77894, fixed in 3.12.7): a segfault in a later collection.  The
library's pin of a caller's buffer is such an export, and an exception whose traceback
holds the call's frames (the caller's view and the pin in their locals) makes the cycle
as soon as anything keeps the exception in one: a handler that stores it, a REPL's last
traceback, a frame that saved it.  Session 40's stress run (an event loop, threads and
SIGALRM-raising timeouts on one ring, ``memoryview`` buffers) segfaulted in 3 of 3
runs of a seed this way.  ``uringstack.ring.pins.pin_buffer`` pins a view through an
``Export`` that the collector does not track, so the view is never found unreachable
while pinned.

Each case runs in a child process (a crash must fail the test, not end the run) that
makes 200 such cycles and collects them; with the view pinned directly each crashed
(the first test checks that in a child of its own).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

_CYCLES = """
import gc, mmap, os, sys


def kept_in_a_cycle(call):
    m = mmap.mmap(-1, 4096)
    view = memoryview(m)[:4096]
    try:
        call(view)
    except Exception as exc:
        err = exc  # this frame -> err -> its traceback -> this frame (and the call's frames)
        return err
    raise AssertionError("the call did not fail")


gc.disable()  # (the cycles are collected together, below)
kept = [kept_in_a_cycle(CALL) for _ in range(200)]
kept.clear()
gc.collect()
print("collected")
"""


def _run_child(setup: str, call: str, tmp_path: pathlib.Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + textwrap.dedent(setup) + _CYCLES.replace("CALL", call)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )


def _assert_collected(child: subprocess.CompletedProcess[str]) -> None:
    assert child.returncode == 0 and "collected" in child.stdout, (
        f"the child ended with {child.returncode} (-11: the collection crashed the interpreter); "
        f"stderr: {child.stderr[-2000:]}"
    )


_PIN_FAILS = """
from uringstack.ring.pins import pin_buffer

def pinned_then_failed(view):
    pin = pin_buffer(view, True)  # noqa: F841 (held by this frame, as a call's pin is)
    raise OSError(5, "the I/O failed after the pin")
"""

# pin_buffer as it was: cffi's pin of the view itself
_DIRECT_PIN = """
import uringstack.ring.pins as pins
from uringstack.ring.native import ffi
pins.pin_buffer = lambda buf, writable=False: ffi.from_buffer("char[]", buf, writable)
"""


@pytest.mark.timeout(300)
def test_a_pinned_view_in_a_garbage_cycle_is_collected(tmp_path: pathlib.Path) -> None:
    _assert_collected(_run_child(_PIN_FAILS, "pinned_then_failed", tmp_path))
    if sys.version_info < (3, 12):  # (the interpreter's bug: fixed in 3.12.7, whose clear waits)
        crashed = _run_child(_PIN_FAILS, "pinned_then_failed", tmp_path, prelude=_DIRECT_PIN)
        assert crashed.returncode != 0, "the view pinned directly did not crash: this test proves nothing here"


_HANDLE = """
import os
import uringstack
path = os.path.join(os.getcwd(), "f")
with open(path, "wb") as f:
    f.write(bytes(8192))
stack = uringstack.open_stack(overrides={"core.cores": [0], "core.backend": BACKEND})
read_only = stack.open(path, writable=False)

def write_refused(view):
    read_only.write_from(view, 0)  # EBADF from the kernel (or the pool), after the pin
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_failed_call_kept_in_a_cycle_is_collected(tmp_path: pathlib.Path, backend: str) -> None:
    """Through the public API: a write that pins the caller's view and then fails (crashed on
    both backends with the view pinned directly)."""
    _assert_collected(_run_child(_HANDLE.replace("BACKEND", repr(backend)), "write_refused", tmp_path))
