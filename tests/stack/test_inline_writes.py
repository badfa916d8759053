"""Waited buffered writes that the kernel would punt to a worker are done by the caller.

The decision lives in the backend (``UringFileIO.writes_inline``, from
``uringstack.probe.punts``; the fallback always): every caller of
``write_from``/``write_many``/prepared writes gets it, with the results,
errors and checks the ring path has.  Unwaited writes still go to the ring.
"""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from uringstack.config import load_config
from uringstack.errors import RingClosedError, ShortIOError, UringIOError
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.plugins.fallback.backend import FallbackFileIO
from uringstack.ring import Ring, io_backend
from uringstack.stack import Stack, Worker, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.stack.uring_backend import UringFileIO

from .conftest import BACKENDS

DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def uring_stack() -> Iterator[Stack]:
    s = open_stack(overrides=BACKENDS["uring"])
    yield s
    s.close()


def _uring_handle(stack: Stack, path: pathlib.Path, *, inline: bool, **kw: Any) -> FileHandle:
    h = stack.open(path, create=True, **kw)
    assert isinstance(h.io, UringFileIO)
    h.io._inline_writes = inline  # the fact, fixed: both paths of one machine compared
    return h


def test_buffered_files_here_are_served_inline(uring_stack: Stack, tmp_path: pathlib.Path) -> None:
    with uring_stack.open(tmp_path / "f", create=True) as h:
        assert isinstance(h.io, UringFileIO)
        from uringstack.probe.punts import buffered_write_punts

        assert h.io.writes_inline() is buffered_write_punts(h.fd)
    with uring_stack.open(tmp_path / "f", direct=True) as h:
        assert isinstance(h.io, UringFileIO) and h.io.writes_inline() is False  # O_DIRECT: always the ring


def test_waited_writes_skip_the_ring_unwaited_ones_do_not(uring_stack: Stack, tmp_path: pathlib.Path) -> None:
    with _uring_handle(uring_stack, tmp_path / "f", inline=True) as h:
        ring = h.ring
        assert ring is not None
        before = ring.counters()["submitted"]
        assert h.write_from(DATA, 0) == len(DATA)
        assert h.write_many([len(DATA), 2 * len(DATA)], [DATA[:100], DATA[100:300]]) == [100, 200]
        with h.prepare_writes([bytearray(DATA[:4096])]) as p:
            assert p.run([3 * len(DATA)]) == [4096]
            assert ring.counters()["submitted"] == before
            assert p.start([4 * len(DATA)]).wait() == [4096]  # unwaited: the ring
        assert ring.counters()["submitted"] == before + 1
        assert h.start_write_many([0], [DATA[:10]]).wait() == [10]
        assert ring.counters()["submitted"] == before + 2
    want = bytearray(4 * len(DATA) + 4096)
    want[: len(DATA)] = DATA
    want[len(DATA) : len(DATA) + 100] = DATA[:100]
    want[2 * len(DATA) : 2 * len(DATA) + 200] = DATA[100:300]
    want[3 * len(DATA) : 3 * len(DATA) + 4096] = DATA[:4096]
    want[4 * len(DATA) :] = DATA[:4096]
    assert (tmp_path / "f").read_bytes() == want


def test_without_the_fact_waited_writes_use_the_ring(uring_stack: Stack, tmp_path: pathlib.Path) -> None:
    with _uring_handle(uring_stack, tmp_path / "f", inline=False) as h:
        assert h.ring is not None
        before = h.ring.counters()["submitted"]
        h.write_from(DATA, 0)
        assert h.ring.counters()["submitted"] == before + 1
    assert (tmp_path / "f").read_bytes() == DATA


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "ring"])
def test_errors_are_the_ring_paths(uring_stack: Stack, tmp_path: pathlib.Path, inline: bool) -> None:
    (tmp_path / "ro").write_bytes(b"x")
    with _uring_handle(uring_stack, tmp_path / "ro", inline=inline, writable=False) as h:
        with pytest.raises(UringIOError) as exc:
            h.write_from(b"abc", 7)
        assert (exc.value.errno, str(exc.value)) == (
            errno.EBADF,
            f"[Errno 9] write failed: Bad file descriptor (at offset 7): {h.path!r}",
        )
        with pytest.raises(ValueError, match="negative"):
            h.write_from(b"abc", -1)
    with pytest.raises(RingClosedError):
        h.write_from(b"abc", 0)
    with pytest.raises(RingClosedError):
        h.io.start_rw(True, [0], [b"abc"], wait=True)  # the backend itself refuses a closed file


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "ring"])
def test_a_write_cut_short_by_the_file_size_limit(uring_stack: Stack, tmp_path: pathlib.Path, inline: bool) -> None:
    """RLIMIT_FSIZE cuts a write short, then fails the rest with EFBIG: both paths report the same."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with _uring_handle(uring_stack, tmp_path / "f", inline=inline) as h:
            resource.setrlimit(resource.RLIMIT_FSIZE, (10000, old_limit[1]))
            try:
                with pytest.raises(UringIOError) as exc:
                    h.write_from(DATA, 0)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            assert exc.value.errno == errno.EFBIG and "at offset 10000" in str(exc.value)
    finally:
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (tmp_path / "f").read_bytes() == DATA[:10000]


def test_short_pwrites_are_continued(
    uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.pwrite

    def at_most_1000(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        return real(fd, memoryview(data)[:1000], offset)

    monkeypatch.setattr(io_backend.os, "pwrite", at_most_1000)
    with _uring_handle(uring_stack, tmp_path / "f", inline=True) as h:
        assert h.write_from(DATA, 0) == len(DATA)
    assert calls == list(range(0, len(DATA), 1000))
    assert (tmp_path / "f").read_bytes() == DATA


def test_a_pwrite_of_nothing_is_a_short_write(
    uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(io_backend.os, "pwrite", lambda fd, data, offset: 0)
    with _uring_handle(uring_stack, tmp_path / "f", inline=True) as h, pytest.raises(ShortIOError):
        h.write_from(DATA, 0)


def test_close_waits_for_an_inline_write(
    uring_stack: Stack, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = io_backend.write_inline

    def slow(fd: int, offsets: Any, buffers: Any) -> list[int]:
        entered.set()
        assert release.wait(10), "the test never released the write"
        return real(fd, offsets, buffers)

    monkeypatch.setattr("uringstack.stack.uring_backend.write_inline", slow)
    h = _uring_handle(uring_stack, tmp_path / "f", inline=True)
    writer = threading.Thread(target=h.write_from, args=(DATA, 0))
    writer.start()
    assert entered.wait(10), "the write never started"
    closer = threading.Thread(target=h.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "close() returned while a write was still running in another thread"
    release.set()
    writer.join(10)
    closer.join(10)
    assert not closer.is_alive()
    assert (tmp_path / "f").read_bytes() == DATA


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int], Ring | None]] = []

    @hookimpl
    def uringstack_completion_batch(self, worker: Worker, op: str, results: list[int], ring: Ring | None) -> None:
        self.seen.append((op, list(results), ring))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_completion_hook_sees_inline_writes(tmp_path: pathlib.Path, backend: str) -> None:
    pm = make_plugin_manager()
    rec = _Recorder()
    pm.register(rec, "recorder")
    loaded = load_config(env={}, plugin_manager=pm, overrides={**BACKENDS[backend], "sqpoll.mode": "off"})
    with open_stack(loaded.config, plugin_manager=pm) as stack, stack.open(tmp_path / "f", create=True) as h:
        if isinstance(h.io, UringFileIO):
            h.io._inline_writes = True
        h.write_many([0, 100], [b"a" * 100, b"b" * 50])
    assert rec.seen == [("write", [100, 50], None)]


def test_the_fallback_does_waited_buffered_writes_in_the_caller(tmp_path: pathlib.Path) -> None:
    with open_stack(overrides=BACKENDS["fallback"]) as stack, stack.open(tmp_path / "f", create=True) as h:
        assert isinstance(h.io, FallbackFileIO)
        pool = h.io._pool
        submitted: list[object] = []
        real_submit = pool.submit

        def counting(*args: Any, **kw: Any) -> Any:
            submitted.append(args[0])
            return real_submit(*args, **kw)

        pool.submit = counting
        assert h.write_from(DATA, 0) == len(DATA)
        with h.prepare_writes([bytearray(b"z" * 10)]) as p:
            assert p.run([len(DATA)]) == [10]
        assert submitted == []
        assert h.start_write_many([0], [b"y"]).wait() == [1]  # unwaited: the pool
        assert len(submitted) == 1
        h.close()
        with pytest.raises(RingClosedError):
            h.io.start_rw(True, [0], [b"abc"], wait=True)
    assert (tmp_path / "f").read_bytes() == b"y" + DATA[1:] + b"z" * 10


def test_the_first_waited_write_with_every_descriptor_in_use_is_written(tmp_path: pathlib.Path) -> None:
    """The first waited buffered write of a process decides (once per file system) whether to
    write inline; with every descriptor in use it must still be written, the measurement
    answering "punted" as documented.  It raised EMFILE naming a library source file: the
    deciding module was imported there, on first use (a fresh interpreter shows it)."""
    script = tmp_path / "first_write.py"
    script.write_text(
        "import os, resource, sys\n"
        "import uringstack\n"
        "path = sys.argv[1]\n"
        "with uringstack.open_stack(overrides={'core.backend': 'uring', 'core.cores': [0]}) as s:\n"
        "    h = s.open(path, create=True)\n"
        "    assert h.backend == 'uring', h.backend\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "    held = []\n"
        "    try:\n"
        "        while True:\n"
        "            held.append(os.open(path, os.O_RDONLY))\n"
        "    except OSError:\n"
        "        pass\n"
        "    print(h.write_from(b'x' * 10, 0))\n"
        "    for fd in held:\n"
        "        os.close(fd)\n"
        "    h.close()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "f")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "10", done.stderr[-2000:]
    assert (tmp_path / "f").read_bytes() == b"x" * 10
