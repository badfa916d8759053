"""The fallback backend's thread pool, whose steps in the calling thread a raising signal cannot break.

``concurrent.futures.ThreadPoolExecutor`` (the pool until session 33) takes
pure-Python locks in the thread that submits and waits: ``submit`` its idle
``Semaphore`` (a ``threading.Condition``), ``Future.result`` and
``asyncio.wrap_future`` the future's ``Condition``, ``Thread.start`` the new
thread's ``Event``.  A raising signal handler (Ctrl-C's ``KeyboardInterrupt``)
runs right after a C call returns, so one landing inside ``Condition.__enter__``
after its lock's acquire leaves that lock held for good, and the pool's
threads (which take it to report) and every later op and ``close()`` wait for
ever (docs/api.md, "Ctrl-C during I/O").

Here every step the calling thread takes is one C call, or a C lock taken by
a ``with`` statement (whose ``__exit__`` a signal cannot skip):

* an op is queued with ``queue.SimpleQueue.put`` (C: never blocks, no lock a
  signal could leave held);
* an idle thread is found with ``SimpleQueue.get_nowait`` of a token a thread
  puts back after each op (a token lost to a signal only makes the pool start
  a thread it did not need, within its bound);
* a thread is started with ``_thread.start_new_thread`` (C: it does not wait
  for the thread, as ``Thread.start`` does on a ``Condition``); that new
  thread starts the named ``threading.Thread`` that serves the queue, where no
  signal handler runs;
* a wait is a :class:`Latch`: a flag set before a ``_thread`` lock is released,
  so a waiter cut short right after its acquire (the lock then stays held)
  still lets every other waiter see the flag within :data:`TICK_S`.

Threads run Python's signal handlers only in the main thread, so the pool's own
threads may use ordinary locks among themselves.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from uringstack.ring import forking

TICK_S = 0.05
"""How often a waiter looks at its latch's flag (only a waiter whose lock a signal kept
held by another waiter needs it; a set latch wakes its waiters at once)."""

_STOP = None  # what a pool thread takes to mean "exit" (it puts it back for the next thread)


class Latch:
    """A one-shot event whose ``set`` and ``wait`` take no Python-level lock.

    ``set`` (once, from a pool thread) sets :attr:`is_set`, then releases a
    ``_thread`` lock created held; ``wait`` acquires and releases it.  A signal
    between a waiter's acquire and release leaves the lock held, but the flag is
    already set, so that waiter's next wait and every other waiter (which polls the
    flag each :data:`TICK_S`) return all the same."""

    __slots__ = ("_lock", "is_set")

    def __init__(self) -> None:
        lock = _thread.allocate_lock()
        lock.acquire()
        self._lock = lock
        self.is_set = False

    def set(self) -> None:
        """Wake every waiter (call once; from a thread that runs no signal handler)."""
        self.is_set = True
        self._lock.release()

    def wait(self) -> None:
        """Return once :meth:`set` was called (a raising signal interrupts it and leaves nothing behind)."""
        lock = self._lock
        while not self.is_set:
            if lock.acquire(True, TICK_S):
                lock.release()


_pools: weakref.WeakSet[ThreadPool] = weakref.WeakSet()


def _drain_at_exit() -> None:
    """At interpreter exit, let every pool run what was queued on it (the threads are
    daemons, which the exit would stop wherever they are), as ``ThreadPoolExecutor``'s
    threads did before exit joined them."""
    for pool in list(_pools):
        pool.shutdown(wait=True)


atexit.register(_drain_at_exit)


class ThreadPool:
    """Up to *threads* threads named ``f"{name}_{i}"`` running the callables queued by :meth:`submit`.

    Threads are started on demand, as ``ThreadPoolExecutor`` does: a submit
    finding no idle thread starts one while there are fewer than *threads*."""

    def __init__(self, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError(f"a pool needs at least one thread, not {threads}")
        self.max_threads = threads
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Any] | None] = queue.SimpleQueue()
        self._idle: queue.SimpleQueue[bool] = queue.SimpleQueue()  # a token per op a thread finished
        # One latch per thread started (set when it exits); its length is the threads started.
        # Appended only after the start succeeded: a signal in between leaves a thread
        # uncounted (the pool may start one more than its bound), never one counted that
        # does not exist (its ops would wait for ever).
        self._exits: list[Latch] = []
        self._lock = threading.Lock()  # (C-level: a `with` of it is never left held) one start at a time
        self._shutdown = False
        self._stop_queued = False
        self._fork_gen = forking.generation()
        _pools.add(self)

    @property
    def threads(self) -> int:
        """How many threads were started."""
        return len(self._exits)

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> None:
        """Queue ``fn(arg)`` for a pool thread, then start a thread if none is idle.

        Raises ``RuntimeError`` if the pool was shut down (nothing queued), or
        after queueing the call when no thread could be started for it (``can't
        start new thread``: a pids cgroup, RLIMIT_NPROC), as CPython's
        ``ThreadPoolExecutor.submit`` does; the call then runs when a thread
        of the pool is free, if there is one."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new work after the pool was shut down")
        self._queue.put((fn, arg))
        try:
            self._idle.get_nowait()
            return
        except queue.Empty:
            pass
        with self._lock:
            if len(self._exits) < self.max_threads:
                self._start_thread()

    def _start_thread(self) -> None:
        """Start the pool's next thread (``RuntimeError`` if it cannot be started), and wait
        until it serves the queue, as ``Thread.start`` waits for its thread (the ops queued
        so far are then taken in order: a batch refused part-way has its first ops running)."""
        exited, serving = Latch(), Latch()
        _thread.start_new_thread(self._begin, (f"{self.name}_{len(self._exits)}", exited, serving))
        self._exits.append(exited)
        serving.wait()

    def _begin(self, name: str, exited: Latch, serving: Latch) -> None:
        """In a new thread: start the named ``threading.Thread`` that serves the queue, then end;
        or serve the queue in this thread if that start fails (the thread limit reached in
        between), so the call that started it is served all the same."""
        try:
            threading.Thread(target=self._serve, args=(exited, serving), name=name, daemon=True).start()
        except RuntimeError:
            self._serve(exited, serving)

    def _serve(self, exited: Latch, serving: Latch) -> None:
        """A pool thread: run queued calls until the pool stops."""
        get, idle = self._queue.get, self._idle
        serving.set()
        try:
            while True:
                item = get()
                if item is _STOP:
                    self._queue.put(_STOP)  # for the pool's next thread
                    return
                fn, arg = item
                del item  # (holds nothing of the call's once it returned)
                # (the callables report their own failures: a stray one must not end the thread)
                with contextlib.suppress(BaseException):
                    fn(arg)
                del fn, arg
                idle.put(True)
        finally:
            exited.set()

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new calls, let the threads run what is queued and exit; with *wait*, wait for them.

        Safe to call again (after a signal cut a call short, or at exit).  In a
        fork() child, where the pool's threads do not exist, it only refuses."""
        self._shutdown = True
        if forking.inherited(self._fork_gen):
            return
        if not self._stop_queued:
            self._queue.put(_STOP)
            self._stop_queued = True
        if wait:
            for exited in list(self._exits):
                exited.wait()
