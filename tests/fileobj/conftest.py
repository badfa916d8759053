"""Stacks for the file-object suite: io_uring and the fallback thread pool."""

from __future__ import annotations

import contextlib
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uringstack
from tests.requires import skip_without
from uringstack.fileobj import default_stack as ds
from uringstack.fileobj._fastio import HeldWrite
from uringstack.fileobj.openfile import HOLD_MIN
from uringstack.stack import Stack, open_stack

BACKENDS = {
    "uring": {"core.backend": "auto", "fallback.mode": "auto"},
    "fallback": {"core.backend": "fallback"},
}


@contextlib.contextmanager
def as_default_stack(stack: Stack) -> Iterator[Stack]:
    """Make *stack* the process-wide default while the block runs (tests only)."""
    with ds._lock:
        saved, ds._stack = ds._stack, stack
    try:
        yield stack
    finally:
        with ds._lock:
            ds._stack = saved


@pytest.fixture(params=sorted(BACKENDS))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS[request.param])
    yield s
    s.close()


@pytest.fixture
def uring_stack() -> Iterator[Stack]:
    """An io_uring stack alone: where the file objects' C steps and reads at the position serve."""
    s = open_stack(overrides=BACKENDS["uring"])
    yield s
    s.close()


@pytest.fixture
def in_tmp_cwd(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the test's own temporary directory (CPython's suites write TESTFN into the working one)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def default_on(stack: Stack) -> Iterator[Stack]:
    """The parametrized stack, installed as the default one."""
    with as_default_stack(stack):
        yield stack


def write_from_another_thread(f: Any, data: bytes, accepted: list[bytes], errors: list[BaseException]) -> None:
    """``f.write(data)`` in a thread of its own, waited for: *accepted* gets *data* if the
    write returned its length, *errors* what it raised (a close racing writes, injected at
    one point of it)."""

    def write() -> None:
        try:
            if f.write(data) == len(data):
                accepted.append(data)
        except BaseException as e:  # (reported to the test)
            errors.append(e)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive()


def open_direct_or_skip(path: pathlib.Path, mode: str, stack: Stack, **kw: Any) -> Any:
    """``uringstack.open(path, mode, direct=True, ...)``, skipped with the reason where the
    directory refuses O_DIRECT (tmpfs)."""
    try:
        return uringstack.open(path, mode, direct=True, stack=stack, **kw)
    except OSError as exc:
        skip_without(f"the tmp directory {path.parent} refuses O_DIRECT ({exc})")


class _Deferred:
    """A write batch that starts only when waited for: the slowest a kernel may be."""

    def __init__(self, start: Any) -> None:
        self._start = start
        self._real: Any = None
        self.n = 1

    def done(self) -> bool:
        return False

    def wait(self) -> list[int]:
        if self._real is None:
            self._real = self._start()
        return self._real.wait()  # type: ignore[no-any-return]


def defer_writes(raw: Any) -> None:
    """Make the write batches *raw*'s write-behind starts begin only when waited for."""
    real = raw.handle.start_write_many
    raw.handle.start_write_many = lambda offs, bufs: _Deferred(lambda: real(offs, bufs))


def hold_in_c(f: Any) -> None:
    """Make *f*'s C write step hold every large ``bytes`` for a gathered write, as the Python
    step does, instead of writing a chunk itself where nothing is held (``_fastio.HeldWrite``
    without its backend): for the tests of holding, which the direct write skips."""
    buffer = getattr(f, "buffer", f)
    if isinstance(vars(buffer).get("write"), HeldWrite):
        raw = buffer.raw
        vars(buffer)["write"] = HeldWrite(buffer, raw, raw._held, raw._fd, HOLD_MIN)


def seen_from_fork_child(act: Callable[[], object], state: Callable[[], str]) -> str:
    """Run *act* in a fork child of this process; ``"<state()> <outcome>"`` as the child saw
    it (*outcome* ``done``, or the name of the exception *act* raised), through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            try:
                act()
                outcome = "done"
            except Exception as e:  # (reported to the parent)
                outcome = type(e).__name__
            os.write(w, f"{state()} {outcome}".encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        return os.read(r, 200).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def starts_in_flight(raw: Any) -> int:
    """Ops of the raw file *raw*'s handle started and not finished (its in-flight tracker)."""
    tracker = raw.handle._inflight
    with tracker._lock:
        n: int = tracker._starts()
    return n


def watch_c_step(raw: Any, run: Callable[[], None], timeout: float) -> dict[str, int]:
    """Run *run* in a thread of its own, waited for up to *timeout* seconds; meanwhile count
    the moments *raw*'s lock was held (looked at, not taken: no Python step caused) and its
    handle's tracker counted an op in flight."""
    seen = {"starts": 0, "locked": 0}
    done = threading.Event()

    def go() -> None:
        try:
            run()
        finally:
            done.set()

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        if starts_in_flight(raw) > 0:
            seen["starts"] += 1
        if repr(raw._lock).startswith("<locked"):
            seen["locked"] += 1
    worker.join(timeout)
    assert not worker.is_alive()
    return seen
