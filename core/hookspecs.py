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

    from uringstack.config.model import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring import Ring
    from uringstack.ring.params import RingParams
    from uringstack.types import BackendFactory, FeatureVerdict, HandleView, StackView, Target, WorkerView

PROJECT_NAME = "uringstack"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- initialisation ------------------------------------------------------------


@hookspec(historic=True)
def uringstack_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add new hook specifications for other plugins to implement.

    Called once per plugin as it is registered (historic: plugins registered
    later still see it).  Use ``pluginmanager.add_hookspecs(module)``.

    Thread: the one that builds the plugin manager (``make_plugin_manager``)
    or registers the plugin.
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

    Thread: the caller of ``load_config`` (``open_stack``, the CLI).
    """


# --- probing and planning --------------------------------------------------------


@hookspec
def uringstack_probe(report: Capabilities) -> None:
    """Add facts to the capability report after the built-in probe ran.

    May write to ``report.extras[<plugin name>]`` (JSON-serialisable values
    only, the report is cached and printed with ``--json``); must not change
    the built-in fields.  Runs once per probe, not per stack.

    Thread: the caller of ``probe()`` (``open_stack``, ``uringstack probe``).
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
    :class:`~uringstack.types.PlanError` naming your reason.  The verdicts
    are also what ``uringstack probe`` prints, one line per plugin.  Name
    the verdict's ``plugin`` after the plugin's registered (entry-point)
    name: the stack matches verdicts to plugins by it (``mode="off"`` skips
    the plugin's completion hook).  :class:`uringstack.feature.Feature`
    computes the decision once and hands it to the plugin's later hooks.

    A verdict with ``ring_roles`` asks for extra rings per worker.  Where the
    kernel charges ring memory to RLIMIT_MEMLOCK and they do not fit beside
    the storage rings even at 8 entries, the core names a feature in ``auto``
    in ``caps.memlock.no_room_for`` (with the reason) and asks again: its
    verdict must then be "disabled" with that reason, and its
    ``uringstack_select_backend`` must not pick a ring that was not built.
    :class:`~uringstack.feature.Feature` does both; a plugin without it reads
    ``caps.memlock.no_room_for`` itself.

    Thread: the caller of ``make_plan`` (``open_stack``, ``uringstack plan``,
    ``uringstack probe``).
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
    ``entries`` need not stay a power of two (only ``core.ring_entries`` in
    the config must be one): the kernel rounds the SQ size up to the next
    power of two, and ``ring.sq_entries`` reports what it made.
    When it returns the ring must still be one that can work: else
    (``params.plan_problems()`` lists why: a size outside the kernel's range,
    ``cq_entries`` below ``entries``, ``R_DISABLED``, IOPOLL on the
    ``storage`` ring, which carries buffered I/O and fsync) the plan fails
    with a :class:`PluginError` naming this plugin.  ``attach_to`` must name
    a ring planned before this one (the plan fails otherwise).

    Thread: the caller of ``make_plan``, before any worker exists.
    """


# --- building and running ------------------------------------------------------------


@hookspec
def uringstack_ring_created(ring: Ring, worker: WorkerView, config: StackConfig) -> None:
    """Act once a ring exists: register buffers, files or an eventfd.

    Called once per ring after creation.  Registered buffers are offered to
    handles through ``worker.buffers.register(<plugin name>, pool)``
    (:class:`~uringstack.ring.buffers.BufferRegistry`); other resources a plugin
    attaches go into ``worker.resources`` under keys named after the plugin,
    per-stack state into ``worker.stack.plugin_state(<plugin name>,
    factory)``; release them in :func:`uringstack_stack_teardown`.  A failure the
    stack can live with (e.g. ENOMEM from ``io_uring_register_buffers`` when
    RLIMIT_MEMLOCK is low) must be caught and recorded with
    ``worker.note(plugin, reason)``, never raised, unless the config said
    ``on``.

    Thread: the worker's own pinned thread (the ring's issuer, which matters
    for SINGLE_ISSUER rings), while ``open_stack`` waits for it.
    """


@hookspec(firstresult=True)
def uringstack_select_backend(target: Target, caps: Capabilities, config: StackConfig) -> BackendFactory | None:
    """Who serves this target?  Return a backend factory, or ``None`` to pass.

    Called once per :meth:`Stack.open` (firstresult: the first non-None
    answer wins).  Specialised backends (NVMe passthrough for ``/dev/ngXnY``,
    IOPOLL for pollable block devices) answer first; the fallback plugin is
    ``trylast`` and answers only where io_uring is unusable or configured
    off.  When nobody answers the core's plain io_uring backend serves.
    Also called once per probed device by ``make_plan`` (a dry run: the
    answer must not open devices for I/O).

    A writable open of a device that something uses (mounted, held, swap,
    claimed) never gets here: the core refuses it first, for every backend
    (``DeviceInUseError``, ``[core] allow_writes_in_use``); with that switch
    on, ``target.in_use`` lists what used the device, for the backend to
    keep or log.  A plugin needs no check of its own.  (Not checked: a block
    device whose descriptor ``uringstack.FileIO`` opened itself, as
    ``io.FileIO`` does, and handed over with ``adopt_fd``.)

    Thread: the caller of :meth:`Stack.open` (or of ``make_plan``); the
    factory's ``open`` runs there too, not on the worker.
    """


@hookspec
def uringstack_open_options() -> list[str] | None:
    """Names of the extra keyword options of :meth:`Stack.open` this plugin reads.

    ``Stack.open(path, passthrough="auto")`` puts ``passthrough`` in
    ``target.options`` for the backend hooks; an option no plugin declares
    here is refused with ``TypeError``, so a misspelled option is never
    silently ignored.  Called once per open.
    """


@hookspec
def uringstack_file_opened(handle: HandleView, worker: WorkerView) -> None:
    """A handle was opened on *worker* (e.g. register it in the fixed-file table).

    Once per open, never per I/O.  ``handle.fd`` is the descriptor,
    ``handle.ring`` the worker's ring its I/O goes to (``None`` for a
    backend without one), ``handle.backend`` the backend's name; set
    ``handle.fixed_index`` to route its I/O through IOSQE_FIXED_FILE.

    If it raises, :meth:`Stack.open` raises that as a ``PluginError`` naming
    the plugin (uringstack's own errors keep their type, with a note), after
    :func:`uringstack_file_closed` ran for the plugins whose ``file_opened``
    had run: free what you took there, the handle will not be used.

    Thread: the caller of :meth:`Stack.open`.
    """


@hookspec
def uringstack_file_closed(handle: HandleView, worker: WorkerView) -> None:
    """A handle is about to close: free what :func:`uringstack_file_opened` took.

    Called before the descriptor is closed; also for the handles the stack
    closes in :meth:`Stack.close`, and for a handle whose open failed in a
    later plugin's :func:`uringstack_file_opened`.  Every plugin runs even if
    one raises (another's fixed-file slot must not keep the closed file open
    in the kernel); the failures are raised by the close afterwards, each
    naming its plugin.

    Thread: the caller of ``FileHandle.close`` (or of ``Stack.close``).
    """


@hookspec
def uringstack_completion_batch(worker: WorkerView, op: str, results: list[int], ring: Ring | None) -> None:
    """See one batch of completions (statistics, tracing).

    One call is one batch the backend submitted, called when its last
    completion is reaped (a batch whose await was cancelled included: an
    op that never ran reports ``-ECANCELED``).  ``results`` are the CQE results in submission
    order (bytes or ``-errno``); treat them as read-only.  ``op`` is what
    the batch did: ``"read"`` or ``"write"`` (plain, fixed-buffer and
    passthrough alike), ``"fsync"``, ``"fdatasync"``, or ``"write_durable"``
    (a write linked to its flush: ``results`` ends with the flush's).  A
    handle's retry of a short transfer (the rest of a read cut short at end
    of file, of a short write) is a batch of its own, so it is a call of its
    own.  ``ring`` is the ring that ran the batch (a worker may own a
    storage, an iopoll and a passthrough ring); ``None`` for the fallback
    backend (its thread pool or, for a waited write, the caller's thread),
    and for a waited buffered write the io_uring backend did in the
    caller's thread (``io_backend.write_inline``: no ring ran it).
    Called by every handle backend (io_uring, fallback, iopoll, NVMe
    passthrough) for the batches its handles submit.

    Thread: whichever thread reaps the batch's last completion: the thread
    that waits for it (the caller of a synchronous ``FileHandle`` method),
    the event loop's thread for ``await``, or another thread waiting on the
    same ring.  Keep it cheap and thread-safe: it runs on the I/O path.
    The core checks at build time whether any plugin implements it, and
    leaves out plugins whose verdict says ``mode="off"``: with no listener
    left, batches carry no callback at all.

    What it raises is logged (logger ``uringstack.pluginmanager``, naming
    the plugin), never raised to an I/O caller: the batch's I/O is done and
    its results stand (raised, a write that had landed failed in whichever
    caller reaped it, inviting a retry that wrote it twice).  The other
    plugins' implementations still run.
    """


@hookspec
def uringstack_stack_teardown(stack: StackView) -> None:
    """The stack is closing: release what the plugin attached.

    Called once, after every handle was closed (and its in-flight I/O
    drained; a close or an open another thread had under way ended too, and
    the reaper's close of a handle dropped unclosed, unless it outlasted
    ``core.close_timeout_s``) and before rings are closed, so registered
    buffers are unregistered before their memory is unmapped.  Plugins are called
    first-registered first: the reverse of the order
    :func:`uringstack_ring_created` ran in (pluggy calls the last registered
    plugin first), so a plugin built on another's resources releases them
    first.  Every plugin runs even if one raises.

    Thread: the caller of :meth:`Stack.close`; use ``worker.call(fn)`` for
    what must run on a worker's thread (e.g. unregistering buffers).
    """


# --- calibration (uringstack tune) ------------------------------------------------------
# Self-contained: the types are imported here so this block stands on its own.

if TYPE_CHECKING:
    from uringstack.probe.tuning import TuneDimension, TuneTarget


@hookspec
def uringstack_tune_candidates(target: TuneTarget, caps: Capabilities, config: StackConfig) -> TuneDimension | None:
    """Offer one setting for ``uringstack tune`` to measure on *target*.

    Called once per tuned target, before anything is measured.  Return a
    :class:`~uringstack.probe.tuning.TuneDimension` named after your plugin
    whose ``choices`` are the values to try, each with the config
    ``overrides`` that select it (``{"myplugin.mode": "on"}``); put the
    cheapest choice (usually ``off``) first: another is adopted only when it
    beats it by ``MIN_GAIN`` of IOPS.  ``target.device`` (the probed block
    device, or ``None``) and ``target.workload`` (block size, queue depth)
    let you offer only what applies (IOPOLL only where the device polls).
    Return ``None`` to offer nothing.  Must not do I/O.

    The results reach every later plan as ``caps.tuning`` (a
    :class:`~uringstack.probe.tuning.TuneState`): in ``auto``, call
    ``caps.tuning.comparisons("<your dimension>")`` in
    ``uringstack_check_support``/``uringstack_ring_params`` and decide from
    the measured IOPS, or fall back to your rule and say so with
    ``caps.tuning.no_measurement("<your dimension>")`` (which says whether a record
    holds that compared nothing of it, or none holds).
    """
