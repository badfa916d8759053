"""The plugin manager: a typed facade over pluggy, built by a factory.

There is no module-global manager.  Every caller (the CLI, ``load_config``,
``open_stack``, a test) builds its own with :func:`make_plugin_manager`, so a
test that registers a plugin cannot leak it into the next test, and two stacks
with different disabled plugins can live in one process.

The facade follows tox 4's ``tox.plugin.manager``: one typed method per hook,
so every hook call in the core is checked by mypy, while ``.pm`` gives
plugin authors and tests the raw :class:`pluggy.PluginManager`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from uringstack import hookspecs
from uringstack.errors import UringStackError
from uringstack.hookspecs import PROJECT_NAME

# Defined in the contract's types (the config needs them without the manager); exported here too.
from uringstack.types import DISABLE_AUTOLOAD_ENV as DISABLE_AUTOLOAD_ENV
from uringstack.types import PluginError as PluginError
from uringstack.types import PluginLoadError as PluginLoadError
from uringstack.types import PluginSection as PluginSection

if TYPE_CHECKING:
    from uringstack.config.model import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring import Ring
    from uringstack.ring.params import RingParams
    from uringstack.types import BackendFactory, FeatureVerdict, HandleView, StackView, Target, WorkerView

CompletionListeners = Callable[["WorkerView", str, list[int], "Ring | None"], None]
"""What :meth:`UringstackPluginManager.completion_listeners` returns."""

ENTRY_POINT_GROUP = PROJECT_NAME
"""The entry-point group built-in and third-party plugins register under."""

HOOK_PREFIX = PROJECT_NAME + "_"

# Values of DISABLE_AUTOLOAD_ENV that mean "do load": an empty or explicitly
# false-looking value should not surprise someone who exported VAR=0.
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: its name, what it is, and which distribution shipped it."""

    name: str
    module: str
    distribution: str | None
    version: str | None


def autoload_disabled_by_env(environ: Any = None) -> bool:
    """True when :data:`DISABLE_AUTOLOAD_ENV` asks to skip entry-point plugins."""
    env = os.environ if environ is None else environ
    value = str(env.get(DISABLE_AUTOLOAD_ENV, "")).strip().lower()
    return value not in _FALSE_WORDS


class UringstackPluginManager:
    """Typed facade over a :class:`pluggy.PluginManager` for the ``uringstack`` hooks.

    Build it with :func:`make_plugin_manager`.  Each ``uringstack_<hook>`` spec
    in :mod:`uringstack.hookspecs` has a forwarding method named ``<hook>``
    taking keyword-checked, typed arguments.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        # plugin name -> (plugin, its distribution's name, the distribution), for the entry
        # points load_entry_points loaded (the name as read there, not parsed again)
        self._entry_point_dists: dict[str, tuple[object, str, importlib.metadata.Distribution]] = {}

    # --- the raw manager and plugin bookkeeping ----------------------------------

    @property
    def pm(self) -> pluggy.PluginManager:
        """The underlying pluggy manager (for ``add_hookspecs``, tracing, tests)."""
        return self._pm

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order (blocked ones excluded)."""
        return [name for name, plugin in self._pm.list_name_plugin() if plugin is not None]

    def plugin_info(self) -> list[PluginInfo]:
        """Each registered plugin with its module and, for entry-point plugins, its distribution."""
        # (pluggy's record: a plugin loaded through .pm.load_setuptools_entrypoints)
        dists: dict[int, tuple[str, str]] = {
            id(plugin): (dist.project_name, dist.version) for plugin, dist in self._pm.list_plugin_distinfo()
        }
        for plugin, dist_name, dist in self._entry_point_dists.values():
            dists[id(plugin)] = (dist_name, dist.version)
        infos: list[PluginInfo] = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:
                continue
            project, version = dists.get(id(plugin), (None, None))
            module = getattr(plugin, "__name__", None) or type(plugin).__module__
            infos.append(PluginInfo(name=name, module=str(module), distribution=project, version=version))
        return infos

    def get_plugin(self, name: str) -> Any | None:
        """The plugin object registered as *name*, or ``None``."""
        return self._pm.get_plugin(name)

    def register(self, plugin: object, name: str | None = None, *, check: bool = True) -> str:
        """Register *plugin* (a module, class instance, …) and return its name.

        With ``check`` (the default) the plugin's hook implementations are
        verified at once, as :meth:`check_pending` does after autoloading, so a
        misspelled hook fails here and names the plugin.  Pass
        ``check=False`` when a plugin registered *later* adds the spec it
        implements (via ``uringstack_addhooks``), then call
        :meth:`check_pending`.  Raises :class:`PluginError` when *name* is
        blocked or already taken.
        """
        if name is not None and self._pm.is_blocked(name):
            raise PluginError(f"plugin {name!r} is blocked (disabled) and cannot be registered")
        try:
            registered = self._pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy: name or object already registered
            raise PluginError(f"cannot register plugin {name or plugin!r}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or plugin!r} does not fit the hook specs: {exc}") from exc
        if registered is None:  # pragma: no cover - pluggy returns None only for blocked names
            raise PluginError(f"plugin {name!r} is blocked")
        if check:
            self._check_plugin(plugin, registered)
        return registered

    def unregister(self, name: str) -> object | None:
        """Unregister the plugin called *name*; return it (``None`` if it was not registered)."""
        if not self._pm.has_plugin(name):
            return None
        return self._pm.unregister(name=name)

    def block(self, name: str) -> None:
        """Block *name*: unregister it now and refuse to load or register it later."""
        self._pm.set_blocked(name)

    def is_blocked(self, name: str) -> bool:
        """True when *name* was blocked with :meth:`block`."""
        return self._pm.is_blocked(name)

    def check_pending(self) -> None:
        """Fail loudly when a plugin implements a hook that has no spec.

        Like pluggy's ``check_pending`` but the error names every offending
        plugin and hook, and suggests the closest real hook name, so a typo
        like ``uringstack_ring_param`` does not silently do nothing.
        """
        problems: list[str] = []
        for hook_name, hook in sorted(vars(self._pm.hook).items()):
            if hook_name.startswith("_") or not isinstance(hook, pluggy.HookCaller):
                continue
            if hook.has_spec():
                continue
            for impl in hook.get_hookimpls():
                if not impl.optionalhook:
                    problems.append(self._unknown_hook_message(impl.plugin_name, hook_name))
        for name, plugin in self._pm.list_name_plugin():
            if plugin is not None:
                problems.extend(self._unmarked_hooks(plugin, name))
        if problems:
            raise PluginError("invalid uringstack plugin(s):\n  " + "\n  ".join(problems))

    def _check_plugin(self, plugin: object, name: str) -> None:
        problems = self._unmarked_hooks(plugin, name)
        for impl in self._pm.get_hookcallers(plugin) or []:
            if not impl.has_spec():
                for hookimpl in impl.get_hookimpls():
                    if hookimpl.plugin is plugin and not hookimpl.optionalhook:
                        problems.append(self._unknown_hook_message(name, impl.name))
        if problems:
            # Leave the manager as it was: a half-registered bad plugin would
            # make every later hook call suspect.
            self._pm.unregister(plugin)
            raise PluginError("invalid uringstack plugin:\n  " + "\n  ".join(problems))

    def _hook_names(self) -> list[str]:
        return [
            name
            for name, hook in vars(self._pm.hook).items()
            if isinstance(hook, pluggy.HookCaller) and hook.has_spec()
        ]

    def _unknown_hook_message(self, plugin_name: str, hook_name: str) -> str:
        close = difflib.get_close_matches(hook_name, self._hook_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"plugin {plugin_name!r}: {hook_name!r} is not a uringstack hook{hint}"

    def _unmarked_hooks(self, plugin: object, name: str) -> list[str]:
        # pluggy only collects functions marked with @hookimpl; a plugin author
        # who forgets the decorator would otherwise see the hook never called.
        problems: list[str] = []
        for attr in dir(plugin):
            if not attr.startswith(HOOK_PREFIX):
                continue
            try:
                value = inspect.getattr_static(plugin, attr)
            except AttributeError:  # pragma: no cover - dir() and getattr_static disagree
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if not callable(value):
                continue
            if self._pm.parse_hookimpl_opts(plugin, attr) is None:
                problems.append(
                    f"plugin {name!r}: {attr!r} looks like a hook implementation but is not "
                    f"decorated with @uringstack.hookspecs.hookimpl"
                )
        return problems

    # --- loading -------------------------------------------------------------------

    def load_entry_points(self) -> list[str]:
        """Load every plugin of the ``uringstack`` entry-point group that is not blocked.

        Each entry point is loaded and registered on its own (as pluggy's
        ``load_setuptools_entrypoints`` does), so an import error is reported
        with the entry point and distribution that declared it
        (:class:`PluginLoadError`).  Two distributions declaring the same
        plugin name is an error too: pluggy would silently keep whichever it
        met first.  Returns the names loaded by this call.

        One pass over the installed distributions, reading a distribution's
        name only where it declares a uringstack entry point: calling pluggy's
        loader once per plugin name scanned them all again per name, and
        parsing every distribution's metadata for its name cost most of the
        ~20 ms a plugin manager took to build (two are built before a first
        ``uringstack.open()``'s I/O).
        """
        seen: dict[str, str] = {}
        loaded: list[str] = []
        for dist in importlib.metadata.distributions():
            dist_name = ""
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP:
                    continue
                dist_name = dist_name or str(dist.metadata["Name"] or "?")
                if self._pm.is_blocked(ep.name):
                    # (before the clash check: its message says to block one, which must work)
                    continue
                if ep.name in seen and seen[ep.name] != dist_name:
                    raise PluginLoadError(
                        f"uringstack plugin name {ep.name!r} is declared by two distributions: "
                        f"{seen[ep.name]!r} and {dist_name!r}; uninstall one or block it with "
                        f"core.disabled_plugins",
                        entry_point=f"{ep.name} = {ep.value}",
                        distribution=dist_name,
                    )
                seen[ep.name] = dist_name
                if self._pm.has_plugin(ep.name):
                    continue
                try:
                    plugin = ep.load()
                    self._pm.register(plugin, name=ep.name)
                except Exception as exc:
                    raise PluginLoadError(
                        f"cannot load uringstack plugin {ep.name!r} (entry point "
                        f"'{ep.name} = {ep.value}' in distribution {dist_name!r}): "
                        f"{type(exc).__name__}: {exc}\n"
                        f"  disable it with URINGSTACK_CORE__DISABLED_PLUGINS={ep.name} or "
                        f'core.disabled_plugins = ["{ep.name}"] in the config file',
                        entry_point=f"{ep.name} = {ep.value}",
                        distribution=dist_name,
                    ) from exc
                self._entry_point_dists[ep.name] = (plugin, dist_name, dist)
                loaded.append(ep.name)
        return loaded

    # --- typed hook calls ------------------------------------------------------------

    def config_sections(self) -> list[PluginSection]:
        """Every plugin's config section, with the plugin that contributed it.

        Each implementation is called on its own (the hook takes no arguments)
        so that a duplicate section can name both plugins and a broken
        implementation is reported with its plugin's name.
        """
        sections: list[PluginSection] = []
        # get_hookimpls() is in reverse call order; iterate in registration order
        # so sections appear in the schema as plugins were loaded.
        for impl in self._pm.hook.uringstack_config_sections.get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                continue
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: uringstack_config_sections raised {type(exc).__name__}: {exc}"
                ) from exc
            if result is None:
                continue
            if not (
                isinstance(result, tuple)
                and len(result) == 2
                and isinstance(result[0], str)
                and isinstance(result[1], type)
            ):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: uringstack_config_sections must return "
                    f"(section_name, pydantic model class) or None, got {result!r}"
                )
            sections.append(PluginSection(name=result[0], model=result[1], plugin=impl.plugin_name))
        return sections

    # --- calls one implementation at a time (a failure names its plugin) ---------------

    def _impls(self, hook: str) -> list[Any]:
        """*hook*'s implementations in pluggy's call order (tryfirst first, then the last
        registered first); hook wrappers are not supported by these hooks and are skipped."""
        impls = getattr(self._pm.hook, hook).get_hookimpls()
        return [impl for impl in reversed(impls) if not (impl.hookwrapper or impl.wrapper)]

    @staticmethod
    def _call(impl: Any, hook: str, kwargs: dict[str, Any], *, wrap: bool = True) -> Any:
        """``impl(**kwargs)``; what it raises names its plugin: uringstack's own errors (a
        PlanError saying ``on`` is impossible), and with *wrap* false any error, with a
        note; anything else (a plugin's bug) as a :class:`PluginError` carrying it."""
        try:
            return impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            if not wrap or isinstance(exc, UringStackError):
                exc.add_note(f"in {hook} of plugin {impl.plugin_name!r}")
                raise
            raise PluginError(f"plugin {impl.plugin_name!r}: {hook} raised {type(exc).__name__}: {exc}") from exc

    def _call_all(self, hook: str, kwargs: dict[str, Any], impls: Iterable[Any], *, wrap: bool = True) -> None:
        """Call every one of *impls* even if one raises (a plugin's failure must not keep
        another from letting go of what it holds); the failures, each naming its plugin,
        are raised afterwards: one as is, several as an :class:`ExceptionGroup`."""
        errors: list[Exception] = []
        for impl in impls:
            try:
                self._call(impl, hook, kwargs, wrap=wrap)
            except Exception as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(f"{len(errors)} plugins failed in {hook}", errors)

    def check_support(self, caps: Capabilities, config: StackConfig) -> list[FeatureVerdict]:
        """One verdict per feature plugin: enabled or not here, and why."""
        from uringstack.types import FeatureVerdict as Verdict

        verdicts: list[FeatureVerdict] = []
        kwargs = {"caps": caps, "config": config}
        for impl in self._impls("uringstack_check_support"):
            result = self._call(impl, "uringstack_check_support", kwargs)
            if result is None:
                continue
            if not isinstance(result, Verdict):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: uringstack_check_support must return a FeatureVerdict "
                    f"or None, got {type(result).__name__}: {result!r:.200}"
                )
            verdicts.append(result)
        return verdicts

    def ring_params(self, params: RingParams, caps: Capabilities, config: StackConfig) -> None:
        """Let every plugin adjust *params* (mutated in place) for one planned ring."""
        kwargs = {"params": params, "caps": caps, "config": config}
        for impl in self._impls("uringstack_ring_params"):
            self._call(impl, "uringstack_ring_params", kwargs)
            problems = params.plan_problems()
            if problems:
                # here, not when the ring is made: the plan (and `uringstack plan`) must not
                # show as fine a ring that cannot work, and the plugin that broke it is known
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: uringstack_ring_params left ring {params.name} unusable: "
                    + "; ".join(problems)
                )

    def ring_created(self, ring: Ring, worker: WorkerView, config: StackConfig) -> None:
        """Tell plugins a ring exists (they register buffers, files, eventfds)."""
        self._pm.hook.uringstack_ring_created(ring=ring, worker=worker, config=config)

    def select_backend(self, target: Target, caps: Capabilities, config: StackConfig) -> BackendFactory | None:
        """The first plugin's backend factory for *target*, or ``None`` for plain io_uring."""
        kwargs = {"target": target, "caps": caps, "config": config}
        for impl in self._impls("uringstack_select_backend"):
            result = self._call(impl, "uringstack_select_backend", kwargs)
            if result is None:
                continue
            if not callable(getattr(result, "open", None)) or not isinstance(getattr(result, "name", None), str):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: uringstack_select_backend must return a backend factory "
                    f"(a str name, a reason and open(target, worker)) or None, got {result!r:.200}"
                )
            factory: BackendFactory = result
            return factory
        return None

    def open_options(self) -> set[str]:
        """Every extra :meth:`Stack.open` option some loaded plugin declares."""
        declared: list[list[str] | None] = self._pm.hook.uringstack_open_options()
        return {name for names in declared if names for name in names}

    def file_opened(self, handle: HandleView, worker: WorkerView) -> None:
        """Tell plugins a handle was opened on *worker*.

        If one raises, the plugins whose ``file_opened`` ran before it get
        ``file_closed`` (they took a fixed-file slot, a table entry: the handle
        will not be used), then the error is raised, naming the plugin."""
        kwargs = {"handle": handle, "worker": worker}
        done: list[str] = []
        for impl in self._impls("uringstack_file_opened"):
            try:
                self._call(impl, "uringstack_file_opened", kwargs)
            except BaseException:
                self.file_closed(handle, worker, only=done)
                raise
            done.append(impl.plugin_name)

    def file_closed(self, handle: HandleView, worker: WorkerView, *, only: Iterable[str] | None = None) -> None:
        """Tell plugins a handle is about to close (*only*: just these plugins).

        Every plugin runs even if one raises, as in :meth:`stack_teardown`: one
        plugin's failure must not keep another from letting go of what it
        holds for the handle (fixedbuf's fixed-file slot kept the closed file
        open in the kernel).  Failures are raised afterwards, one as is,
        several as an :class:`ExceptionGroup`."""
        wanted = None if only is None else set(only)
        impls = [i for i in self._impls("uringstack_file_closed") if wanted is None or i.plugin_name in wanted]
        self._call_all("uringstack_file_closed", {"handle": handle, "worker": worker}, impls)

    @property
    def has_completion_batch_impls(self) -> bool:
        """True when some plugin implements ``uringstack_completion_batch``.

        :meth:`completion_listeners` is what the stack uses; this says only
        whether any plugin implements the hook at all.
        """
        return bool(self._pm.hook.uringstack_completion_batch.get_hookimpls())

    def completion_batch(self, worker: WorkerView, op: str, results: list[int], ring: Ring | None = None) -> None:
        """Hand one batch of completion results to every plugin that implements the hook."""
        self._pm.hook.uringstack_completion_batch(worker=worker, op=op, results=results, ring=ring)

    def completion_listeners(self, skip: Iterable[str] = ()) -> CompletionListeners | None:
        """The ``uringstack_completion_batch`` implementations of all plugins but *skip*.

        ``None`` when no implementation is left: the stack then attaches no
        callback to any batch, so the hook costs nothing.  The stack skips
        the plugins whose verdict is ``mode="off"``, so a switched-off plugin
        does not pay for its hook on every batch.
        """
        skipped = set(skip)
        calls = [
            (impl.plugin_name, impl.function, impl.argnames)
            for impl in self._impls("uringstack_completion_batch")
            if impl.plugin_name not in skipped
        ]
        if not calls:
            return None

        def listeners(worker: WorkerView, op: str, results: list[int], ring: Ring | None) -> None:
            # Each on its own, and a failure logged, never raised: the batch's I/O is done and
            # its results stand.  Raised, it reached whichever caller reaped the batch (a write
            # that had landed "failed", inviting a retry that wrote it twice; or an unrelated
            # read), while the asyncio path only logged it.
            kwargs = {"worker": worker, "op": op, "results": results, "ring": ring}
            for name, function, argnames in calls:
                try:
                    function(*[kwargs[arg] for arg in argnames])
                except Exception:
                    log.exception("uringstack_completion_batch of plugin %r failed on a %s batch", name, op)

        return listeners

    def stack_teardown(self, stack: StackView) -> None:
        """Let plugins release what they attached, in reverse of the usual call order.

        pluggy calls hooks last-registered-first, so ``ring_created`` ran in
        that order; teardown runs first-registered-first, i.e. mirrored, so a
        plugin that builds on another's resources releases them before the
        other frees its own.  Every plugin runs even if one fails (resources
        must not leak because a neighbour raised); failures are re-raised
        afterwards, one as is, several as an :class:`ExceptionGroup`.
        Hook wrappers are not supported for this hook and are skipped.
        """
        # first-registered first: the reverse of _impls' call order
        impls = reversed(self._impls("uringstack_stack_teardown"))
        self._call_all("uringstack_stack_teardown", {"stack": stack}, impls, wrap=False)

    def probe(self, report: Capabilities) -> None:
        """Let plugins add facts to ``report.extras``."""
        self._pm.hook.uringstack_probe(report=report)


log = logging.getLogger(__name__)


def make_plugin_manager(*, autoload: bool | None = None, blocked: Iterable[str] = ()) -> UringstackPluginManager:
    """Build a plugin manager with the uringstack hook specs.

    ``blocked`` names plugins that must not load (``core.disabled_plugins``);
    they are blocked *before* entry points are read, so a disabled plugin is
    never even imported (a broken one cannot break the stack).

    ``autoload``: ``True`` loads the ``uringstack`` entry-point group, ``False``
    does not (tests, embedding), ``None`` (default) loads unless the
    environment sets ``URINGSTACK_DISABLE_PLUGIN_AUTOLOAD=1``.  After loading,
    :meth:`UringstackPluginManager.check_pending` runs so a misspelled hook
    implementation fails now, naming its plugin.

    Raises :class:`PluginLoadError` for a plugin that fails to import and
    :class:`PluginError` for one that does not fit the hook specs.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    manager = UringstackPluginManager(pm)
    # Historic: every plugin registered from now on gets uringstack_addhooks
    # as it registers, so a plugin can add specs that later plugins implement.
    pm.hook.uringstack_addhooks.call_historic(kwargs={"pluginmanager": pm})
    if autoload is None:
        autoload = not autoload_disabled_by_env()
    if autoload:
        manager.load_entry_points()
    manager.check_pending()
    return manager
