"""Whether this process is at a limit on its threads, and the hint that says so.

Two limits refuse a new thread (``clone`` fails with ``EAGAIN``) to a process
whose memory is fine: ``RLIMIT_NPROC`` (``ulimit -u``: the tasks, threads
included, of the process's real user; not enforced for root or with
``CAP_SYS_ADMIN``/``CAP_SYS_RESOURCE``) and a pids cgroup's ``pids.max`` (of
the process's cgroup or any ancestor; systemd's ``TasksMax=``).  What hits them
reaches the user as a bare symptom: io_uring's io-wq cannot add the worker that
an op it punts needs (``fdatasync``, a durable write on a disk without FUA),
and the op completes with ``-ECANCELED``; a Python thread's ``start()`` raises
``RuntimeError: can't start new thread``.  This module is the one place that
decides whether such a limit is the cause (:func:`limits_reached`) and words
it (:func:`iowq_hint`, :func:`op_error`, :func:`thread_start_hint`, :func:`start_thread`).

The check reads ``/proc`` and the cgroup files only when called, and is called
only on those error paths: nothing here runs while I/O succeeds.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from dataclasses import dataclass
from pathlib import Path

from uringstack.errors import ThreadStartError, UringIOError
from uringstack.probe.kernel import CAP_SYS_ADMIN, CAP_SYS_RESOURCE, ProcessStatus, read_process_status

# How close to a limit counts as "at" it.  The count is read after the failure,
# and threads may have exited in between (an idle io-wq worker exits on its own,
# the failed clone's siblings finish), so a process one or two short of its
# limit was very likely at it when the thread was refused.
NEAR = 2

# Where the cgroup hierarchies are mounted on systemd and container systems:
# cgroup v2 at /sys/fs/cgroup (or /sys/fs/cgroup/unified beside v1 in hybrid
# mode), cgroup v1's pids controller at /sys/fs/cgroup/pids.
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")

_FIX = "raise the limit (ulimit -u, systemd TasksMax=, the cgroup's pids.max) or run fewer threads"


@dataclass(frozen=True)
class ThreadLimit:
    """One limit on this process's threads: ``kind`` (``RLIMIT_NPROC`` or ``pids.max``),
    its value ``limit``, the tasks it counts now (``used``) and whose they are (``owner``:
    ``threads of user 1000`` or ``cgroup /user.slice with``)."""

    kind: str
    limit: int
    used: int
    owner: str

    @property
    def reached(self) -> bool:
        """True when no thread more fits, give or take :data:`NEAR`."""
        return self.used >= self.limit - NEAR

    def __str__(self) -> str:
        if self.kind == "RLIMIT_NPROC":
            return f"RLIMIT_NPROC {self.limit} with {self.used} {self.owner}"
        return f"pids.max {self.limit} of {self.owner} with {self.used} in use"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # absent, unreadable, or "max" (no limit)
        return None


def _user_tasks(uid: int, proc: Path) -> int:
    """The tasks (threads) of real user *uid* that this process can see: what RLIMIT_NPROC counts.

    (Processes in other PID namespaces are not seen: the count can be low, never high.)"""
    total = 0
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        status = read_process_status(proc / pid / "status")  # (all None once the process exited)
        if status.real_uid == uid and status.threads:
            total += status.threads
    return total


def nproc_limit(status: ProcessStatus, soft: int, proc: Path = PROC) -> ThreadLimit | None:
    """RLIMIT_NPROC (its soft value *soft*, the one the kernel enforces) with what it counts,
    or None where it does not apply: unlimited, or a process the kernel exempts."""
    if soft == resource.RLIM_INFINITY or soft < 0 or status.real_uid is None:
        return None
    # copy_process() skips the check for the initial user namespace's root and for
    # CAP_SYS_ADMIN / CAP_SYS_RESOURCE: naming the limit there would be a false lead.
    if status.real_uid == 0 or status.has_cap(CAP_SYS_ADMIN) or status.has_cap(CAP_SYS_RESOURCE):
        return None
    used = status.threads or 0
    if used < soft - NEAR:  # (this process alone does not fill it: count the user's other tasks too)
        used = max(used, _user_tasks(status.real_uid, proc))
    return ThreadLimit("RLIMIT_NPROC", soft, used, f"threads of user {status.real_uid}")


def _pids_cgroup(cgroup_text: str) -> tuple[str, str] | None:
    """(hierarchy, path) of the pids controller in a ``/proc/self/cgroup`` text: ``("pids", path)``
    for cgroup v1, ``("", path)`` for v2 (``0::path``), v1's preferred where both appear."""
    v2: str | None = None
    for line in cgroup_text.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "pids" in controllers.split(","):
            return ("pids", path)
        if controllers == "" and path:
            v2 = path
    return ("", v2) if v2 is not None else None


def pids_limits(cgroup_text: str, root: Path = CGROUP_ROOT) -> list[ThreadLimit]:
    """The ``pids.max`` limits over this process: its pids cgroup's and each ancestor's
    (any of them refuses the fork), innermost first; those set to ``max`` are left out."""
    found = _pids_cgroup(cgroup_text)
    if found is None:
        return []
    hierarchy, path = found
    v2_root = root if (root / "cgroup.controllers").exists() else root / "unified"
    base = root / hierarchy if hierarchy else v2_root
    out: list[ThreadLimit] = []
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), 0, -1):  # (the root cgroup has no pids.max)
        rel = "/".join(parts[:depth])
        limit = _read_int(base / rel / "pids.max")
        used = _read_int(base / rel / "pids.current")
        if limit is not None and used is not None:
            out.append(ThreadLimit("pids.max", limit, used, f"cgroup /{rel}"))
    return out


def thread_limits(
    *,
    proc: Path = PROC,
    cgroup_root: Path = CGROUP_ROOT,
    nproc_soft: int | None = None,
) -> list[ThreadLimit]:
    """Every limit on this process's threads that is set, with its count now.

    *proc*, *cgroup_root* and *nproc_soft* (RLIMIT_NPROC's soft value) are for tests."""
    status = read_process_status(proc / "self" / "status")
    soft = resource.getrlimit(resource.RLIMIT_NPROC)[0] if nproc_soft is None else nproc_soft
    out: list[ThreadLimit] = []
    nproc = nproc_limit(status, soft, proc)
    if nproc is not None:
        out.append(nproc)
    try:
        cgroup_text = (proc / "self" / "cgroup").read_text()
    except OSError:
        cgroup_text = ""
    out.extend(pids_limits(cgroup_text, cgroup_root))
    return out


def limits_reached(
    *, proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT, nproc_soft: int | None = None
) -> list[ThreadLimit]:
    """The limits of :func:`thread_limits` (same arguments) that leave no room for a thread."""
    limits = thread_limits(proc=proc, cgroup_root=cgroup_root, nproc_soft=nproc_soft)
    return [limit for limit in limits if limit.reached]


def _joined(limits: list[ThreadLimit]) -> str:
    return " / ".join(str(limit) for limit in limits)


def iowq_hint(*, proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT, nproc_soft: int | None = None) -> str:
    """What an op's ``-ECANCELED`` means when this process is at a thread limit, or "" when it
    is not (then the cancellation has another cause, and a hint would mislead)."""
    reached = limits_reached(proc=proc, cgroup_root=cgroup_root, nproc_soft=nproc_soft)
    if not reached:
        return ""
    return (
        "io_uring's io-wq could not start a worker thread: this process is at its thread limit "
        f"({_joined(reached)}); {_FIX} (io-wq needs a thread for each op it runs at once: "
        "fdatasync, durable writes on a disk without FUA; IORING_REGISTER_IOWQ_MAX_WORKERS, "
        "Linux 5.15+, caps how many it takes)"
    )


def thread_start_hint(*, proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT, nproc_soft: int | None = None) -> str:
    """Why ``can't start new thread``: the limit this process is at and the fix, or, at none,
    the causes left (memory for the thread's stack, ``kernel.threads-max``)."""
    reached = limits_reached(proc=proc, cgroup_root=cgroup_root, nproc_soft=nproc_soft)
    if reached:
        return f"this process is at its thread limit ({_joined(reached)}); {_FIX}"
    return (
        "no RLIMIT_NPROC or pids.max of this process is at its limit: memory for the thread's "
        "stack (ulimit -v) or the system's kernel.threads-max may be short"
    )


def refused_thread(exc: BaseException) -> bool:
    """Is *exc* CPython's refusal to start a thread (``RuntimeError: can't start new thread``,
    from ``Thread.start`` or ``_thread.start_new_thread``)?"""
    return isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)


def start_thread(thread: threading.Thread) -> None:
    """``thread.start()``; a refusal (``can't start new thread``) raises
    :class:`~uringstack.errors.ThreadStartError` (a ``RuntimeError``) naming the thread, the
    limit and the fix, chained to the original.  Other ``RuntimeError`` s (a thread started
    twice) are the caller's bug and pass unchanged."""
    try:
        thread.start()
    except RuntimeError as exc:
        if not refused_thread(exc):
            raise
        raise ThreadStartError(f"can't start new thread {thread.name!r}: {thread_start_hint()}") from exc


def op_error(err: int, op: str, filename: str | None = None, detail: str = "") -> UringIOError:
    """The :class:`~uringstack.errors.UringIOError` of an op whose result was ``-err``.

    For the library's own ECANCELED (a ring closed under the op, a broken link
    after a failed write, ops a failed submission left unqueued) the caller
    builds ``UringIOError`` itself; this is for the rest, where the kernel
    cancelled the op: when the process is at a thread limit, io-wq could not
    start the worker the op needed, and the message says so and how to fix it
    (:func:`iowq_hint`, read only for ECANCELED).  The errno stays ECANCELED:
    callers match on it."""
    if err == errno.ECANCELED:
        # Without a thread limit, the likely cause is signals arriving each time io-wq
        # started the op's worker (a handle has run it again by now): say which defect.
        hint = iowq_hint() or (
            "the kernel cancelled the op without running it, also when it was run again: io-wq could "
            "not start a worker for it (known kernel defect iowq-signal-cancel, shown by uringstack probe, "
            "when signals keep arriving in this thread)"
        )
        detail = f"{detail}; {hint}" if detail else hint
    return UringIOError(err, op, filename, detail)
