"""A signal anywhere in the log's own short-lived descriptors leaks none and closes none twice.

Recovery, segment creation and the directory lock each open a file for a few
calls.  Held in a plain local (``fd = os.open(...)``, then ``try``), a raising
signal (Ctrl-C during ``Wal.open``, during a roll made inline) landing right
after the open leaked that descriptor for the life of the process: a program
that catches Ctrl-C and opens its log again keeps one more each time.  Each
sweep below sends a real signal at every point where CPython can run a raising
handler in one of them (tests/signal_points.py) and checks that no descriptor
is left open and no other file's descriptor was closed.
"""

from __future__ import annotations

import gc
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.descriptors import sweep_descriptors
from tests.signal_points import code_of
from uringstack.ring.interrupts import despite_signals, open_stored, with_descriptor
from uringstack.wal import Wal, recovery, segment
from uringstack.wal.segment import SegmentHeader

SEGMENT_BYTES = 64 * 1024
# Small segments: the sweeps make a log (and its spare) per point, and the VM's test disk is small.
SMALL = {"segment_size_bytes": SEGMENT_BYTES, "max_batch_bytes": 16 * 1024}


def _log(directory: pathlib.Path) -> list[recovery.SegmentScan]:
    """A closed log of two records in *directory*, scanned."""
    with Wal.open(directory, backend="fallback", **SMALL) as wal:
        wal.append(b"one")
        wal.append(b"two")
    return recovery.scan(directory).segments


def _swept(chosen: Callable[..., Any], run: Callable[[], object], after: Callable[[], object],
           bystander: pathlib.Path) -> int:  # fmt: skip
    """Sweep *run* with a signal at each point of *chosen*'s code (and the opening helpers');
    *after* undoes what a run did, so each run starts alike."""
    codes = code_of(chosen, open_stored, with_descriptor, segment.SegmentSyscalls.open)
    return sweep_descriptors(codes, run, bystander, after=lambda where: after(), handles=False, most=60)


@pytest.mark.timeout(300)
def test_fsync_dir(tmp_path: pathlib.Path) -> None:
    assert _swept(segment.fsync_dir, lambda: segment.fsync_dir(tmp_path), lambda: None, tmp_path) >= 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("step", ["seal", "unseal"])
def test_sealing(tmp_path: pathlib.Path, step: str) -> None:
    first = _log(tmp_path / "wal")[0].path
    fn = segment.seal if step == "seal" else segment.unseal
    args = (first, 3) if step == "seal" else (first,)
    assert _swept(segment._write_seal, lambda: fn(*args), lambda: None, first) >= 3


@pytest.mark.timeout(300)
def test_preparing_a_spare(tmp_path: pathlib.Path) -> None:
    spare = tmp_path / f"spare{segment.SPARE_SUFFIX}"
    run = lambda: segment.prepare_spare(tmp_path, SEGMENT_BYTES)  # noqa: E731
    after = lambda: spare.unlink(missing_ok=True)  # noqa: E731
    assert _swept(segment.prepare_spare, run, after, tmp_path) >= 4


@pytest.mark.timeout(300)
def test_activating_a_spare(tmp_path: pathlib.Path) -> None:
    header = SegmentHeader(1, SEGMENT_BYTES, 4096)
    final = tmp_path / segment.segment_name(1)

    def fresh_spare() -> None:
        final.unlink(missing_ok=True)
        segment.prepare_spare(tmp_path, SEGMENT_BYTES)

    fresh_spare()
    spare = tmp_path / f"spare{segment.SPARE_SUFFIX}"
    assert _swept(segment.activate_spare, lambda: segment.activate_spare(spare, header), fresh_spare, tmp_path) >= 4


@pytest.mark.timeout(300)
def test_taking_the_directory_lock(tmp_path: pathlib.Path) -> None:
    """Also: a signal after the lock was taken and registered, as the registry's ``with``
    exits, must not leave it held by an object nobody got (this process could never open
    its log again: "locked by a Wal this process opened ... and has not closed")."""
    held: list[segment.DirectoryLock] = []
    run = lambda: segment.DirectoryLock(tmp_path, "", held)  # noqa: E731

    def after() -> None:
        while held:
            held.pop().release()
        segment.DirectoryLock(tmp_path).release()  # (raises BlockingIOError when left held)

    assert _swept(segment.DirectoryLock.__init__, run, after, tmp_path) >= 3


@pytest.mark.timeout(300)
def test_releasing_the_directory_lock_again_after_a_signal(tmp_path: pathlib.Path) -> None:
    """``Wal.open``'s cleanup runs the release again when a signal cut it short
    (``despite_signals``): the run again must not close the lock's number twice."""
    held: list[segment.DirectoryLock] = []

    def run() -> None:
        segment.DirectoryLock(tmp_path, "", held)
        despite_signals(held.pop().release)

    def after() -> None:
        segment.DirectoryLock(tmp_path).release()  # (raises BlockingIOError when left held)

    assert _swept(segment.DirectoryLock.release, run, after, tmp_path) >= 2


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["uring", "fallback"])
def test_a_signal_anywhere_in_wal_open_leaves_the_log_openable(tmp_path: pathlib.Path, backend: str) -> None:
    """Ctrl-C during ``Wal.open`` (in the method itself, the lock, the lock file's open) leaves
    no descriptor open, closes none twice, and the log opens again at once with its records."""
    from uringstack import reaper

    template = tmp_path / "template"
    with Wal.open(template, backend=backend, **SMALL) as wal:
        wal.append(b"kept")
    codes = code_of(Wal.open, segment.DirectoryLock.__init__, open_stored)
    dirs: list[pathlib.Path] = []

    def run() -> Wal:
        dirs.append(tmp_path / f"wal{len(dirs)}")  # (a log left locked fails one point alone)
        shutil.copytree(template, dirs[-1])
        return Wal.open(dirs[-1], backend=backend, **SMALL)

    def reopens(where: str | None) -> None:
        gc.collect()  # (a Wal made and then cut off is closed by the reaper: waited for below)
        assert reaper.drain(10), "the reaper did not finish"
        try:
            again = Wal.open(dirs[-1], backend=backend, **SMALL)
        except BlockingIOError as e:
            raise AssertionError(f"a signal {where} left the log locked: {e}") from e
        with again:
            assert [p for _, p in again.read_from()] == [b"kept"], where
        shutil.rmtree(dirs[-1])

    assert sweep_descriptors(codes, run, template, after=reopens, most=300) > 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("repair", ["zero_range", "resize"])
def test_recovery_repairs(tmp_path: pathlib.Path, repair: str) -> None:
    path = tmp_path / "segment"
    path.write_bytes(bytes(3 * 4096))
    if repair == "zero_range":
        fn: Callable[..., None] = recovery._zero_range
        run = lambda: recovery._zero_range(path, 4096, 8192)  # noqa: E731
    else:
        fn = recovery._resize
        run = lambda: recovery._resize(path, 4 * 4096)  # noqa: E731
    assert _swept(fn, run, lambda: None, path) >= 3


@pytest.mark.timeout(300)
def test_reading_records(tmp_path: pathlib.Path) -> None:
    scanned = _log(tmp_path / "wal")
    got: list[object] = []

    def run() -> None:
        got.append(recovery.iter_records(scanned))

    def after() -> None:
        got.clear()  # (an iteration dropped unbegun closes its files: weakref.finalize)

    assert _swept(recovery.iter_records, run, after, scanned[0].path) >= 2
