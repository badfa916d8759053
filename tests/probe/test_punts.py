"""The measured fact "buffered io_uring writes are punted to io-wq here", and its caches."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import signal
import time
from collections.abc import Iterator

import pytest

from tests.requires import skip_without
from uringstack.probe import punts
from uringstack.probe.tune_key import fs_type


@pytest.fixture(autouse=True)
def _fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(punts, "_memo", {})  # each test measures or reads the cache itself


@pytest.fixture
def ext4_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    if fs_type(os.stat(tmp_path).st_dev) != "ext4":
        skip_without("an ext4 file system under pytest's temporary directory")
    return tmp_path


@pytest.fixture
def file_fd(tmp_path: pathlib.Path) -> Iterator[int]:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    yield fd
    os.close(fd)


def test_ext4_punts_buffered_writes_and_the_measurement_can_say_no(ext4_dir: pathlib.Path) -> None:
    # ext4 has no FOP_BUFFER_WASYNC: every buffered io_uring write goes to an io-wq worker
    assert punts.measure_write_punt(str(ext4_dir)) is True
    # the control: an O_DIRECT overwrite of written blocks is issued inline on ext4,
    # so a measurement that always said True would fail here
    assert punts.measure_write_punt(str(ext4_dir), direct=True, overwrite=True) is False


def test_measured_once_then_read_from_the_cache(
    ext4_dir: pathlib.Path, file_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ext4_dir / "cache"
    calls: list[str] = []
    real = punts.measure_write_punt

    def counting(directory: str, **kw: bool) -> bool | None:
        calls.append(directory)
        return real(directory, **kw)

    monkeypatch.setattr(punts, "measure_write_punt", counting)
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is True
    assert calls == [str(ext4_dir)]  # measured in the file's own directory
    doc = json.loads((cache / punts.PUNTS_FILE).read_text())
    assert doc["kernel"] == platform.release() and doc["buffered_write_punts"] == {"ext4": True}
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is True  # this process: memo
    monkeypatch.setattr(punts, "_memo", {})  # another process: the file
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is True
    assert len(calls) == 1


def test_a_cached_answer_wins_and_another_kernels_is_ignored(
    ext4_dir: pathlib.Path, file_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ext4_dir / "cache"
    cache.mkdir()
    doc = {"format": 1, "kernel": platform.release(), "buffered_write_punts": {"ext4": False}}
    (cache / punts.PUNTS_FILE).write_text(json.dumps(doc))
    monkeypatch.setattr(punts, "measure_write_punt", lambda d, **kw: pytest.fail("measured despite the cache"))
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is False

    monkeypatch.setattr(punts, "_memo", {})
    (cache / punts.PUNTS_FILE).write_text(json.dumps({**doc, "kernel": "1.0-other"}))
    monkeypatch.setattr(punts, "measure_write_punt", lambda d, **kw: True)
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is True
    assert json.loads((cache / punts.PUNTS_FILE).read_text())["kernel"] == platform.release()


def test_unmeasurable_means_inline_and_is_not_cached(
    tmp_path: pathlib.Path, file_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(punts, "measure_write_punt", lambda d, **kw: None)
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is True
    assert not (cache / punts.PUNTS_FILE).exists()


def test_a_corrupt_cache_is_measured_over(
    tmp_path: pathlib.Path, file_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / punts.PUNTS_FILE).write_text("{not json")
    monkeypatch.setattr(punts, "measure_write_punt", lambda d, **kw: False)
    assert punts.buffered_write_punts(file_fd, cache_dir=cache) is False


def test_only_regular_files_are_decided_by_their_file_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(punts, "measure_write_punt", lambda d, **kw: pytest.fail("a pipe was measured"))
    r, w = os.pipe()
    try:
        assert punts.buffered_write_punts(w) is False
    finally:
        os.close(r)
        os.close(w)


def test_a_fork_child_does_not_inherit_a_held_lock(file_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """fork() while another thread measures: the child's first lookup must not wait for that thread."""
    monkeypatch.setattr(punts, "measure_write_punt", lambda d, **kw: True)
    with punts._lock:  # what a parent thread mid-measurement holds
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists, the lock's holder does not
            code = 1
            try:
                code = 0 if punts.buffered_write_punts(file_fd, cache_dir=pathlib.Path("/nonexistent")) else 3
            finally:
                os._exit(code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the fork child hung on the measurement lock its parent held")
    assert os.waitstatus_to_exitcode(status) == 0
