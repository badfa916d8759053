"""Shared fixtures for the whole suite (area fixtures live in each tests/<area>/conftest.py)."""

from __future__ import annotations

import gc
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from tests.signal_points import Alarm

_FALLBACK_PLUGIN_TESTS = pathlib.Path(__file__).parent / "plugins" / "fallback"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``host_only`` what makes no io_uring call: the fallback plugin's tests and every
    test parametrized to run on the fallback backend (a thread pool of ``preadv``/``pwritev``
    and ``fdatasync``, whose behaviour the NVMe VM's kernel matrix does not vary).  The host
    suite runs them; ``scripts/vm-guest-tests.sh`` deselects them on 5.10, 6.1 and 6.12,
    where each costs emulated CPU time the 90-minute CI run does not have."""
    host_only = pytest.mark.host_only
    for item in items:
        params = getattr(item, "callspec", None)
        if item.path.is_relative_to(_FALLBACK_PLUGIN_TESTS) or (
            params is not None and "fallback" in params.params.values()
        ):
            item.add_marker(host_only)


@pytest.fixture(autouse=True, scope="session")
def _private_tune_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The suite never reads the developer's `uringstack tune` cache: measurements found
    there would change what `auto` decides in every test that opens a stack."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A scratch directory on the same filesystem as the tests' tmp_path (ext4 here)."""
    d = tmp_path / "data"
    d.mkdir()
    return d


def _poller_cpus(ring: Any, timeout_s: float = 30.0) -> str:
    """Cpus_allowed_list of *ring*'s SQPOLL thread, read back from /proc.

    Until the poller first runs, fdinfo names its creator and the poller has
    neither its name nor its affinity yet, so wait for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = ring.sq_thread()
        assert info is not None
        task = pathlib.Path(f"/proc/self/task/{info[0]}")
        if (task / "comm").read_text().startswith("iou-sqp"):
            status = (task / "status").read_text()
            return next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list")).split()[-1]
        time.sleep(0.01)
    return "poller never ran"


@pytest.fixture
def poller_cpus() -> Callable[..., str]:
    """``poller_cpus(ring)``: the CPU list the ring's SQPOLL thread may run on."""
    return _poller_cpus


@pytest.fixture
def loop_device(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """A 32 MiB loop block device over a file of random bytes: ``(device, backing file)``.

    Root and losetup are what CI and the README's test command have, so the
    block-device tests run on every machine of the project."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("a loop device needs root and losetup")
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.write(os.urandom(32 << 20))
    done = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"losetup failed: {done.stderr.strip()}")
    dev = done.stdout.strip()
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def plain_uring_stack() -> Iterator[Any]:
    """One worker on CPU 0 serving files through plain io_uring (no registered buffers): the
    asyncio coalescer's own path.  Open handles with :func:`open_plain_uring`."""
    from uringstack.stack import open_stack

    with open_stack(overrides={"core.cores": [0], "core.backend": "uring", "fixedbuf.mode": "off"}) as s:
        yield s


@pytest.fixture
def reads_through_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio ``await read(n, off)`` of cached data goes through the ring's batches, as
    uncached data does (``core.aio_inline_read_budget`` 0, through the environment, for
    every stack the test opens), for tests of what the coalescer does with those
    batches on a hot file."""
    monkeypatch.setenv("URINGSTACK_CORE__AIO_INLINE_READ_BUDGET", "0")


def open_plain_uring(stack: Any, path: pathlib.Path, writable: bool = True, **options: Any) -> Any:
    """``stack.open(path, ...)``, skipped (with the reason) where io_uring does not serve it."""
    from tests.requires import skip_without

    h = stack.open(path, writable=writable, **options)
    if h.ring is None or h.backend != "uring":
        h.close()
        skip_without(f"the storage ring does not serve {path} (backend {h.backend}: {h.backend_reason})")
    return h


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """An empty pipe (r, w): a read from it is held by the kernel until the test writes."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture
def counted_alarm() -> Iterator[list[int]]:
    """SIGALRM raises ``tests.signal_points.Alarm``, each time counted in the list yielded."""
    rang: list[int] = []

    def alarm(signum: int, frame: FrameType | None) -> None:
        rang.append(1)
        raise Alarm

    old = signal.signal(signal.SIGALRM, alarm)
    yield rang
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def size_limit() -> Iterator[Callable[[int | None], None]]:
    """Set this process's file size limit (None: none); restored, with SIGXFSZ's handler, at the end.

    Past the limit ``write(2)`` writes what fits, then fails with EFBIG (SIGXFSZ ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(n: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY if n is None else n, hard))

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """What finalizers raised (an exception in one is only printed): the test asserts none."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
    return seen


@pytest.fixture
def _gc_off() -> Iterator[None]:
    """Only the test's own collections run (the one on a worker or flusher thread must find
    the object it drops): earlier garbage is collected first, then the GC is off."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
