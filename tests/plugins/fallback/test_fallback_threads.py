"""fallback: ``threads`` is the queue depth a worker's pool reaches."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
import time

import pytest

from uringstack.plugins.fallback import backend as fallback_backend
from uringstack.stack import open_stack


def _most_reads_at_once(path: pathlib.Path, threads: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Queue 16 reads that each take 20 ms; how many ran at the same time."""
    lock = threading.Lock()
    running = [0]
    most = [0]
    real = fallback_backend._preadv

    def preadv(fd: int, buf: object, offset: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)
            return real(fd, buf, offset)
        finally:
            with lock:
                running[0] -= 1

    with monkeypatch.context() as mp:
        mp.setattr(fallback_backend, "_preadv", preadv)
        overrides = {"core.backend": "fallback", "core.cores": [0], "fallback.threads": threads}
        with open_stack(overrides=overrides) as stack, stack.open(path) as h:
            pending = h.start_read_many([i * 4096 for i in range(16)], [bytearray(4096) for _ in range(16)])
            assert pending.wait() == [4096] * 16
    return most[0]


def test_threads_bounds_the_reads_in_flight(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"x" * 16 * 4096)
    assert _most_reads_at_once(tmp_path / "f", 3, monkeypatch) == 3
    assert _most_reads_at_once(tmp_path / "f", 8, monkeypatch) > 3  # the control: more threads, more at once


def test_the_pool_threads_are_named_after_the_worker(tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 4 * 4096)
    names: list[str] = []
    with open_stack(overrides={"core.backend": "fallback", "core.cores": [0], "fallback.threads": 2}) as stack:
        with stack.open(tmp_path / "f") as h:
            h.start_read_many([0, 4096], [bytearray(4096), bytearray(4096)]).wait()
            names = sorted(t.name for t in threading.enumerate() if t.name.startswith("uringstack-fallback-"))
        assert names and set(names) <= {"uringstack-fallback-0_0", "uringstack-fallback-0_1"}, names
    # close() waited for them to exit
    assert not [t for t in threading.enumerate() if t.name in names]


EXIT_CHILD = """
import sys, uringstack
stack = uringstack.open_stack(overrides={"core.backend": "fallback", "fallback.threads": 1})
h = stack.open(sys.argv[1], create=True)
h.start_write_many([i * 4096 for i in range(64)], [bytes([65 + i % 26]) * 4096 for i in range(64)])
# neither waited for nor closed: the interpreter's exit lets the pool run what is queued
"""


def test_ops_queued_when_the_interpreter_exits_still_run(tmp_path: pathlib.Path) -> None:
    """As ThreadPoolExecutor's threads (joined at exit) did: the pool's threads are daemons,
    drained by an atexit hook, so an unwaited batch on a stack never closed is written."""
    path = tmp_path / "f"
    proc = subprocess.run([sys.executable, "-c", EXIT_CHILD, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes() == b"".join(bytes([65 + i % 26]) * 4096 for i in range(64))
