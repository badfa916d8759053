"""The benchmarks' data files: never written over a file the bench did not make, never left half-written.

``bench randread --file PATH`` rewrote any existing file whose size was not
``--file-size`` with random bytes: pointed at a user's file for a read
benchmark, it destroyed it.  And a data file (``bench randread``, ``bench
fileobj``, ``tune``'s scratch file) that could not be written whole (a full
disk) stayed behind, half-written, keeping the disk full, with an error that
named neither the file nor the size.
"""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import signal
from collections.abc import Iterator

import pytest

from tests.requires import skip_without
from uringstack.bench import runner
from uringstack.bench.datafile import write_random_file


@pytest.fixture
def small_file_limit() -> Iterator[int]:
    """Files of this process stop at 1 MiB (``EFBIG``, ``SIGXFSZ`` ignored): a full disk's stand-in."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        yield 1 << 20
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_an_existing_file_of_another_size_is_refused_not_rewritten(tmp_path: pathlib.Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_bytes(b"my notes\n")
    with pytest.raises(ValueError, match=r"holds 9 bytes, not --file-size 1048576.*--file-size 9"):
        runner.prepare_file(str(mine), 1 << 20)
    assert mine.read_bytes() == b"my notes\n"
    assert runner.prepare_file(str(mine), 9) is False  # its own size: used as it is, not written
    assert mine.read_bytes() == b"my notes\n"


def test_the_bench_s_own_directory_is_rewritten(tmp_path: pathlib.Path) -> None:
    left = tmp_path / runner.DEFAULT_DIR / "data-1048576.bin"
    left.parent.mkdir()
    left.write_bytes(b"x" * 1000)  # what an interrupted run left
    assert runner.prepare_file(str(left), 1 << 20) is True
    assert left.stat().st_size == 1 << 20


def test_a_data_file_that_cannot_be_written_whole_is_removed_and_named(
    tmp_path: pathlib.Path, small_file_limit: int
) -> None:
    path = tmp_path / "data.bin"
    with pytest.raises(OSError) as failed:
        runner.prepare_file(str(path), 4 << 20)
    assert failed.value.errno == errno.EFBIG
    assert failed.value.filename == str(path)
    assert "writing a 4 MiB data file failed after 1 MiB" in str(failed.value)
    assert "partial file was removed" in str(failed.value)
    assert not path.exists()


def test_tune_s_scratch_file_is_written_by_the_same_writer(tmp_path: pathlib.Path, small_file_limit: int) -> None:
    from uringstack.tune.targets import TuneError, _write_scratch

    with pytest.raises(TuneError, match="cannot make a scratch file: writing a 4 MiB data file failed"):
        _write_scratch(str(tmp_path), 4 << 20)
    assert list(tmp_path.iterdir()) == []


def test_an_exclusive_data_file_never_replaces_one_there(tmp_path: pathlib.Path) -> None:
    there = tmp_path / "f"
    there.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        write_random_file(str(there), 1 << 20, exclusive=True)
    assert there.read_bytes() == b"keep"
    write_random_file(str(tmp_path / "g"), 3 << 20, exclusive=True)
    assert os.path.getsize(tmp_path / "g") == 3 << 20


@pytest.mark.parametrize("workload", ["randwrite", "seqwrite", "durable-append"])
def test_a_write_workload_refuses_a_file_the_bench_did_not_create(tmp_path: pathlib.Path, workload: str) -> None:
    """A file of exactly ``--file-size`` is used as it is, which for a write workload meant
    writing over the caller's data (session 31: ``bench randwrite --file mine.bin`` did)."""
    from uringstack.bench.spec import BenchSpec

    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"A" * (1 << 20))
    spec = BenchSpec(workload, file=str(mine), file_size=1 << 20)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exists and the bench did not create it"):
        runner.check_target(spec)
    runner.check_target(BenchSpec("randread", file=str(mine), file_size=1 << 20))  # reading it is fine
    assert mine.read_bytes() == b"A" * (1 << 20)
    made = tmp_path / "made.bin"
    assert runner.prepare_file(str(made), 1 << 20) is True  # the bench's own: a write workload may reuse it
    try:
        os.getxattr(made, runner.BENCH_XATTR)
    except OSError as exc:
        skip_without(f"{tmp_path} keeps no user xattrs ({exc}), so a file the bench made is refused there too")
    runner.check_target(BenchSpec(workload, file=str(made), file_size=1 << 20))  # type: ignore[arg-type]
