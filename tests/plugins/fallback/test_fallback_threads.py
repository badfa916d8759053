"""fallback: ``threads`` is the queue depth a worker's pool reaches."""

from __future__ import annotations

import pathlib
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
