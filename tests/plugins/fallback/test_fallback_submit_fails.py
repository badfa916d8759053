"""fallback: a batch whose submission to the pool fails part-way runs nothing after it raised.

``ThreadPoolExecutor.submit`` queues the op's work item and only then starts a
thread for it, and raises there (``RuntimeError: can't start new thread`` under a
pids cgroup or RLIMIT_NPROC).  Until session 32 the batch raised that at once
while the ops queued before it (and the refused one itself) ran later: a
``write_many`` of 8 blocks raised, then blocks 0 and 1 landed in the file; a read
could fill a buffer after its caller saw the error.  Now the refused batch is
given up: ops not started never run, those running are waited for, and the
error (``SubmissionError``, ``EAGAIN``) says per op what ran (``results``)."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.requires import open_direct, skip_without
from uringstack import aligned_buffer
from uringstack.errors import SubmissionError
from uringstack.plugins.fallback import backend as fallback_backend
from uringstack.stack import FileHandle, open_stack

BLOCK = 4096
OPS = 8
REFUSED = 2  # the op whose submit raises (after queueing it, as CPython's does)
SLOW_S = 0.2


class SlowOps:
    """The pool's reads and writes, each taking SLOW_S, with when each ran recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: list[tuple[int, float, float]] = []  # (offset, start, end)

    def wrap(self, real: Callable[..., int]) -> Callable[..., int]:
        def op(fd: int, buf: Any, offset: int, *rest: Any) -> int:
            start = time.monotonic()
            time.sleep(SLOW_S)
            try:
                return real(fd, buf, offset, *rest)
            finally:
                with self.lock:
                    self.ran.append((offset, start, time.monotonic()))

        return op


@pytest.fixture
def slow_ops(monkeypatch: pytest.MonkeyPatch) -> SlowOps:
    slow = SlowOps()
    monkeypatch.setattr(fallback_backend, "_preadv", slow.wrap(fallback_backend._preadv))
    monkeypatch.setattr(fallback_backend, "_pwritev", slow.wrap(fallback_backend._pwritev))
    return slow


def refuse_third_submit(h: FileHandle) -> None:
    """Make the handle's pool queue the 3rd op of the next batch, then raise as CPython's
    ``submit`` does when it cannot start a thread for it."""
    pool = h.io._pool  # type: ignore[attr-defined]
    real = pool.submit
    calls = [0]

    def submit(fn: Any, /, *args: Any) -> Any:
        calls[0] += 1
        future = real(fn, *args)
        if calls[0] == REFUSED + 1:
            raise RuntimeError("can't start new thread")
        return future

    pool.submit = submit


@pytest.fixture
def handle(tmp_path: pathlib.Path) -> Iterator[FileHandle]:
    path = tmp_path / "f"
    path.write_bytes(b"\0" * (OPS * BLOCK))
    overrides = {"core.backend": "fallback", "core.cores": [0], "fallback.threads": REFUSED}
    with open_stack(overrides=overrides) as stack, stack.open(path) as h:
        assert h.backend == "fallback"
        yield h


def check_given_up(exc: SubmissionError, raised_at: float, slow: SlowOps, op: str) -> None:
    """The error says what ran; nothing ran after the raise, nor will."""
    assert exc.errno == errno.EAGAIN
    assert exc.op == op
    assert "can't start new thread" in str(exc)
    assert isinstance(exc.__cause__, RuntimeError)
    assert exc.results == (BLOCK,) * REFUSED + (-errno.ECANCELED,) * (OPS - REFUSED)
    with slow.lock:
        ran = list(slow.ran)
    # the ops that were running (one per pool thread) ended before the call raised
    assert sorted(off for off, _, _ in ran) == [i * BLOCK for i in range(REFUSED)]
    assert all(end <= raised_at for _, _, end in ran)
    time.sleep(3 * SLOW_S)  # (a pool thread freed by now would have run the queued 3rd op)
    with slow.lock:
        assert len(slow.ran) == REFUSED, f"ops ran after the batch raised: {slow.ran[REFUSED:]}"


def test_a_read_batch_refused_part_way_fills_no_buffer_after_it_raised(handle: FileHandle, slow_ops: SlowOps) -> None:
    os.pwrite(handle.fd, b"".join(bytes([i + 1]) * BLOCK for i in range(OPS)), 0)
    bufs = [bytearray(BLOCK) for _ in range(OPS)]
    refuse_third_submit(handle)
    with pytest.raises(SubmissionError) as info:
        handle.read_many([i * BLOCK for i in range(OPS)], bufs)
    check_given_up(info.value, time.monotonic(), slow_ops, "read")
    assert [bytes(b[:1]) for b in bufs] == [b"\x01", b"\x02"] + [b"\0"] * (OPS - REFUSED)
    for b in bufs:
        b.extend(b"x")  # no op holds its buffer, although the error (and its traceback) is kept
    del info


def test_a_write_batch_refused_part_way_writes_nothing_after_it_raised(handle: FileHandle, slow_ops: SlowOps) -> None:
    bufs = [bytearray(bytes([65 + i]) * BLOCK) for i in range(OPS)]
    refuse_third_submit(handle)
    with pytest.raises(SubmissionError) as info:
        handle.start_write_many([i * BLOCK for i in range(OPS)], bufs)
    check_given_up(info.value, time.monotonic(), slow_ops, "write")
    data = pathlib.Path(handle.path).read_bytes()
    landed = [i for i in range(OPS) if data[i * BLOCK : (i + 1) * BLOCK] == bufs[i]]
    assert landed == list(range(REFUSED))
    t = time.monotonic()
    handle.close()  # nothing of the batch left to wait for (its refused op's future is never set)
    assert time.monotonic() - t < 1


def test_the_prober_case_an_o_direct_write_many(tmp_path: pathlib.Path, slow_ops: SlowOps) -> None:
    """The prober's case: an O_DIRECT ``write_many`` (a waited write batch the pool runs)."""
    path = tmp_path / "d"
    path.write_bytes(b"\0" * (OPS * BLOCK))
    os.close(open_direct(path, os.O_RDONLY))  # (skips where the file system refuses O_DIRECT)
    overrides = {"core.backend": "fallback", "core.cores": [0], "fallback.threads": REFUSED}
    with open_stack(overrides=overrides) as stack, stack.open(path, direct=True) as h:
        bufs = [aligned_buffer(BLOCK) for _ in range(OPS)]
        for i, b in enumerate(bufs):
            b[:] = bytes([65 + i]) * BLOCK
        refuse_third_submit(h)
        with pytest.raises(SubmissionError) as info:
            h.write_many([i * BLOCK for i in range(OPS)], bufs)
        check_given_up(info.value, time.monotonic(), slow_ops, "write")
    data = path.read_bytes()
    assert [i for i in range(OPS) if data[i * BLOCK : (i + 1) * BLOCK] == bytes(bufs[i])] == list(range(REFUSED))


def test_a_gathered_write_refused_part_way_says_what_reached_the_file(
    handle: FileHandle, slow_ops: SlowOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``writev_from``'s ``transferred``: the bytes back to back from its offset (what
    ``pwritev(2)`` would have returned), as for any other failure of it."""
    # (a waited buffered write batch is written by the calling thread: make it take the pool)
    monkeypatch.setattr(handle.io, "direct", True)
    monkeypatch.setattr(handle.io, "_check", lambda *a: None)
    bufs = [bytes([65 + i]) * BLOCK for i in range(OPS)]
    refuse_third_submit(handle)
    with pytest.raises(SubmissionError) as info:
        handle.writev_from(bufs, 0)
    assert info.value.transferred == REFUSED * BLOCK


REAL_LIMIT_CHILD = """
import json, os, resource, sys, time
import uringstack

path, block = sys.argv[1], 4096
overrides = {"core.backend": "fallback", "core.cores": [0], "fallback.threads": 4}
with uringstack.open_stack(overrides=overrides) as stack, stack.open(path) as h:
    h.start_write_many([0], [b"1" * block]).wait()  # the pool's one thread, idle from here
    os.setresuid(54321, 54321, 0)  # (glibc: every thread) so the process counts for that user
    tasks = len(os.listdir("/proc/self/task"))
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))  # no thread more
    bufs = [bytes([65 + i]) * block for i in range(8)]
    try:
        h.start_write_many([block * (i + 1) for i in range(8)], bufs).wait()
        out = {"raised": None}
    except Exception as exc:
        out = {"raised": type(exc).__name__, "errno": getattr(exc, "errno", None),
               "results": list(getattr(exc, "results", ())), "message": str(exc)}
    out["at_raise"] = [i for i in range(8) if os.pread(h.fd, block, block * (i + 1)) == bufs[i]]
    time.sleep(0.5)  # (the pool's idle thread would have run what was queued by now)
    out["later"] = [i for i in range(8) if os.pread(h.fd, block, block * (i + 1)) == bufs[i]]
    os.setresuid(0, 0, 0)
print(json.dumps(out))
"""


def test_a_real_thread_limit(tmp_path: pathlib.Path) -> None:
    """The prober's case with a real limit: RLIMIT_NPROC of a user (root ignores its own),
    reached, so the pool cannot start its second thread for the batch's second op.  The
    error names the limit reached and the fix (core/probe/threadlimits.py)."""
    if os.geteuid() != 0:
        skip_without("root, to run the child as a user with a process limit")
    path = tmp_path / "f"
    path.write_bytes(b"\0" * (9 * BLOCK))
    proc = subprocess.run(
        [sys.executable, "-c", REAL_LIMIT_CHILD, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["raised"] == "SubmissionError", out
    assert out["errno"] == errno.EAGAIN
    assert "this process is at its thread limit (RLIMIT_NPROC" in out["message"], out["message"]
    # (the first op may have gone to the pool's idle thread before the batch was given up)
    ran = [i for i, res in enumerate(out["results"]) if res == BLOCK]
    assert all(res in (BLOCK, -errno.ECANCELED) for res in out["results"]), out
    assert out["at_raise"] == out["later"] == ran, out
