"""Hook specifications: the contract between uringstack and its plugins.

Every hook is prefixed ``uringstack_`` and implemented with
``uringstack.hookimpl``.  Hooks are the control plane: they run when a
configuration is loaded, when the plan is made, when rings are built and torn
down, when files are opened, and at most once per completion *batch* — never
once per I/O (a pluggy call costs about a microsecond, a 4 KiB NVMe read a few).

Built-in plugins (fallback, sqpoll, fixedbuf, iopoll, nvme_passthrough) use
exactly these hooks and are loaded from the same ``uringstack`` entry-point
group as third-party plugins.  ``docs/plugins.md`` documents each hook; a test
fails when a hook below is missing there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel

    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring import Ring
    from uringstack.ring_params import RingParams
    from uringstack.stack import Stack, Worker
    from uringstack.types import BackendFactory, FeatureVerdict, Target

PROJECT_NAME = "uringstack"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- initialisation ------------------------------------------------------------


@hookspec(historic=True)
def uringstack_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add new hook specifications for other plugins to implement.

    Called once per plugin as it is registered (historic: plugins registered
    later still see it).  Use ``pluginmanager.add_hookspecs(module)``.
    """


@hookspec
def uringstack_config_sections() -> tuple[str, type[BaseModel]] | None:
    """Return ``(section_name, model)`` for this plugin's config section.

    Called once when the configuration is loaded, before the file is read.
    The model validates ``[section_name]`` of the TOML file and the
    ``URINGSTACK_<SECTION>__<KEY>`` environment variables; it should use
    ``model_config = ConfigDict(extra="forbid")`` so misspelled keys are
    errors, and give every field a default so an empty file is valid.  By
    convention a feature plugin has a ``mode: FeatureMode`` field
    (``auto``/``on``/``off``).  Section names must be unique; ``core`` is
    reserved.  Return ``None`` when the plugin has no settings.
    """


# --- probing and planning --------------------------------------------------------


@hookspec
def uringstack_probe(report: Capabilities) -> None:
    """Add facts to the capability report after the built-in probe ran.

    May write to ``report.extras[<plugin name>]`` (JSON-serialisable values
    only, the report is cached and printed with ``--json``); must not change
    the built-in fields.  Runs once per probe, not per stack.
    """


@hookspec
def uringstack_check_support(caps: Capabilities, config: StackConfig) -> FeatureVerdict | None:
    """Say whether this plugin's feature will be used on this machine, and why.

    Called once per plan.  Return one :class:`~uringstack.types.FeatureVerdict`
    (``enabled`` plus a reason a newcomer understands, e.g. "off: 2 cores; a
    polling thread would compete with the application (measured: ...)") or
    ``None`` if the plugin is not a feature.  The plan prints every verdict.
    When the config says ``on`` and the feature is impossible, return
    ``enabled=False`` with ``mode="on"``: the core turns that into a
    :class:`~uringstack.types.PlanError` naming your reason.
    """


@hookspec
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    """Adjust the parameters of one ring the plan will build.

    Called once per ring at plan time, in plugin order, before the ring
    exists.  ``params.role`` (``storage``, ``iopoll``, ``passthrough``) and
    ``params.core`` say which ring it is.  Mutate ``params`` in place: add
    setup flags with ``params.add(flag, reason)``, set ``sq_thread_cpu``,
    ``sq_thread_idle_ms``, ``attach_to`` (share another ring's SQPOLL thread
    or io-wq), ``spin_us``, ``entries``; mark flags without which the ring is
    useless in ``params.required``.  Record a declined decision with
    ``params.reasons.append(...)`` too, so the plan says why a flag is absent.
    Must not do I/O or create rings: ``uringstack plan`` calls it as a dry run.
    """


# --- building and running ------------------------------------------------------------


@hookspec
def uringstack_ring_created(ring: Ring, worker: Worker, config: StackConfig) -> None:
    """Act once a ring exists: register buffers, files or an eventfd.

    Called once per ring after creation, in the thread that owns the worker.
    Resources a plugin attaches go into ``worker.resources[<plugin name>]``
    and must be released in :func:`uringstack_stack_teardown`.  A failure the
    stack can live with (e.g. ENOMEM from ``io_uring_register_buffers`` when
    RLIMIT_MEMLOCK is low) must be caught and recorded with
    ``worker.note(plugin, reason)``, never raised, unless the config said
    ``on``.
    """


@hookspec(firstresult=True)
def uringstack_select_backend(target: Target, caps: Capabilities, config: StackConfig) -> BackendFactory | None:
    """Who serves this target?  Return a backend factory, or ``None`` to pass.

    Called once per :meth:`Stack.open` (firstresult: the first non-None
    answer wins).  Specialised backends (NVMe passthrough for ``/dev/ngXnY``,
    IOPOLL for pollable block devices) answer first; the fallback plugin is
    ``trylast`` and answers only where io_uring is unusable or configured
    off.  When nobody answers the core's plain io_uring backend serves.
    """


@hookspec
def uringstack_file_opened(handle: object, worker: Worker) -> None:
    """A handle was opened on *worker* (e.g. register it in the fixed-file table).

    Once per open, never per I/O.  ``handle.fd`` is the descriptor; set
    ``handle.fixed_index`` to route its I/O through IOSQE_FIXED_FILE.
    """


@hookspec
def uringstack_file_closed(handle: object, worker: Worker) -> None:
    """A handle is about to close: free what :func:`uringstack_file_opened` took."""


@hookspec
def uringstack_completion_batch(worker: Worker, op: str, results: list[int]) -> None:
    """See one batch of completions (statistics, tracing).

    Called once per completed batch, and only when at least one plugin
    implements it (the core checks at build time, so an unused hook costs
    nothing).  ``results`` are the CQE results in submission order (bytes or
    ``-errno``); treat them as read-only.  Keep it cheap: it runs on the I/O
    path.
    """


@hookspec
def uringstack_stack_teardown(stack: Stack) -> None:
    """The stack is closing: release what the plugin attached.

    Called once, after in-flight I/O is drained and before rings are closed
    (so registered buffers are unregistered before their memory is unmapped).
    Plugins are called in reverse registration order.
    """


# --- calibration (uringstack tune) ------------------------------------------------------
# Self-contained: the types are imported here so this block stands on its own.

if TYPE_CHECKING:
    from uringstack.tune.model import TuneDimension, TuneTarget


@hookspec
def uringstack_tune_candidates(target: TuneTarget, caps: Capabilities, config: StackConfig) -> TuneDimension | None:
    """Offer one setting for ``uringstack tune`` to measure on *target*.

    Called once per tuned target, before anything is measured.  Return a
    :class:`~uringstack.tune.model.TuneDimension` named after your plugin
    whose ``choices`` are the values to try, each with the config
    ``overrides`` that select it (``{"myplugin.mode": "on"}``); put the
    cheapest choice (usually ``off``) first: another is adopted only when it
    beats it by ``MIN_GAIN`` of IOPS.  ``target.device`` (the probed block
    device, or ``None``) and ``target.workload`` (block size, queue depth)
    let you offer only what applies (IOPOLL only where the device polls).
    Return ``None`` to offer nothing.  Must not do I/O.

    The results reach every later plan as ``caps.tuning`` (a
    :class:`~uringstack.tune.model.TuneState`): in ``auto``, call
    ``caps.tuning.comparisons("<your dimension>")`` in
    ``uringstack_check_support``/``uringstack_ring_params`` and decide from
    the measured IOPS, or fall back to your rule and say so with
    ``caps.tuning.no_measurement()``.
    """
