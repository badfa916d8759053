"""``Stack``: the per-core I/O stack built from a :class:`~uringstack.plan.Plan`.

One :class:`Worker` per planned CPU: a thread pinned to that CPU with
``os.sched_setaffinity`` that creates and owns the worker's rings (so a
SINGLE_ISSUER ring's issuer is the worker) and runs code handed to it with
:meth:`Worker.call`.  Handles opened on a worker submit to its rings from the
calling thread under the ring's lock, so simple programs need no threads of
their own; per-core programs (benchmarks, sharded stores) run their loops on
the workers with :meth:`Stack.run_on_workers`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from uringstack import reaper
from uringstack.errors import RingClosedError
from uringstack.in_progress import InProgress, wait_for_others
from uringstack.plan import Plan, make_plan, plan_caps, select_backend
from uringstack.plan.tuning import attach_tuning
from uringstack.probe.threadlimits import start_thread
from uringstack.ring import Ring, aio, forking
from uringstack.ring.buffers import BufferRegistry
from uringstack.ring.interrupts import FAILURES, close_popped, despite_signals, run_to_end
from uringstack.stack.handle import FileHandle
from uringstack.stack.targets import ADOPT_FD, check_writes_allowed, resolve_target
from uringstack.stack.uring_backend import UringBackend
from uringstack.types import CompletedBatch as CompletedBatch
from uringstack.types import CompletionHook as CompletionHook

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import CompletionListeners, UringstackPluginManager
    from uringstack.probe.model import Capabilities
    from uringstack.ring.io_backend import FileIO
    from uringstack.types import BackendFactory, Target

T = TypeVar("T")
_STOP = object()


def _serve(q: queue.SimpleQueue[Any], cpu: int | None, affinity: set[int], started: threading.Event) -> None:
    """A worker's thread: pin, then run what :meth:`Worker.submit` queues until ``_STOP``."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    affinity.update(os.sched_getaffinity(0))
    started.set()
    while True:
        item = q.get()
        if item is _STOP:
            return
        fn, args, fut = item
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)
        # What ran is not kept alive by this frame until the next call arrives: a stack's
        # bound method (its ring building) would keep the stack.
        item = fn = args = fut = None


class Worker:
    """A pinned thread and the rings it owns.

    ``index`` is the worker's position in :attr:`Stack.workers` (0-based);
    ``cpu`` the CPU its thread is pinned to (``None``: not pinned); ``stack``
    the :class:`Stack` it belongs to; ``rings`` its rings by role
    (``storage``, ``iopoll``, ``passthrough``, or a role a plugin asked for
    with ``FeatureVerdict.ring_roles``).  ``buffers`` is the registry of
    registered-buffer providers (:class:`~uringstack.ring.buffers.BufferRegistry`);
    ``resources`` holds what plugins attach to this worker, keyed by plugin
    name (each plugin reads only its own keys); ``notes`` the decisions taken
    while building, as ``(plugin, reason)``.
    """

    def __init__(self, index: int, cpu: int | None, stack: Stack) -> None:
        self.index = index
        self.cpu = cpu
        self.stack = stack
        self.rings: dict[str, Ring] = {}
        self.buffers = BufferRegistry()
        self.resources: dict[str, object] = {}
        self.notes: list[tuple[str, str]] = []
        self.completion_hook: CompletionHook | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.affinity: set[int] = set()
        self._started = threading.Event()
        # The thread holds its queue, not the worker (a bound method would): a running
        # thread is reachable from threading's registry, and through the worker it would
        # keep the whole stack (rings, buffers, descriptors) alive after its user dropped it.
        self._thread = threading.Thread(
            target=_serve, args=(self._queue, cpu, self.affinity, self._started),
            name=f"uringstack-worker-{index}", daemon=True,
        )  # fmt: skip
        self._stopping = False

    def note(self, plugin: str, reason: str) -> None:
        """Record a decision taken while building (shown by ``Stack.describe()``)."""
        self.notes.append((plugin, reason))

    def start(self) -> None:
        start_thread(self._thread)  # (a refusal names the thread limit: ThreadStartError)
        self._started.wait()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` on this worker's pinned thread; returns a future."""
        if not self.alive:
            raise RingClosedError(f"worker {self.index} is stopped")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, args, fut))
        return fut

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this worker's pinned thread and wait for the result."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        return self.submit(fn, *args).result()

    @property
    def alive(self) -> bool:
        """True while the worker's thread runs and takes :meth:`call` (not once it was told to stop)."""
        return not self._stopping and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the thread after what it was given; safe to run again (a stop cut short by Ctrl-C)."""
        self._stopping = True  # (first: a call queued after the stop would wait forever)
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def __repr__(self) -> str:
        return f"<Worker {self.index} cpu={self.cpu} rings={sorted(self.rings)}>"


def _attempt(errors: list[BaseException], fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)``, a teardown step safe to run again; what it raises goes to *errors*
    and the rest of the teardown still runs.  Cut short by a raising signal (Ctrl-C), it
    runs again to its end (``run_to_end``).  The first run is in this frame's ``try``, so
    a signal right after the step returned is caught here too."""
    try:
        fn(*args)
    except BaseException as exc:
        errors.append(exc)
        if not isinstance(exc, FAILURES):
            run_to_end(lambda: fn(*args))


def _served_duplicate(target: Target) -> Target:
    """*target* served through a duplicate of its adopted descriptor (``adopt_fd``): the
    handle owns the duplicate, the caller keeps theirs (as ``socket.fromfd`` duplicates).

    The duplicate is stored in ``target.descriptors`` by C as ``dup(2)`` returns it (``list.extend``
    over a ``map``: no point between the two where a raising signal handler could run),
    so the caller's cleanup always finds it.  Until session 41 the handle took the
    caller's descriptor itself, and nothing could tell the caller, after a raising
    signal at the return from ``Stack.open``, whether it still owned it: ``FileIO``
    closed it, and the reaper closed the same number again for the dropped handle, by
    then another thread's file (session 40's and 41's stress runs)."""
    adopted = target.options.get(ADOPT_FD)
    if adopted is None:
        return target
    target.descriptors.extend(map(os.dup, (adopted,)))
    # (replace keeps the same list: the returned target's descriptors are these)
    return replace(target, options={**target.options, ADOPT_FD: target.descriptors[-1]})


def _hand_over(io: FileIO, served: list[int]) -> None:
    """The backend object was made: the descriptor it holds (``open_target``'s, the adopted
    one's duplicate, the passthrough backend's char device) is now its own (its ``close()``
    closes it) and is taken out of *served*; any other left there (a duplicate the backend
    did not take) is closed here.  Each is taken out in one C call, so a run again after a
    raising signal finds only what is still to do."""
    if io.fd in served:
        served.remove(io.fd)
    close_popped(served)


def _close_unopened(io: FileIO | None, served: list[int]) -> None:
    """An open failed before its handle existed: close the backend object, if made, and the
    duplicate unless that object has it (safe to run again: each close is taken out of
    *served*, or marked in the object, before it runs)."""
    if io is not None:
        _hand_over(io, served)
        io.close()
    close_popped(served)


def _close_never_opened(handle: FileHandle) -> None:
    """Close the backend object of a handle whose plugins refused it (safe to run again)."""
    handle._never_opened()
    handle.io.close()


class Stack:
    """The I/O stack of this process: workers, their rings, and the open handles.

    ``plan`` is the :class:`~uringstack.plan.Plan` it was built from, ``caps``
    the probe's report, ``config`` the loaded config, ``plugin_manager`` the
    plugins; ``workers`` one :class:`Worker` per planned CPU, in plan order.

    Close it (:meth:`close`, or ``with``).  One dropped unclosed (no handle left on
    it) is closed when collected, with a ``ResourceWarning``, by the reaper thread
    (:mod:`uringstack.reaper`): its workers stop and its rings are freed.
    """

    def __init__(self, plan: Plan, caps: Capabilities, config: StackConfig, pm: UringstackPluginManager) -> None:
        self.plan = plan
        self.caps = caps
        self.config = config
        self.plugin_manager = pm
        self.workers: list[Worker] = []
        # Held weakly: a handle its user dropped unclosed is collected, and its finalizer
        # closes it (FileHandle.__del__), instead of this set keeping its descriptor (and a
        # registered-file slot) open until the stack closes.  An open handle holds the stack.
        self._handles: weakref.WeakSet[FileHandle] = weakref.WeakSet()
        self._opening: set[InProgress] = set()  # opens under way, which close() waits for
        self._lock = threading.Lock()
        self._next_worker = itertools.count()
        self._closed = False
        self._plugins_torn_down = False  # the stack_teardown hook ran (at most once)
        self._plugin_state: dict[str, object] = {}
        # Objects layered over this stack's handles (file objects), outermost first:
        # closed before the handles, so a buffered writer's data reaches its file.
        self._layered: tuple[weakref.WeakSet[Any], weakref.WeakSet[Any]] = (weakref.WeakSet(), weakref.WeakSet())
        # A plugin switched off in the config does not pay for its completion hook.
        listeners = pm.completion_listeners(skip=[v.plugin for v in plan.verdicts if v.mode == "off"])
        self._fork_gen = forking.generation()
        reaper.start()  # (here, not in a finalizer: see __del__)
        try:
            for wp in plan.workers:
                worker = Worker(wp.index, wp.cpu, self)
                worker.start()
                self.workers.append(worker)
                if listeners is not None:
                    worker.completion_hook = _completion_hook(listeners, worker)
                worker.call(self._build_rings, worker, [r.name for r in wp.rings])
            if not self.workers:
                raise ValueError("the plan has no workers (core.cores is empty)")
        except BaseException:
            self.close()
            raise

    def _build_rings(self, worker: Worker, names: list[str]) -> None:
        for name in names:
            params = self.plan.ring_params(name)
            if params.attach_to is not None:
                params.wq_fd = self._ring_by_name(params.attach_to).fd
            ring = Ring(params)
            # The one place the stack's rings get their wait bounds (core.*_timeout_s, core.wait_tick_s).
            ring.wait_timeout = self.config.core.wait_timeout_s
            ring.wait_tick = self.config.core.wait_tick_s
            ring.close_timeout = self.config.core.close_timeout_s
            ring.owner_closes = True  # (in close(), after the plugins' teardown: see __del__)
            worker.rings[params.role] = ring
            self.plugin_manager.ring_created(ring=ring, worker=worker, config=self.config)

    def _ring_by_name(self, name: str) -> Ring:
        for worker in self.workers:
            for ring in worker.rings.values():
                if ring.params.name == name:
                    return ring
        raise ValueError(f"attach_to={name!r}: no such ring was built before this one")

    # --- opening -----------------------------------------------------------------------
    def open(
        self,
        path: str | os.PathLike[str],
        *,
        direct: bool | None = None,
        writable: bool = True,
        create: bool = False,
        core: int | None = None,
        **options: Any,
    ) -> FileHandle:
        """Open a file, block device or NVMe generic char device on one worker.

        *direct* defaults to ``core.direct`` from the config (O_DIRECT: buffers,
        offsets and lengths must be aligned to ``handle.block_size``).  *core*
        picks the worker by CPU; by default workers are used round robin.
        Extra keyword options (e.g. ``passthrough="auto"``) go to the plugins
        choosing the backend; ``adopt_fd=fd`` (the core's own option) serves a
        descriptor the caller already opened instead of opening *path*: its own
        ``O_DIRECT`` flag is the default for *direct* there (not ``core.direct``),
        and a *direct* given that contradicts it raises ``ValueError``.  The
        handle serves a duplicate of *fd* (the same open file description:
        offset, flags) and closes only that; *fd* stays the caller's, to close
        when they like, whether the open returned or raised (as
        ``socket.fromfd`` duplicates).
        """
        forking.check(self._fork_gen, "the stack")
        if self._closed:
            raise RingClosedError("stack is closed")
        # A flag given as "no" or 0 must not open for writing: only True and False are flags
        if direct is not None and type(direct) is not bool:
            raise TypeError(f"Stack.open() argument 'direct' must be True, False or None, not {direct!r}")
        for name, flag in (("writable", writable), ("create", create)):
            if type(flag) is not bool:
                raise TypeError(f"Stack.open() argument {name!r} must be True or False, not {flag!r}")
        if core is not None and type(core) is not int:
            raise TypeError(f"Stack.open() argument 'core' must be a CPU number (int) or None, not {core!r}")
        accepted = self.plugin_manager.open_options() | {ADOPT_FD}
        unknown = sorted(set(options) - accepted)
        if unknown:
            known = ", ".join(sorted(accepted))
            raise TypeError(
                f"Stack.open() got unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
                f"(options declared by the loaded plugins: {known})"
            )
        worker = self._pick_worker(core)
        target = resolve_target(
            os.fspath(path),
            direct=direct,
            writable=writable,
            create=create,
            caps=self.caps,
            options=options,
            default_direct=self.config.core.direct,
        )
        # adopt_fd: uringstack.FileIO opened a block device itself, as io.FileIO would (which
        # writes it with write(2)); a namespace's char device (adopt_fd passed to Stack.open
        # directly: FileIO serves char devices with os.read/os.write) is written only by
        # passthrough, which io.FileIO cannot do: no built-in to keep in step with, so checked.
        if ADOPT_FD not in target.options or target.kind == "nvme_char":
            target = check_writes_allowed(target, allowed=self.config.core.allow_writes_in_use)
        factory = select_backend(target, self.caps, self.config, self.plugin_manager) or UringBackend()
        opening = InProgress()
        try:
            with self._lock:  # (with close()'s claim of the stack: one of them goes first)
                if self._closed:
                    raise RingClosedError("stack is closed")
                self._opening.add(opening)
            return self._open_target(target, factory, worker)
        finally:
            opening.end()  # (before leaving the set: close() may hold it in its list)
            despite_signals(self._opening.discard, opening)  # (one C call: no lock needed)

    def _open_target(self, target: Target, factory: BackendFactory, worker: Worker) -> FileHandle:
        """Open *target* with *factory*'s backend, tell the plugins, and keep the handle."""
        # What no backend object holds yet: the duplicate of an adopted descriptor, once made,
        # or open_target's own descriptor, each stored as it is made (see Target.descriptors).
        served = target.descriptors
        io: FileIO | None = None
        try:
            target = _served_duplicate(target)
            io = factory.open(target, worker)
            _hand_over(io, served)
            handle = FileHandle(io, worker, self, factory.reason)
        except BaseException:
            despite_signals(_close_unopened, io, served)
            raise
        try:
            self.plugin_manager.file_opened(handle=handle, worker=worker)
        except BaseException as exc:
            despite_signals(_close_never_opened, handle)
            if self._closed and isinstance(exc, Exception):
                # A close() of the stack ran meanwhile and tore down what the plugin was
                # registering with (fixedbuf's file table: ENXIO from the kernel): the open
                # failed because the stack closed, as below, not because of the plugin.
                raise RingClosedError("stack is closed") from exc
            raise
        try:
            with self._lock:
                if not self._closed:
                    self._handles.add(handle)
                    handle._close_when_dropped()
                    return handle
        except BaseException:
            # A raising signal (Ctrl-C) from the handle's taking in to the return: the caller
            # gets the exception and takes the open for failed, so the handle must not stay
            # open behind it (session 40).  (After the return a signal in the caller leaves
            # the handle to the reaper: it closes only its own duplicate.)
            despite_signals(handle.close)
            raise
        handle.close()  # close() ran meanwhile and did not see this handle
        raise RingClosedError("stack is closed")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began (:meth:`open` refuses from then on)."""
        return self._closed

    @property
    def inherited(self) -> bool:
        """True in a ``fork()`` child for a stack its parent opened: unusable here
        (:class:`~uringstack.errors.ForkedChildError`); open a new stack instead."""
        return forking.inherited(self._fork_gen)

    def close_with_stack(self, obj: Any, *, outer: bool) -> None:
        """Have :meth:`close` call ``obj.close()`` first, before it closes any handle.

        For objects built over this stack's handles that hold data of their own,
        such as a file object's write buffer: closed with the handles still open,
        that data is written; closed after, it would be lost without a word.
        *outer* objects (a buffered or text layer) close before inner ones (the raw
        file under them).  Held weakly: an object collected earlier is skipped."""
        self._layered[0 if outer else 1].add(obj)

    def _pick_worker(self, core: int | None) -> Worker:
        if core is None:
            return self.workers[next(self._next_worker) % len(self.workers)]
        for worker in self.workers:
            if worker.cpu == core:
                return worker
        raise ValueError(f"no worker on CPU {core}; workers run on {[w.cpu for w in self.workers]}")

    @property
    def close_timeout_s(self) -> float:
        """Seconds closing a handle or a ring of this stack waits for its I/O (``core.close_timeout_s``)."""
        return self.config.core.close_timeout_s

    @property
    def aio_inline_read_budget(self) -> int:
        """Bytes of page-cache hits a handle's asyncio ``await read`` copies on the loop's thread
        before one read goes through the ring and yields (``core.aio_inline_read_budget``)."""
        return self.config.core.aio_inline_read_budget

    def _handle_closed(self, handle: FileHandle) -> None:
        try:
            self.plugin_manager.file_closed(handle=handle, worker=handle.worker)
        finally:  # (a plugin's failure is raised by the handle's close; the stack forgets it all the same)
            with self._lock:
                self._handles.discard(handle)

    # --- per-stack plugin state -------------------------------------------------------------
    def plugin_state(self, plugin: str, factory: Callable[[], T]) -> T:
        """*plugin*'s state object for this stack, made by ``factory()`` on first use.

        Lets hooks keep per-stack state (counters, tables) without a
        process-wide registry that would mix two stacks: every hook can
        reach the stack (``worker.stack``, ``handle.worker.stack``, the
        ``stack`` argument of ``uringstack_stack_teardown``).  Thread-safe;
        the object lives as long as the stack.
        """
        with self._lock:
            state = self._plugin_state.get(plugin)
            if state is None:
                state = self._plugin_state[plugin] = factory()
        # Only this method stores here, always factory()'s result for this plugin.
        return cast(T, state)

    # --- running code on workers ---------------------------------------------------------
    def run_on_workers(self, fn: Callable[[Worker], T]) -> list[T]:
        """Run ``fn(worker)`` on every worker's pinned thread at once; return the results.

        All workers start at once (each on its own pinned thread); the call
        returns when all finished, re-raising the first failure in worker
        order.  The per-core way to drive I/O: *fn* submits to
        ``worker.rings`` or to handles opened on that worker."""
        forking.check(self._fork_gen, "the stack")
        futures = [w.submit(fn, w) for w in self.workers]
        return [f.result() for f in futures]

    def describe(self) -> dict[str, Any]:
        """What was built: per worker its CPU affinity, rings (flags as applied), the
        plugins providing registered buffers, the keys of ``resources`` and the notes."""
        return {
            "workers": [
                {
                    "index": w.index,
                    "cpu": w.cpu,
                    "affinity": sorted(w.affinity),
                    "rings": {
                        role: {
                            "flags": [f.name for f in type(r.flags) if f in r.flags],
                            "dropped": [f"{f.name}: {why}" for f, why in r.dropped],
                            "setup_notes": list(r.setup_notes),
                            "entries": r.sq_entries,
                            "registered_buffers": r.registered_buffers,
                            "registered_files": r.registered_files,
                        }
                        for role, r in w.rings.items()
                    },
                    "buffer_providers": w.buffers.names(),
                    "resources": sorted(w.resources),
                    "notes": [f"{p}: {why}" for p, why in w.notes],
                }
                for w in self.workers
            ]
        }

    # --- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close what :meth:`close_with_stack` registered (file objects, flushing their
        buffers), then the handles; let plugins release what they attached, close rings,
        stop workers.

        Each handle's close waits for the I/O started through it (see
        :meth:`FileHandle.close`), so queued writes complete with their real
        results before any descriptor, pool or ring goes away.  Every step
        runs even if an earlier one failed or was cut short by a raising
        signal (Ctrl-C); the first error (or the signal's exception) is raised
        at the end.  A handle that another thread is opening or closing meanwhile
        (the reaper thread's close of one dropped unclosed included) is waited
        for, so no plugin's file hook runs after its teardown: up to
        ``core.close_timeout_s``, after which the teardown goes on and a
        :class:`TimeoutError` is raised at the end.  In a fork() child, closing
        an inherited stack only drops the child's copies of descriptors and
        rings: no plugin teardown, no cancel, no unregister, nothing the parent
        would notice.
        """
        if forking.inherited(self._fork_gen):
            if not self._closed:  # no lock: a parent thread may have held it at fork time
                self._closed = True
                self._abandon(list(self._handles))
            return
        errors: list[BaseException] = []
        with self._lock:
            if self._closed:
                return
            layered = [list(group) for group in self._layered]
        # While the stack is still open: flushing an unaligned O_DIRECT write opens a handle.
        for objs in layered:
            for obj in objs:
                # closed again if a signal cut it short: a buffer closed at its entry
                # would lose its bytes when the raw file under it closes
                _attempt(errors, obj.close)
        closed_meanwhile = None
        try:
            with self._lock:
                closed_meanwhile = self._closed
                self._closed = True
            if closed_meanwhile:  # by another thread's close(), which closes the rest
                if errors:
                    raise errors[0]
                return
            self._tear_down(errors)
        except BaseException as exc:
            if closed_meanwhile is False and not isinstance(exc, FAILURES):
                # a raising signal cut the teardown short: a second close() would return
                # at once, so the steps left run now (each is safe to run again)
                despite_signals(self._tear_down, errors)
            raise
        if errors:
            raise errors[0]

    def _tear_down(self, errors: list[BaseException]) -> None:
        """Close the handles, let plugins release, close rings, stop workers; failures go
        to *errors* and the rest still runs.  Safe to run again: a handle leaves the set
        once closed, the plugins' hook runs at most once, rings and workers close once."""
        # Another thread's open under way ends first: it keeps its handle, which is closed
        # below, or, seeing the stack closed, closes it itself (its file hooks included).
        with self._lock:
            opening = list(self._opening)
        self._report_late(wait_for_others(opening, self.close_timeout_s), "open", errors)
        with self._lock:
            handles = list(self._handles)  # (closed ones left the set)
        for handle in handles:
            _attempt(errors, handle.close)  # (a second close finishes one a signal cut short)
        # A handle whose close another thread runs returned at once above: that close (its
        # plugins' file_closed) must end before their teardown below.
        claims = [h.__dict__.get("_close_claim") for h in handles]
        self._report_late(wait_for_others(claims, self.close_timeout_s), "close", errors)
        # And a handle dropped unclosed, whose close the reaper has queued or runs: its
        # file_closed, too, must come before the plugins' teardown.
        self._report_late(reaper.wait_dropped(self, self.close_timeout_s), "close", errors)
        if not self._plugins_torn_down:
            self._plugins_torn_down = True  # at most once: a hook is not run again after a signal
            try:
                self.plugin_manager.stack_teardown(stack=self)
            except BaseException as exc:
                errors.append(exc)
        for worker in self.workers:
            for ring in worker.rings.values():
                _attempt(errors, aio.detach_ring, ring)
                if worker.alive:
                    _attempt(errors, worker.call, ring.close)
                else:
                    _attempt(errors, ring.close)
            worker.stop()

    def _report_late(self, late: int, what: str, errors: list[BaseException]) -> None:
        """*late* handle opens or closes other threads ran outlasted ``core.close_timeout_s``:
        an error, and the teardown goes on without them."""
        if late:
            errors.append(
                TimeoutError(
                    f"stack close: {late} handle {what}(s) in other threads still running after "
                    f"{self.close_timeout_s} s (core.close_timeout_s); the plugins' teardown and the "
                    "rings' close ran without waiting for them"
                )
            )

    def _abandon(self, handles: list[FileHandle]) -> None:
        # No locks taken and no worker used: in the child, parent threads are gone.
        for handle in handles:
            handle.close()
        for worker in self.workers:
            for ring in worker.rings.values():
                aio.detach_ring(ring)
                ring.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # (the module's names bound at definition: a stack collected while the interpreter
    # tears its modules down must not fail on a global already cleared)
    def __del__(
        self, _dispose: Callable[..., bool] = reaper.dispose, _inherited: Callable[[int], bool] = forking.inherited
    ) -> None:
        # Dropped without close() (no handle left: each holds its stack): closed as an
        # unclosed file is, with a ResourceWarning.  Not here: this may be the stack's own
        # worker thread (stopping the worker would join itself), a frame holding the
        # stack's lock, or a signal handler's; the reaper thread closes it the normal way
        # (file objects, handles, plugins' teardown, rings, workers).  Its rings are
        # collected with it, and leave their close to it (Ring.owner_closes): closed by
        # their own finalizers, they would go before the plugins unregistered from them.
        gen = self.__dict__.get("_fork_gen")
        if gen is None or self._closed:
            return
        if _inherited(gen):
            return  # the parent's: the child's copies of the rings drop themselves when collected
        if _dispose(self.close, repr(self)):
            warnings.warn(
                f"unclosed {self!r}: closed when collected; call close() (or use `with open_stack()`)",
                ResourceWarning,
                1,
                source=self,
            )

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<uringstack.Stack{state} workers on CPUs {[w.cpu for w in self.workers]}>"


def _completion_hook(listeners: CompletionListeners, worker: Worker) -> CompletionHook:
    def for_op(op: str, ring: Ring | None = None) -> Callable[[CompletedBatch], None]:
        def on_done(batch: CompletedBatch) -> None:
            listeners(worker, op, batch.results, ring)

        return on_done

    return for_op


def open_stack(
    config: StackConfig | str | os.PathLike[str] | None = None,
    *,
    caps: Capabilities | None = None,
    plugin_manager: UringstackPluginManager | None = None,
    overrides: dict[str, Any] | None = None,
) -> Stack:
    """Probe the machine, load the config, plan, and build the stack.

    *config* is a loaded :class:`~uringstack.config.StackConfig`, a path to a
    TOML file, or ``None`` (``URINGSTACK_CONFIG`` and ``URINGSTACK_*``
    environment variables, else defaults).  *overrides* are explicit settings
    with the highest priority (``{"sqpoll.mode": "on", "core.cores": [0]}``).
    Measurements of ``uringstack tune`` that hold here are looked up from the
    cache (or ``core.tune_results``) and reach the plugins as ``caps.tuning``;
    nothing is measured unless ``core.tune = "on-start"`` and no valid
    measurement exists (docs/tune.md).
    """
    from uringstack.config import load_config
    from uringstack.probe import probe

    if config is None or isinstance(config, (str, os.PathLike)):
        loaded = load_config(config, plugin_manager=plugin_manager, overrides=overrides)
        cfg, pm = loaded.config, loaded.plugin_manager
    else:
        from uringstack.config import StackConfig

        if not isinstance(config, StackConfig):
            # (a dict used to be told to pass a plugin manager, as if it were a loaded config)
            raise TypeError(
                "open_stack() argument 'config' must be a StackConfig (from load_config), a path to "
                f"a TOML file or None, not {type(config).__name__}; settings given as a dict go in "
                "overrides= (nested or dotted: {'core.backend': 'fallback'})"
            )
        cfg = config
        if overrides:
            raise TypeError("overrides apply when loading a config; pass a path or None")
        if plugin_manager is None:
            raise TypeError("pass the plugin_manager the config was loaded with")
        pm = plugin_manager
    if caps is None:
        caps = probe(plugin_manager=pm)
    # The one import up the layers (tests/test_layers.py allows it): the tuner builds
    # stacks itself, and only a "tune = on-start" config makes open_stack run it.
    from uringstack.tune.start import calibrate_on_start

    # looked up here (not only in make_plan) so the stack's caps carry the same measurements
    caps = attach_tuning(caps, cfg, calibrate_on_start)
    # the report the plan is made from (rings fitted to RLIMIT_MEMLOCK): the stack's opens
    # must act on the verdicts its plan printed
    caps = plan_caps(caps, cfg, pm)
    plan = make_plan(caps, cfg, pm)
    return Stack(plan, caps, cfg, pm)
