"""The thread-limit reader (uringstack.probe.threadlimits) on fake /proc and cgroup trees.

Under a pids cgroup's ``pids.max`` or ``RLIMIT_NPROC`` at its limit, io_uring's
io-wq cannot add a worker (an op it punts completes with ``-ECANCELED``) and a
Python thread cannot start (``can't start new thread``): until session 33 both
said nothing of the cause.  These tests pin down which limit the reader names
and when it names none (tests/stack/test_thread_limit_errors.py hits the real
limits)."""

from __future__ import annotations

import errno
import pathlib
import threading

import pytest

from uringstack.errors import ThreadStartError, UringIOError
from uringstack.probe import threadlimits
from uringstack.probe.defects import IOWQ_SIGNAL_CANCEL_ID
from uringstack.probe.kernel import parse_process_status
from uringstack.probe.threadlimits import (
    ThreadLimit,
    iowq_hint,
    limits_reached,
    op_error,
    start_thread,
    thread_start_hint,
)

UID = 1000
CAP_SYS_RESOURCE_MASK = f"{1 << 24:016x}"


def status(uid: int, threads: int, cap_eff: str = "0000000000000000") -> str:
    """A /proc/PID/status text with the lines the reader uses."""
    return f"Name:\tpython\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nThreads:\t{threads}\nCapEff:\t{cap_eff}\nSeccomp:\t0\n"


def fake_proc(
    tmp: pathlib.Path, own: str, others: dict[str, str] | None = None, cgroup: str = "0::/\n"
) -> pathlib.Path:
    """A /proc with self (status *own*, cgroup *cgroup*) and more processes (pid -> status)."""
    proc = tmp / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "status").write_text(own)
    (proc / "self" / "cgroup").write_text(cgroup)
    for pid, text in (others or {}).items():
        (proc / pid).mkdir()
        (proc / pid / "status").write_text(text)
    return proc


def fake_cgroup(root: pathlib.Path, levels: dict[str, tuple[str, str]]) -> pathlib.Path:
    """A cgroup tree: path (relative to *root*) -> (pids.max, pids.current)."""
    for rel, (limit, current) in levels.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "pids.max").write_text(limit + "\n")
        (d / "pids.current").write_text(current + "\n")
    return root


def test_status_parser_reads_threads_and_the_real_uid() -> None:
    parsed = parse_process_status("Uid:\t54321\t0\t0\t0\nThreads:\t7\nCapEff:\t0000000000000000\n")
    assert (parsed.real_uid, parsed.threads) == (54321, 7)


def test_rlimit_nproc_counts_the_users_threads_in_every_process(tmp_path: pathlib.Path) -> None:
    """RLIMIT_NPROC counts every task of the real user, not only this process's."""
    proc = fake_proc(
        tmp_path,
        status(UID, 10),
        # (200 is this process: in a real /proc, self links to its own pid's directory)
        {"1": status(0, 50), "200": status(UID, 10), "300": status(UID, 53), "400": status(2000, 9)},
    )
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    reached = limits_reached(proc=proc, cgroup_root=cgroup, nproc_soft=64)
    assert reached == [ThreadLimit("RLIMIT_NPROC", 64, 63, f"threads of user {UID}")]
    hint = iowq_hint(proc=proc, cgroup_root=cgroup, nproc_soft=64)
    assert "io-wq could not start a worker thread" in hint
    assert f"RLIMIT_NPROC 64 with 63 threads of user {UID}" in hint
    assert "ulimit -u" in hint and "TasksMax=" in hint


def test_rlimit_nproc_far_from_its_limit_names_nothing(tmp_path: pathlib.Path) -> None:
    proc = fake_proc(tmp_path, status(UID, 10), {"200": status(UID, 10)})
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert limits_reached(proc=proc, cgroup_root=cgroup, nproc_soft=64) == []
    assert iowq_hint(proc=proc, cgroup_root=cgroup, nproc_soft=64) == ""


@pytest.mark.parametrize(
    ("uid", "cap_eff"),
    [(0, "0000000000000000"), (UID, CAP_SYS_RESOURCE_MASK)],
    ids=["root", "CAP_SYS_RESOURCE"],
)
def test_rlimit_nproc_is_not_named_where_the_kernel_does_not_enforce_it(
    tmp_path: pathlib.Path, uid: int, cap_eff: str
) -> None:
    """copy_process() exempts root and CAP_SYS_ADMIN/CAP_SYS_RESOURCE: naming the limit there misleads."""
    proc = fake_proc(tmp_path, status(uid, 64, cap_eff))
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert limits_reached(proc=proc, cgroup_root=cgroup, nproc_soft=64) == []


def test_pids_max_of_a_v1_cgroup_or_an_ancestor(tmp_path: pathlib.Path) -> None:
    """cgroup v1: the pids hierarchy's line; any ancestor's pids.max refuses a fork too."""
    proc = fake_proc(tmp_path, status(0, 4), cgroup="12:pids:/a/b\n11:memory:/a/b\n0::/\n")
    root = fake_cgroup(tmp_path / "cg", {"pids/a": ("32", "32"), "pids/a/b": ("max", "5")})
    assert limits_reached(proc=proc, cgroup_root=root, nproc_soft=-1) == [ThreadLimit("pids.max", 32, 32, "cgroup /a")]
    assert "pids.max 32 of cgroup /a with 32 in use" in iowq_hint(proc=proc, cgroup_root=root, nproc_soft=-1)


@pytest.mark.parametrize("unified", ["", "unified"], ids=["v2", "hybrid"])
def test_pids_max_of_a_v2_cgroup(tmp_path: pathlib.Path, unified: str) -> None:
    """cgroup v2 (``0::path``), mounted at the root or, beside v1, at unified/."""
    proc = fake_proc(tmp_path, status(0, 4), cgroup="0::/system.slice/app.service\n")
    root = tmp_path / "cg"
    base = fake_cgroup(root / unified if unified else root, {"system.slice/app.service": ("16", "15")})
    if not unified:
        (root / "cgroup.controllers").write_text("pids memory\n")
    reached = limits_reached(proc=proc, cgroup_root=root, nproc_soft=-1)
    assert reached == [ThreadLimit("pids.max", 16, 15, "cgroup /system.slice/app.service")]
    assert base.exists()


def test_pids_max_with_room_names_nothing(tmp_path: pathlib.Path) -> None:
    proc = fake_proc(tmp_path, status(0, 4), cgroup="0::/x\n")
    root = fake_cgroup(tmp_path / "cg", {"x": ("32", "12")})
    (root / "cgroup.controllers").write_text("pids\n")
    assert limits_reached(proc=proc, cgroup_root=root, nproc_soft=-1) == []


def test_unreadable_files_name_nothing(tmp_path: pathlib.Path) -> None:
    """No /proc/self/cgroup, no status: no limit is named (and nothing raises on the error path)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    assert limits_reached(proc=proc, cgroup_root=tmp_path / "none", nproc_soft=8) == []
    assert "no RLIMIT_NPROC or pids.max" in thread_start_hint(proc=proc, cgroup_root=tmp_path, nproc_soft=8)


def test_both_limits_are_named(tmp_path: pathlib.Path) -> None:
    proc = fake_proc(tmp_path, status(UID, 31), cgroup="0::/x\n")
    root = fake_cgroup(tmp_path / "cg", {"x": ("32", "32")})
    (root / "cgroup.controllers").write_text("pids\n")
    hint = thread_start_hint(proc=proc, cgroup_root=root, nproc_soft=32)
    assert hint.startswith("this process is at its thread limit (")
    assert f"RLIMIT_NPROC 32 with 31 threads of user {UID} / pids.max 32 of cgroup /x with 32 in use" in hint


def refused(self: threading.Thread) -> None:
    raise RuntimeError("can't start new thread")


def test_start_thread_names_the_limit_and_keeps_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused start raises ThreadStartError: a RuntimeError (callers catching that still
    do), with the thread's name and the hint, chained to Python's error."""
    monkeypatch.setattr(threading.Thread, "start", refused)
    monkeypatch.setattr(threadlimits, "thread_start_hint", lambda: "this process is at its thread limit (X)")
    with pytest.raises(ThreadStartError) as info:
        start_thread(threading.Thread(target=print, name="uringstack-worker-0"))
    assert isinstance(info.value, RuntimeError)
    assert "'uringstack-worker-0'" in str(info.value) and "thread limit (X)" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "can't start new thread"


def test_start_thread_passes_other_runtime_errors_unchanged() -> None:
    """A thread started twice is the caller's bug, not a limit: its error is not reworded."""
    t = threading.Thread(target=lambda: None)
    start_thread(t)
    t.join(5)
    with pytest.raises(RuntimeError, match="threads can only be started once") as info:
        start_thread(t)
    assert type(info.value) is RuntimeError


def test_op_error_adds_the_hint_to_ecanceled_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The errno stays ECANCELED (callers match on it); other errnos never read the limits."""
    monkeypatch.setattr(threadlimits, "iowq_hint", lambda: "io_uring's io-wq could not start a worker thread: X")
    exc = op_error(errno.ECANCELED, "fdatasync", "/f", "after a write at offset 0")
    assert isinstance(exc, UringIOError) and exc.errno == errno.ECANCELED
    assert exc.detail == "after a write at offset 0; io_uring's io-wq could not start a worker thread: X"
    assert "Operation canceled (after a write at offset 0; io_uring's io-wq" in str(exc)

    def no_read() -> str:
        raise AssertionError("read the limits for an errno that is not ECANCELED")

    monkeypatch.setattr(threadlimits, "iowq_hint", no_read)
    assert op_error(errno.EIO, "write", "/f").detail == ""


def test_op_error_without_a_limit_names_the_signal_defect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below every thread limit, a kernel ECANCELED that outlived the handle's reruns comes
    from signals failing io-wq's worker creation: the error names that defect's id."""
    monkeypatch.setattr(threadlimits, "iowq_hint", lambda: "")
    exc = op_error(errno.ECANCELED, "read", "/f", "at offset 0")
    assert exc.errno == errno.ECANCELED
    assert exc.detail.startswith("at offset 0; the kernel cancelled the op without running it")
    assert "known kernel defect iowq-signal-cancel" in exc.detail
    assert IOWQ_SIGNAL_CANCEL_ID in exc.detail
