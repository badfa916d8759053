"""Child processes of a benchmark (fio, strace): never left running when the bench stops.

fio runs for seconds to minutes and forks a process per job.  If the bench
is interrupted (SIGINT to its own pid, not the terminal's process group;
SIGTERM from a supervisor) those processes must not keep loading the disk as
orphans.  So each child starts in a session of its own, and any exception
while it runs (KeyboardInterrupt, the SystemExit :func:`terminate_raises`
turns SIGTERM into) terminates the child's whole process group, then kills
what is left and reaps the child before the exception goes on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from types import FrameType

# how long a child gets to exit after SIGTERM before SIGKILL (fio reports and stops its jobs)
TERM_GRACE_S = 2.0


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child leads its own session: pgid == pid


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate *proc* and its process group, kill what is left after a grace period, reap it."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(TERM_GRACE_S)
    # also after a clean exit of the leader: its forked jobs may still run
    _signal_group(proc, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def spawn(cmd: list[str], started: list[subprocess.Popen[str]]) -> None:
    """Start *cmd* in a session of its own (output captured) and append it to *started*.

    Call it inside the ``try`` whose handler stops *started*: SIGINT and SIGTERM
    are held back while the child starts and run their handlers once it is in
    *started*, so an interrupt cannot come between the child's start and its
    cleanup's knowing of it (an interrupt raised inside ``Popen``, after the
    fork, left fio and its job running)."""
    pending: list[int] = []
    restore = _defer_signals(pending)
    try:
        started.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        )
    finally:
        restore()  # from here on a signal raises in the caller's try, the child in *started*
    for signum in pending:  # one that came while the child started: its handler runs now
        signal.raise_signal(signum)


def run_child(
    cmd: list[str], poll: Callable[[], None] | None = None, poll_s: float = 0.2
) -> subprocess.CompletedProcess[str]:
    """Run *cmd* to completion, capturing its output; call *poll* every *poll_s* seconds.

    On any exception (an interrupt included, also one while the child starts:
    see :func:`spawn`) the child and its process group are stopped and reaped
    before the exception propagates.
    """
    started: list[subprocess.Popen[str]] = []
    try:
        spawn(cmd, started)
        proc = started[0]
        while True:
            try:
                out, err = proc.communicate(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                if poll is not None:
                    poll()
    except BaseException:
        for p in started:
            stop(p)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# the signals a bench turns into exceptions (KeyboardInterrupt, Terminated)
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


def _defer_signals(pending: list[int]) -> Callable[[], None]:
    """Until the returned function is called, SIGINT and SIGTERM are appended to *pending*
    instead of running their handlers; the function restores the handlers.

    A handler that raises while ``Popen`` starts the child (after its fork, before
    ``Popen`` returns) or before the child is known to :func:`run_child`'s cleanup would
    leave the child and its process group running: nothing would stop them.  A no-op off
    the main thread (only it runs Python signal handlers)."""
    if threading.current_thread() is not threading.main_thread() or any(
        signal.getsignal(sig) is None for sig in _DEFERRED
    ):  # None: a handler installed outside Python, which signal.signal could not put back
        return lambda: None

    def record(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in _DEFERRED}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


class Terminated(SystemExit):
    """SIGTERM arrived while a benchmark ran (exit status 128 + SIGTERM)."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(128 + signum)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """While active (also as a decorator), SIGTERM raises :class:`Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt, so the cleanup of running children happens.  A no-op off the main
    thread (only it can install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
