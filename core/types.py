"""Small shared types of the plugin contract: modes, verdicts, targets, and views.

The views (:class:`WorkerView`, :class:`StackView`, :class:`HandleView`) are
what the hook specifications and the backends name of a stack's objects.
They are protocols so this layer never imports the stack, which imports it;
:class:`uringstack.stack.Worker`, :class:`uringstack.stack.Stack` and
:class:`uringstack.stack.handle.FileHandle` implement them (a plugin may
annotate its hooks with those classes).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from uringstack.errors import UringStackError

if TYPE_CHECKING:
    from uringstack.probe.model import BlockDevice
    from uringstack.ring import Ring
    from uringstack.ring.buffers import BufferRegistry
    from uringstack.ring.io_backend import FileIO

T = TypeVar("T")

DISABLE_AUTOLOAD_ENV = "URINGSTACK_DISABLE_PLUGIN_AUTOLOAD"
"""Set to ``1`` to skip loading entry-point plugins (like PYTEST_DISABLE_PLUGIN_AUTOLOAD)."""

FeatureMode = Literal["auto", "on", "off"]
"""``auto``: use where the probe says it helps; ``on``: required (a clear error if
impossible); ``off``: never."""

TargetKind = Literal["file", "block", "nvme_char"]


class FeatureConfig(BaseModel):
    """Base of a plugin's config section: a misspelled key is an error, not ignored.

    Feature plugins add ``mode: FeatureMode`` (with their own description of
    what ``auto`` decides) and read the section with
    ``config.section(NAME, TheirConfig)``.
    """

    model_config = ConfigDict(extra="forbid")


class FeatureVerdict(BaseModel):
    """One plugin's answer to "will you be used here, and why (not)?"."""

    model_config = ConfigDict(frozen=True)

    plugin: str
    mode: FeatureMode
    enabled: bool
    reason: str
    hint: str = ""
    ring_roles: tuple[str, ...] = ()
    """Extra rings per core this feature needs when enabled (e.g. ``("iopoll",)``);
    the core adds them to the plan and runs ``uringstack_ring_params`` on each."""


@dataclass
class Target:
    """What a user asked :meth:`Stack.open` for, resolved against the probe.

    ``device`` is the probed block device or namespace backing the target
    (``None`` for a file whose device the probe did not list); ``options``
    carries per-open choices such as ``passthrough="auto"``.
    """

    path: str
    kind: TargetKind
    direct: bool
    writable: bool
    device: BlockDevice | None = None
    create: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    in_use: tuple[str, ...] = ()
    """What used the device when it was opened writable anyway (``[core]
    allow_writes_in_use``): the reasons the refusal would have named."""
    descriptors: list[int] = field(default_factory=list, repr=False, compare=False)
    """The descriptors opened for this open that no backend object holds yet:
    ``open_target``'s own, stored by C as it is made, and ``Stack.open``'s
    duplicate of an adopted one.  ``close_opened`` and ``Stack.open``'s cleanup
    close what is left here, each once, wherever a raising signal (Ctrl-C)
    lands; a backend never touches the list itself."""


class PlanError(UringStackError):
    """The configuration asks for something this machine cannot do (``on`` impossible)."""


class PluginError(UringStackError):
    """A plugin could not be loaded or does not fit the hook contract."""


class PluginLoadError(PluginError):
    """Importing or registering an entry-point plugin failed.

    ``entry_point`` is ``"name = module.path"``; ``distribution`` is the
    distribution that declared it; the original exception is ``__cause__``.
    """

    def __init__(self, message: str, *, entry_point: str, distribution: str) -> None:
        super().__init__(message)
        self.entry_point = entry_point
        self.distribution = distribution


@dataclass(frozen=True)
class PluginSection:
    """One config section contributed by a plugin through ``uringstack_config_sections``."""

    name: str
    model: type[BaseModel]
    plugin: str


class CompletedBatch(Protocol):
    """What the completion hook reads of a finished batch: a ring's ``Batch``, or the
    fallback thread pool's pending batch."""

    @property
    def results(self) -> list[int]:
        """Per-op results: bytes moved, or ``-errno``."""
        ...


class CompletionHook(Protocol):
    """``worker.completion_hook``: a backend asks it for the done-callback of one batch."""

    def __call__(self, op: str, ring: Ring | None = None) -> Callable[[CompletedBatch], None]:
        """The callback to ``batch.add_done_callback`` for a batch doing *op* on *ring*."""
        ...


class WorkerView(Protocol):
    """A stack's worker (:class:`uringstack.stack.Worker`): a pinned thread and its rings."""

    @property
    def index(self) -> int:
        """Position in the stack's ``workers`` (0-based)."""
        ...

    @property
    def cpu(self) -> int | None:
        """The CPU the thread is pinned to (``None``: not pinned)."""
        ...

    @property
    def stack(self) -> StackView:
        """The stack the worker belongs to."""
        ...

    @property
    def rings(self) -> dict[str, Ring]:
        """The worker's rings by role (``storage``, ``iopoll``, ...)."""
        ...

    @property
    def buffers(self) -> BufferRegistry:
        """The registry of registered-buffer providers."""
        ...

    @property
    def resources(self) -> dict[str, object]:
        """What plugins attach to this worker, keyed by plugin name."""
        ...

    @property
    def completion_hook(self) -> CompletionHook | None:
        """The per-batch completion callback factory (``None``: no listener)."""
        ...

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` on the worker's thread; returns a future."""
        ...

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker's thread and wait for the result."""
        ...


class StackView(Protocol):
    """A built stack (:class:`uringstack.stack.Stack`) as hooks see it."""

    @property
    def workers(self) -> Sequence[WorkerView]:
        """The stack's workers, by index."""
        ...

    def plugin_state(self, plugin: str, factory: Callable[[], T]) -> T:
        """This stack's state of *plugin*, made by *factory* on first use."""
        ...

    def run_on_workers(self, fn: Callable[[WorkerView], T]) -> list[T]:
        """Run ``fn(worker)`` on every worker's thread; the results by worker."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the stack built, as JSON-ready data."""
        ...


class HandleView(Protocol):
    """An open file (:class:`uringstack.stack.handle.FileHandle`) as hooks see it."""

    @property
    def path(self) -> str:
        """The path given to ``Stack.open``."""
        ...

    @property
    def backend(self) -> str:
        """The name of the backend serving it."""
        ...

    @property
    def worker(self) -> WorkerView:
        """The worker whose rings carry its I/O."""
        ...

    @property
    def io(self) -> FileIO:
        """The backend object."""
        ...


class BackendFactory(Protocol):
    """What :func:`uringstack_select_backend` returns: a named opener of handles."""

    name: str
    reason: str

    def open(self, target: Target, worker: WorkerView) -> FileIO:
        """Open *target* for *worker*; the result implements :class:`uringstack.ring.io_backend.FileIO`.

        Called on the thread that called :meth:`Stack.open`, not on the worker's thread.
        Get the descriptor with :func:`uringstack.stack.targets.open_target`; if ``open``
        then fails, close it with :func:`~uringstack.stack.targets.close_opened`, never
        ``os.close``: an adopted descriptor (``target.options["adopt_fd"]``, the stack's
        duplicate of the one the caller handed over) is closed by :meth:`Stack.open`
        when the open fails.  Once ``open`` returned, the FileIO's ``close()`` closes
        ``self.fd`` (the adopted one too) and nothing else; it must be safe to call again.
        """
        ...
