"""Loading: :func:`load_config` layers and validates; :class:`LoadedConfig` is the result.

Also :func:`config_schema`, the JSON schema of the file for the loaded plugins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from uringstack.pluginmanager import PluginSection, UringstackPluginManager, make_plugin_manager

from .errors import ConfigError, ConfigProblem
from .model import ENV_PREFIX, NESTED_DELIMITER, StackConfig, build_config_model
from .provenance import Locator
from .sources import (
    CONFIG_ENV,
    case_variant_problems,
    env_lookup,
    expand_overrides,
    raw_disabled,
    read_env,
    read_toml,
    unknown_env_sections,
)
from .strict import coerce_env_layer, merge_layers, strict_twin, typed_as_file
from .validation import problems_from_validation


@dataclass(frozen=True)
class ConfigRow:
    """One effective setting: ``key`` (``section.key``), its value, and where it came from."""

    key: str
    value: Any
    source: str


@dataclass(frozen=True)
class LoadedConfig:
    """What :func:`load_config` returns.

    ``config``: the validated :class:`StackConfig`; ``plugin_manager``: the
    manager whose plugins contributed its sections (pass it on to the plan and
    the stack); ``provenance``: for every effective ``section.key``, one of
    ``default``, ``file:PATH``, ``env:URINGSTACK_X__Y``, ``argument``;
    ``path``: the TOML file read, if any; ``notes``: things worth telling the
    user that are not errors (ignored sections of disabled plugins);
    ``sections``: the plugin sections and their owners.
    """

    config: StackConfig
    plugin_manager: UringstackPluginManager
    provenance: dict[str, str]
    path: Path | None = None
    notes: list[str] = field(default_factory=list)
    sections: list[PluginSection] = field(default_factory=list)

    def rows(self) -> Iterator[ConfigRow]:
        """Every effective setting in schema order (core first, then plugin sections)."""
        for section, key, value in _settings(self.config):
            dotted = f"{section}.{key}"
            yield ConfigRow(dotted, value, self.provenance.get(dotted, "default"))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: values, provenance, notes, file and section owners."""
        return {
            "file": str(self.path) if self.path else None,
            "config": self.config.model_dump(mode="json"),
            "provenance": self.provenance,
            "sections": {s.name: s.plugin for s in self.sections},
            "plugins": self.plugin_manager.plugin_names(),
            "notes": self.notes,
        }


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    plugin_manager: UringstackPluginManager | None = None,
) -> LoadedConfig:
    """Load, layer and validate the configuration.

    ``path``: the TOML file; when ``None``, ``URINGSTACK_CONFIG`` from *env*
    names it, else no file is read.  ``env``: the environment to read
    (default ``os.environ``; pass ``{}`` to ignore it).  ``overrides``:
    explicit values, highest priority, nested (``{"core": {"direct": True}}``)
    or dotted (``{"core.direct": True}``).  ``plugin_manager``: the manager
    whose plugins contribute sections; when ``None`` one is built with
    :func:`make_plugin_manager` with the disabled plugins blocked before
    loading.  A given manager has the disabled plugins blocked (unregistered)
    in place.

    Raises :class:`ConfigError` listing every problem, and
    :class:`~uringstack.pluginmanager.PluginError` when a plugin cannot load
    or its section model is unusable.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    override_layer = expand_overrides(overrides)

    file_path: Path | None = None
    file_layer: dict[str, Any] = {}
    if path is not None:
        file_path = Path(path)
        file_layer = read_toml(file_path, "given as the config file")
    else:
        from_env = env_lookup(environ, CONFIG_ENV)
        if from_env is not None and from_env[1]:
            file_path = Path(from_env[1])
            file_layer = read_toml(file_path, f"named by {from_env[0]}")

    disabled = raw_disabled(override_layer, environ, file_layer)
    notes: list[str] = []
    if plugin_manager is None:
        plugin_manager = make_plugin_manager(blocked=disabled)
    else:
        for name in disabled:
            plugin_manager.block(name)

    sections = plugin_manager.config_sections()
    model = build_config_model(sections)
    known = set(model.model_fields)

    problems: list[ConfigProblem] = case_variant_problems(environ)

    def own_variable(section: str, key: str) -> bool:
        return env_lookup(environ, f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{key.upper()}") is not None

    env_layer = coerce_env_layer(model, read_env(model, environ, problems), own_variable)
    problems.extend(unknown_env_sections(environ, known, disabled, notes))

    # Sections of disabled plugins are dropped with a note, so disabling a
    # plugin never requires editing the file or unsetting variables.
    for label, layer in (
        ("argument", override_layer),
        ("env", env_layer),
        (f"file:{file_path}", file_layer),
    ):
        for name in [n for n in layer if n in disabled and n not in known]:
            del layer[name]
            notes.append(f"[{name}] ignored: plugin {name!r} is disabled ({label})")
    for name in disabled:
        # A typo in disabled_plugins would silently disable nothing: say so.
        if not any(s.plugin == name for s in sections) and not _entry_point_exists(name):
            notes.append(f"core.disabled_plugins names {name!r}, which is not an installed plugin")

    locate = Locator(override_layer, env_layer, file_layer, environ, file_path)
    merged = typed_as_file(model, merge_layers(file_layer, env_layer, override_layer))
    try:
        # Strict: a TOML `true` is not the integer 1, the string "yes" is not a boolean.
        checked = strict_twin(model).model_validate(merged, strict=True)
        config = model(**{name: getattr(checked, name) for name in model.model_fields})
    except ValidationError as exc:
        # Report everything at once: environment problems found above plus
        # every validation error, so one run of `config validate` shows all.
        problems.extend(problems_from_validation(exc, model, locate))
    else:
        problems.extend(_backend_conflicts(config, locate))
    if problems:
        raise ConfigError(problems) from None

    provenance = {f"{section}.{key}": locate((section, key)) or "default" for section, key, _ in _settings(config)}
    _fallback_on_is_the_backend(config, provenance, notes)
    return LoadedConfig(
        config=config,
        plugin_manager=plugin_manager,
        provenance=provenance,
        path=file_path,
        notes=notes,
        sections=sections,
    )


def backend_conflict(fallback_mode: str, backend: str) -> str | None:
    """Why ``[fallback] mode`` and ``core.backend`` contradict each other, or None.

    The one statement of the rule: the config loader reports it with each
    key's source (so ``config validate`` finds it: until session 32 it said
    "valid" for a file every ``plan`` then refused), and the fallback plugin's
    verdict raises it for a config built without the loader."""
    if fallback_mode == "on" and backend == "uring":
        why = "core.backend = 'uring' requires io_uring for every target, the fallback never serves one"
    elif fallback_mode == "off" and backend == "fallback":
        why = "core.backend = 'fallback' needs this plugin to serve every target"
    else:
        return None
    return f"{fallback_mode!r} conflicts with core.backend = {backend!r}: {why}"


def _backend_conflicts(config: StackConfig, locate: Locator) -> list[ConfigProblem]:
    section = config.sections().get("fallback")
    mode = getattr(section, "mode", None)
    why = backend_conflict(mode, config.core.backend) if isinstance(mode, str) else None
    if why is None:
        return []
    sources = [f"{key}: {locate(tuple(key.split('.'))) or 'default'}" for key in ("fallback.mode", "core.backend")]
    return [ConfigProblem("fallback.mode", why, mode, source="; ".join(sources))]


def _fallback_on_is_the_backend(config: StackConfig, provenance: dict[str, str], notes: list[str]) -> None:
    """``[fallback] mode = "on"`` is ``[core] backend = "fallback"`` (docs/builtin-plugins.md).

    One fact, decided here: the plan, the plugins that build rings (sqpoll,
    fixedbuf, iopoll, nvme_passthrough) and third-party ones read
    ``core.backend``.  Before, ``on`` only made the fallback answer for the
    targets no other plugin took first: io_uring rings were still built, buffers
    registered, a SQPOLL thread started, and NVMe targets went to iopoll and
    passthrough.  ``on`` with ``backend = "uring"`` stays the fallback plugin's
    ``ConfigError``."""
    section = config.sections().get("fallback")
    if section is None or getattr(section, "mode", None) != "on" or config.core.backend != "auto":
        return
    config.core.backend = "fallback"
    provenance["core.backend"] = f"fallback.mode ({provenance.get('fallback.mode', 'default')})"
    notes.append("core.backend = 'fallback': [fallback] mode = 'on' serves every target with the thread pool")


def _settings(config: StackConfig) -> Iterator[tuple[str, str, Any]]:
    """``(section, key, value)`` of every effective setting, core first, in schema order."""
    for name, section in config.sections().items():
        for key in type(section).model_fields:
            yield name, key, getattr(section, key)


def _entry_point_exists(name: str) -> bool:
    import importlib.metadata

    return any(ep.name == name for ep in importlib.metadata.entry_points(group="uringstack"))


def config_schema(
    plugin_manager: UringstackPluginManager | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON schema of the whole config file for the loaded plugins.

    Without *plugin_manager* one is built with the plugins disabled in the
    environment (``URINGSTACK_CORE__DISABLED_PLUGINS``) blocked.
    """
    if plugin_manager is None:
        environ: Mapping[str, str] = os.environ if env is None else env
        pm = make_plugin_manager(blocked=raw_disabled({}, environ, {}))
    else:
        pm = plugin_manager
    schema: dict[str, Any] = build_config_model(pm.config_sections()).model_json_schema()
    return schema
