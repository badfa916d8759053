"""Interrupting a benchmark stops and reaps its fio (issue 12, item 14).

A fake ``fio`` on PATH records its pid and a forked job's pid and sleeps, so
the test needs neither fio nor its timing.  The signal goes to the bench's
own pid only (the bench runs in a session of its own), as a supervisor or
``kill PID`` would send it: nothing else delivers it to fio.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

FAKE_FIO = """#!/bin/sh
if [ "$1" = "--version" ]; then echo fio-3.36; exit 0; fi
sleep 300 &
echo "$$ $!" > "{pids}"
wait
"""

RUN_CLI = "import sys; from uringstack.cli import main; sys.argv[0] = 'uringstack'; main()"


def _default_sigint() -> None:
    """In the bench's child, before exec: SIGINT at its default, so Python installs its handler.

    A suite started as a background job of a non-interactive shell (``cmd &`` in a script,
    ``nohup ... &``) inherits SIGINT *ignored* (SigIgn 0x6 in /proc/PID/status), Python
    then leaves it ignored, and the bench rightly ignores the SIGINT: the test would hang
    for that reason, not the bench's.  A user's Ctrl-C reaches a bench whose SIGINT is not
    ignored; that is the case under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_wal_bench_stops_fio(tmp_path: pathlib.Path, sig: signal.Signals) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pids = tmp_path / "fio.pids"
    fio = bindir / "fio"
    fio.write_text(FAKE_FIO.format(pids=pids))
    fio.chmod(0o755)
    # PYTHONFAULTHANDLER: a bench that hangs after the signal is sent SIGABRT and its threads'
    # stacks end up in the failure (this hung about once in three loaded full runs).
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONFAULTHANDLER": "1"}
    (tmp_path / "d").mkdir()  # (--dir must exist since session 32)
    args = ["bench", "wal", "--duration", "0.5", "--rounds", "1", "--backend", "posix", "--dir", str(tmp_path / "d")]
    bench = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        _wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 60, "the fake fio to start")
        fio_pid, job_pid = map(int, pids.read_text().split())
        assert _alive(fio_pid) and _alive(job_pid)
        os.kill(bench.pid, sig)  # the bench's pid only, not its process group
        try:
            _, err = bench.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(bench.pid, signal.SIGABRT)  # faulthandler writes every thread's stack
            try:
                _, stacks = bench.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                stacks = "(no stacks: it did not die of SIGABRT either)"
            pytest.fail(f"the bench did not exit within 20 s of the signal; its threads:\n{stacks[-6000:]}")
        assert bench.returncode != 0
        assert "Traceback" not in err, err
        _wait_for(lambda: not _alive(fio_pid) and not _alive(job_pid), 5, "fio and its job to be gone")
        assert not (tmp_path / "d" / "fio.dat").exists()  # the bench cleaned up behind it
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if pids.exists():
            for p in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p), signal.SIGKILL)


def test_interrupt_during_run_fio_stops_and_reaps_fio(tmp_path: pathlib.Path) -> None:
    """The ladder's fio (core/bench/fio.py): an interrupt raised while it runs (here from
    the progress callback, as SIGINT would raise it) leaves no fio process behind."""
    from uringstack.bench.fio import run_fio
    from uringstack.bench.spec import BenchSpec

    pids = tmp_path / "fio.pids"
    fio = tmp_path / "fio"
    fio.write_text(FAKE_FIO.format(pids=pids))
    fio.chmod(0o755)
    deadline = time.monotonic() + 30

    def tick() -> None:
        if pids.exists() and len(pids.read_text().split()) == 2:
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            pytest.fail("the fake fio did not start within 30 s")

    spec = BenchSpec("randread", file=str(tmp_path / "data"), cpus=[0])
    with pytest.raises(KeyboardInterrupt):
        run_fio(str(fio), spec, "io_uring", tick)
    fio_pid, job_pid = map(int, pids.read_text().split())
    try:
        assert not _alive(fio_pid), "fio left running"
        _wait_for(lambda: not _alive(job_pid), 5, "fio's job to be gone")
        with pytest.raises(ChildProcessError):  # reaped: not our zombie any more
            os.waitpid(fio_pid, os.WNOHANG)
    finally:
        for p in (fio_pid, job_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_signal_while_fio_starts_still_stops_it(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT between fio's start and run_child's knowing of it (here: inside ``Popen``, once
    fio and its job run) is held back until the cleanup covers fio: no fio left running.
    Without that, the KeyboardInterrupt left ``Popen`` before run_child had the process to
    stop, and the WAL bench's interrupt test failed now and then under load."""
    from uringstack.bench import children

    pids = tmp_path / "fio.pids"
    fio = tmp_path / "fio"
    fio.write_text(FAKE_FIO.format(pids=pids))
    fio.chmod(0o755)
    real_popen = subprocess.Popen

    def popen_then_signal(cmd: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = real_popen(cmd, **kwargs)
        _wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30, "the fake fio to start")
        signal.raise_signal(signal.SIGINT)  # its Python handler runs before this returns
        return proc

    monkeypatch.setattr(children.subprocess, "Popen", popen_then_signal)
    # Python's own SIGINT handler, as a user's Ctrl-C meets it: a suite started as a background
    # job of a non-interactive shell inherits SIGINT ignored (see _default_sigint), and then
    # the signal raised above would do nothing and run_child wait out the fake fio's 300 s
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            children.run_child([str(fio)])
        fio_pid, job_pid = map(int, pids.read_text().split())
        _wait_for(lambda: not _alive(fio_pid) and not _alive(job_pid), 5, "fio and its job to be gone")
    finally:
        signal.signal(signal.SIGINT, previous)
        if pids.exists():
            for p in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p), signal.SIGKILL)


@pytest.mark.timeout(120)
def test_interrupt_during_worker_processes_stops_them(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--processes``: an interrupt while the worker processes run stops them at once.
    Regression: they shared the bench's process group, so stop()'s killpg(pid) found no
    such group, signalled nothing, and waited for each worker to finish its whole run."""
    from uringstack.bench import processes
    from uringstack.bench.runner import prepare_file
    from uringstack.bench.spec import BenchSpec

    f = tmp_path / "d.bin"
    prepare_file(str(f), 4 << 20)
    spec = BenchSpec("randread", file=str(f), file_size=4 << 20, duration=30.0, direct=False, workers=2, cpus=[0, 0])
    workers: list[int] = []  # the bench's child processes when the interrupt came

    def interrupted(self: subprocess.Popen[str], *args: Any, **kwargs: Any) -> Any:
        time.sleep(processes.START_DELAY_S + 1.0)  # the workers are past their start: in their 30 s run
        for task in pathlib.Path(f"/proc/{os.getpid()}/task").iterdir():
            workers.extend(int(p) for p in (task / "children").read_text().split())
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            processes.run_processes(spec, "batched")
        stopped_s = time.monotonic() - t0 - processes.START_DELAY_S - 1.0
        assert len(workers) == 2 and not any(map(_alive, workers))  # stopped and reaped
        assert stopped_s < 10, f"the workers were stopped {stopped_s:.1f} s after the interrupt (a 30 s run)"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
