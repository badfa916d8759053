"""Closing a handle or the stack with I/O in flight: the I/O completes, then the descriptor goes.

A descriptor closed while its writes are still queued is reused by the next
``open`` and the queued writes land in that unrelated file.  The contract
(docs/api.md, "Closing with I/O in flight"): ``close()`` waits for every op
started through the handle, and only then releases the descriptor; the
pending objects report the ops' real results.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest

from uringstack.errors import RingClosedError
from uringstack.stack import Stack, open_stack

N, BS = 2000, 4096
SECCOMP = pathlib.Path(__file__).parents[1] / "probe" / "seccomp_deny_uring.py"

CONFIGS = {
    "uring": {"core.backend": "auto", "fallback.mode": "auto"},
    "uring-sqpoll": {"core.backend": "auto", "fallback.mode": "auto", "sqpoll.mode": "on"},
    "fallback": {"core.backend": "fallback"},
}


@pytest.fixture(params=sorted(CONFIGS))
def any_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=CONFIGS[request.param])
    yield s
    s.close()


def _victim(path: pathlib.Path) -> int:
    path.write_bytes(b"\0" * (N * BS))
    return os.open(path, os.O_RDWR)


def _fds_to(path: pathlib.Path) -> list[int]:
    out = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == str(path):
                out.append(int(entry))
        except OSError:
            continue  # the listing's own fd, or one closed meanwhile
    return out


def _assert_victim_untouched(fd: int) -> None:
    data = os.pread(fd, N * BS, 0)
    assert len(data) == N * BS
    assert data.count(0) == len(data), f"{len(data) - data.count(0)} bytes of an unrelated file were overwritten"


@pytest.mark.timeout(60)
def test_handle_close_waits_for_queued_writes_before_releasing_the_fd(any_stack: Stack, tmp_path: pathlib.Path) -> None:
    f = any_stack.open(tmp_path / "a", create=True)
    p = f.start_write_many([i * BS for i in range(N)], [b"A" * BS] * N)
    f.close()
    # close returned: every write finished, so nothing can still target the fd number
    assert p.done()
    assert p.wait() == [BS] * N
    fd = _victim(tmp_path / "victim")
    try:
        _assert_victim_untouched(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "a").read_bytes() == b"A" * (N * BS)


@pytest.mark.timeout(60)
def test_stack_close_waits_for_queued_writes(any_stack: Stack, tmp_path: pathlib.Path) -> None:
    f = any_stack.open(tmp_path / "a", create=True)
    p = f.start_write_many([i * BS for i in range(N)], [b"B" * BS] * N)
    any_stack.close()
    assert p.done()
    results = p.wait()
    assert sorted(set(results)) == [BS], f"queued writes failed at stack close: {sorted(set(results))}"
    fd = _victim(tmp_path / "victim")
    try:
        _assert_victim_untouched(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "a").read_bytes() == b"B" * (N * BS)


def test_close_releases_the_descriptor(any_stack: Stack, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a"
    f = any_stack.open(path, create=True)
    f.write_from(b"x" * BS, 0)
    assert _fds_to(path), "the open handle should hold a descriptor"
    f.close()
    assert _fds_to(path) == [], "close() left the file's descriptor open"


def test_io_started_after_close_is_refused(any_stack: Stack, tmp_path: pathlib.Path) -> None:
    f = any_stack.open(tmp_path / "a", create=True)
    f.close()
    with pytest.raises(RingClosedError, match="closed"):
        f.start_write_many([0], [b"x"])
    if f.backend == "fallback":  # its pool resolves the fd late, so the backend object refuses too
        with pytest.raises(RingClosedError, match="closed"):
            f.io.start_rw(True, [0], [b"x"])


CHILD = r"""
import json, os, sys
from uringstack.stack import open_stack
d = sys.argv[1]
N, BS = 2000, 4096
with open_stack() as stack:
    f = stack.open(os.path.join(d, "a"), create=True)
    p = f.start_write_many([i * BS for i in range(N)], [b"A" * BS] * N)
    f.close()
    victim = os.path.join(d, "victim")
    with open(victim, "wb") as v:
        v.write(b"\0" * (N * BS))
    fd = os.open(victim, os.O_RDWR)
    p.wait()
    data = os.pread(fd, N * BS, 0)
    q = stack.open(os.path.join(d, "b"), create=True).start_write_many([i * BS for i in range(N)], [b"B" * BS] * N)
print(json.dumps({"backend": f.backend, "overwritten": len(data) - data.count(0),
                  "results": sorted(set(p.wait())), "stack_close_results": sorted(set(q.wait()))}))
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is written for x86_64 syscall numbers")
def test_close_with_queued_writes_under_seccomp_fallback(tmp_path: pathlib.Path) -> None:
    """The default config where Docker's seccomp profile blocks io_uring: the fallback serves."""
    out = subprocess.run(
        [sys.executable, str(SECCOMP), sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["backend"] == "fallback"
    assert report["overwritten"] == 0
    assert report["results"] == [BS]
    assert report["stack_close_results"] == [BS]


@pytest.mark.timeout(60)
def test_fallback_backend_object_close_waits_for_its_queue(tmp_path: pathlib.Path) -> None:
    """``FallbackFileIO.close`` itself (not only the handle) waits: benchmarks and plugins use ``handle.io``."""
    with open_stack(overrides=CONFIGS["fallback"]) as s:
        f = s.open(tmp_path / "a", create=True)
        io = f.io
        p = io.start_rw(True, [i * BS for i in range(N)], [b"C" * BS] * N)
        io.close()
        fd = _victim(tmp_path / "victim")
        try:
            assert p.done()
            assert p.wait() == [BS] * N
            _assert_victim_untouched(fd)
        finally:
            os.close(fd)
