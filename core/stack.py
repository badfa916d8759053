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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from uringstack import aio, forking
from uringstack.errors import RingClosedError
from uringstack.handle import FileHandle
from uringstack.plan import Plan, make_plan, select_backend
from uringstack.ring import Batch, Ring
from uringstack.targets import resolve_target

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import UringstackPluginManager
    from uringstack.probe.model import Capabilities

T = TypeVar("T")
_STOP = object()


class Worker:
    """A pinned thread and the rings it owns."""

    def __init__(self, index: int, cpu: int | None, stack: Stack) -> None:
        self.index = index
        self.cpu = cpu
        self.stack = stack
        self.rings: dict[str, Ring] = {}
        self.resources: dict[str, Any] = {}
        self.notes: list[tuple[str, str]] = []
        self.completion_hook: Callable[[str], Callable[[Batch], None]] | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"uringstack-worker-{index}", daemon=True)
        self._started = threading.Event()
        self.affinity: set[int] = set()

    def note(self, plugin: str, reason: str) -> None:
        """Record a decision taken while building (shown by ``Stack.describe()``)."""
        self.notes.append((plugin, reason))

    def _run(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})
        self.affinity = os.sched_getaffinity(0)
        self._started.set()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` on this worker's pinned thread; returns a future."""
        if not self._thread.is_alive():
            raise RingClosedError(f"worker {self.index} is stopped")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, args, fut))
        return fut

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this worker's pinned thread and wait for the result."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        return self.submit(fn, *args).result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def __repr__(self) -> str:
        return f"<Worker {self.index} cpu={self.cpu} rings={sorted(self.rings)}>"


class Stack:
    """The I/O stack of this process: workers, their rings, and the open handles."""

    def __init__(self, plan: Plan, caps: Capabilities, config: StackConfig, pm: UringstackPluginManager) -> None:
        self.plan = plan
        self.caps = caps
        self.config = config
        self.plugin_manager = pm
        self.workers: list[Worker] = []
        self._handles: set[FileHandle] = set()
        self._lock = threading.Lock()
        self._next_worker = itertools.count()
        self._closed = False
        self._fork_gen = forking.generation()
        try:
            for wp in plan.workers:
                worker = Worker(wp.index, wp.cpu, self)
                worker.start()
                self.workers.append(worker)
                if pm.has_completion_batch_impls:
                    worker.completion_hook = _completion_hook(pm, worker)
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
            worker.rings[params.role] = ring
            self.plugin_manager.ring_created(ring=ring, worker=worker, config=self.config)

    def _ring_by_name(self, name: str) -> Ring:
        for worker in self.workers:
            for ring in worker.rings.values():
                if f"core{ring.params.core}/{ring.params.role}" == name:
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
        choosing the backend.
        """
        forking.check(self._fork_gen, "the stack")
        if self._closed:
            raise RingClosedError("stack is closed")
        worker = self._pick_worker(core)
        target = resolve_target(
            os.fspath(path),
            direct=self.config.core.direct if direct is None else direct,
            writable=writable,
            create=create,
            caps=self.caps,
            options=options,
        )
        factory = select_backend(target, self.caps, self.config, self.plugin_manager)
        io = factory.open(target, worker)
        handle = FileHandle(io, worker, self, factory.reason)
        try:
            self.plugin_manager.file_opened(handle=handle, worker=worker)
        except BaseException:
            io.close()
            raise
        with self._lock:
            if not self._closed:
                self._handles.add(handle)
                return handle
        handle.close()  # close() ran meanwhile and did not see this handle
        raise RingClosedError("stack is closed")

    def _pick_worker(self, core: int | None) -> Worker:
        if core is None:
            return self.workers[next(self._next_worker) % len(self.workers)]
        for worker in self.workers:
            if worker.cpu == core:
                return worker
        raise ValueError(f"no worker on CPU {core}; workers run on {[w.cpu for w in self.workers]}")

    def _handle_closed(self, handle: FileHandle) -> None:
        self.plugin_manager.file_closed(handle=handle, worker=handle.worker)
        with self._lock:
            self._handles.discard(handle)

    # --- running code on workers ---------------------------------------------------------
    def run_on_workers(self, fn: Callable[[Worker], T]) -> list[T]:
        """Run ``fn(worker)`` on every worker's pinned thread at once; return the results."""
        forking.check(self._fork_gen, "the stack")
        futures = [w.submit(fn, w) for w in self.workers]
        return [f.result() for f in futures]

    def describe(self) -> dict[str, Any]:
        """What was built: per worker its CPU affinity, rings (flags as applied) and notes."""
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
                    "notes": [f"{p}: {why}" for p, why in w.notes],
                }
                for w in self.workers
            ]
        }

    # --- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close handles, let plugins release what they attached, close rings, stop workers.

        Each handle's close waits for the I/O started through it (see
        :meth:`FileHandle.close`), so queued writes complete with their real
        results before any descriptor, pool or ring goes away.  Every step
        runs even if an earlier one failed; the first error is raised at the
        end.  In a fork() child, closing an inherited stack only drops the
        child's copies of descriptors and rings: no plugin teardown, no
        cancel, no unregister, nothing the parent would notice.
        """
        if forking.inherited(self._fork_gen):
            if not self._closed:  # no lock: a parent thread may have held it at fork time
                self._closed = True
                self._abandon(list(self._handles))
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles)
        errors: list[BaseException] = []

        def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # the rest of the teardown must still run
                errors.append(exc)

        for handle in handles:
            attempt(handle.close)
        attempt(self.plugin_manager.stack_teardown, stack=self)
        for worker in self.workers:
            for ring in worker.rings.values():
                attempt(aio.detach_ring, ring)
                attempt(worker.call if worker._thread.is_alive() else _call, ring.close)
            worker.stop()
        if errors:
            raise errors[0]

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


def _call(fn: Callable[[], T]) -> T:
    return fn()


def _completion_hook(pm: UringstackPluginManager, worker: Worker) -> Callable[[str], Callable[[Batch], None]]:
    def for_op(op: str) -> Callable[[Batch], None]:
        def on_done(batch: Batch) -> None:
            pm.completion_batch(worker=worker, op=op, results=batch.results)

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
    """
    from uringstack.config import load_config
    from uringstack.probe import probe

    if config is None or isinstance(config, (str, os.PathLike)):
        loaded = load_config(config, plugin_manager=plugin_manager, overrides=overrides)
        cfg, pm = loaded.config, loaded.plugin_manager
    else:
        cfg = config
        if overrides:
            raise TypeError("overrides apply when loading a config; pass a path or None")
        if plugin_manager is None:
            raise TypeError("pass the plugin_manager the config was loaded with")
        pm = plugin_manager
    if caps is None:
        caps = probe(plugin_manager=pm)
    plan = make_plan(caps, cfg, pm)
    return Stack(plan, caps, cfg, pm)
