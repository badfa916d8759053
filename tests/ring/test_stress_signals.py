"""One ring used from every side at once, under raising signals: nothing hangs, crashes or reads wrong.

The sweeps of tests/signal_points.py put one signal at each point of one path; this
puts many signals at random points of many paths running together (worker threads'
blocking calls, an event loop's awaits, late and cancelled pipe reads, waits past
``HOLD_MS`` that let the ring go, ``memoryview`` buffers, a close under the threads),
in a child process (tests/ring/stress_child.py), so that a hang or a crash fails the
test.  Session 40 found two bugs this way that no sweep had: an await whose wake-up a
signal in another thread's collection lost for good (tests/ring/test_await_wakeup_signals.py)
and a segfault collecting a pinned ``memoryview`` (tests/ring/test_pinned_views_collected.py).
It also runs in the NVMe VM on each kernel (tests/ring), but for the file objects' cases:
on the VM's 5.10 one of their reads came back ECANCELED once, a cause not found yet
(session 40's note), so they run on the host alone until it is.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

CHILD = pathlib.Path(__file__).with_name("stress_child.py")
SECONDS = 3.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("mode", "seed", "backend"),
    [
        ("ring", 5, ""),
        ("ring", 6, ""),
        ("stack", 1, "uring"),
        ("stack", 3, "uring"),
        ("stack", 2, "fallback"),
        # (host only: on the VM's 5.10 a file object's read came back ECANCELED once under it,
        # cause not found yet: session 40's note)
        pytest.param("fileobj", 1, "", marks=pytest.mark.host_only),
        pytest.param("fileobj", 5, "", marks=pytest.mark.host_only),
    ],
)
def test_one_ring_under_threads_an_event_loop_and_signals(
    tmp_path: pathlib.Path, mode: str, seed: int, backend: str
) -> None:
    """Seeds that failed without the fixes.  Stack 1 and 3: the segfault, every run, with
    ``pin_buffer`` pinning the view directly.  Ring 5 and 6: an await's wake-up lost (the
    event loop stalled), with ``aio.resolver`` a plain ``functools.partial``; by chance,
    as stress finds things: seeds 5, 6, 10 and 11 of 1-12 in one pass, and this test in
    one of two runs.  Fileobj 1 and 5: file objects opened, read and closed from several
    threads while the main thread's opens are interrupted: a signal in fixedbuf's
    ``file_opened`` made ``uringstack.FileIO`` close its descriptor a second time (EBADF
    in the other threads' reads; tests/stack/test_misbehaving_plugins.py).  The
    deterministic guards are the sweeps and tests of the files named above."""
    env = dict(os.environ, STRESS_DIR=str(tmp_path), STRESS_BACKEND=backend)
    child = subprocess.run(
        [sys.executable, str(CHILD), mode, str(seed), str(SECONDS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert child.returncode == 0 and child.stdout.rstrip().endswith("ok"), (
        f"exit {child.returncode} (-11: a crash); stdout: {child.stdout[-3000:]}\nstderr: {child.stderr[-6000:]}"
    )
