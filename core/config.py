"""Configuration: one TOML file plus ``URINGSTACK_*`` environment variables.

The file has a ``[core]`` table (:class:`CoreConfig`) and one table per plugin,
each validated by the model the plugin returns from
``uringstack_config_sections``.  The root model is built with
:func:`pydantic.create_model` *after* the plugins are loaded, so one
validation names ``sqpoll.idle_ms`` precisely and one JSON schema covers the
whole file.

Priority, highest first (pydantic-settings ``settings_customise_sources``,
the way Prefect layers its settings)::

    explicit arguments  >  environment  >  TOML file  >  defaults

Environment variables are ``URINGSTACK_<SECTION>__<KEY>`` (case-insensitive),
e.g. ``URINGSTACK_CORE__RING_ENTRIES=512`` or ``URINGSTACK_SQPOLL__MODE=on``.
The file is ``--config FILE`` or ``URINGSTACK_CONFIG``.

Plugins named in ``core.disabled_plugins`` are blocked in the plugin manager
*before* the model is built (so they are never imported); their tables in
the file are ignored with a note, so disabling a plugin never requires
editing the file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from uringstack.pluginmanager import (
    DISABLE_AUTOLOAD_ENV,
    PluginError,
    PluginSection,
    UringstackPluginManager,
    make_plugin_manager,
)
from uringstack.types import FeatureMode

ENV_PREFIX = "URINGSTACK_"
NESTED_DELIMITER = "__"
CONFIG_ENV = "URINGSTACK_CONFIG"
"""Environment variable naming the TOML file when no path is given."""

CORE_SECTION = "core"

RESERVED_ENV_VARS: frozenset[str] = frozenset({CONFIG_ENV, DISABLE_AUTOLOAD_ENV})
"""``URINGSTACK_*`` variables that are not config keys (never treated as sections)."""

MAX_RING_ENTRIES = 32768  # io_uring_setup rejects more SQ entries (IORING_MAX_ENTRIES)

_SECTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

M = TypeVar("M", bound=BaseModel)


# --- value parsers shared by the model and the raw pre-read ---------------------------------


def parse_cpu_list(value: object) -> object:
    """Turn ``"0,2,4-7"`` (taskset/cpuset syntax) or ``"[0, 1]"`` into a list of ints.

    Anything else is returned unchanged for pydantic to validate (and reject
    with a proper message).  Exists because a CPU list is the one list users
    type into environment variables, where JSON is awkward.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text == "auto" or not text:
        return text
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            return value
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            return value
        cpus.extend(range(lo, hi + 1))
    return cpus


def parse_name_list(value: object) -> object:
    """Turn ``"a,b"`` or ``'["a", "b"]'`` into a list of strings; pass anything else through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return [name.strip() for name in text.split(",") if name.strip()]


# --- models ---------------------------------------------------------------------------------


class CoreConfig(BaseModel):
    """The ``[core]`` table: settings of the stack itself, not of any plugin."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "uring", "fallback"] = Field(
        default="auto",
        description=(
            "Which I/O backend serves files: 'auto' uses io_uring where the probe says it is "
            "usable and the portable fallback elsewhere; 'uring' requires io_uring (an error "
            "where it is blocked); 'fallback' never uses io_uring."
        ),
    )
    cores: Annotated[Literal["auto"] | list[int], NoDecode] = Field(
        default="auto",
        description=(
            "CPU ids that get a pinned worker: 'auto' (every CPU this process may use) or a "
            "list such as [0, 2] or, in the environment, '0,2-3'."
        ),
        json_schema_extra={"allowed": "'auto' or a list of CPU ids such as [0, 1] or '0-3'"},
    )
    ring_entries: int = Field(
        default=256,
        description="Submission queue entries per ring: a power of two from 1 to 32768.",
        json_schema_extra={"allowed": "a power of two from 1 to 32768"},
    )
    disabled_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Plugins (by entry-point name) that are not loaded at all; their config tables "
            "are ignored. In the environment: 'sqpoll,iopoll'."
        ),
    )
    direct: bool = Field(
        default=False, description="Default for Stack.open(direct=...): open files with O_DIRECT."
    )
    single_issuer: FeatureMode = Field(
        default="auto",
        description=(
            "IORING_SETUP_SINGLE_ISSUER on the worker rings (each ring is used by its one "
            "worker thread): 'auto' where the kernel accepts it, 'on' required, 'off' never."
        ),
    )

    @field_validator("cores", mode="before")
    @classmethod
    def _parse_cores(cls, value: object) -> object:
        return parse_cpu_list(value)

    @field_validator("cores")
    @classmethod
    def _check_cores(cls, value: Literal["auto"] | list[int]) -> Literal["auto"] | list[int]:
        if value == "auto":
            return value
        if not value:
            raise ValueError("must name at least one CPU (or be 'auto')")
        if any(cpu < 0 for cpu in value):
            raise ValueError("CPU ids are not negative")
        if len(set(value)) != len(value):
            raise ValueError("lists a CPU twice")
        return value

    @field_validator("ring_entries")
    @classmethod
    def _check_ring_entries(cls, value: int) -> int:
        if not 1 <= value <= MAX_RING_ENTRIES or value & (value - 1):
            raise ValueError(f"must be a power of two from 1 to {MAX_RING_ENTRIES}")
        return value

    @field_validator("disabled_plugins", mode="before")
    @classmethod
    def _parse_disabled(cls, value: object) -> object:
        return parse_name_list(value)


@dataclass(frozen=True)
class _Layers:
    """The raw values of each source, as the model class's sources return them."""

    env: dict[str, Any]
    file: dict[str, Any]


class StackConfig(BaseSettings):
    """The validated configuration: ``core`` plus one attribute per plugin section.

    The class a loaded config really has is built by :func:`build_config_model`
    from the loaded plugins, so plugin sections are typed fields; plugins
    reach their own section with :meth:`section`, which is typed::

        cfg = config.section("sqpoll", SqpollConfig)   # -> SqpollConfig

    Instantiating ``StackConfig`` (or a built model) directly uses only the
    arguments given (no environment, no file): that is what tests want.
    Use :func:`load_config` for the layered sources.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
    )

    core: CoreConfig = Field(
        default_factory=lambda: CoreConfig(), description="Settings of the stack itself."
    )

    # Set on the per-load subclass by load_config; read by settings_customise_sources.
    _uringstack_layers: ClassVar[_Layers | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments > environment > file; no dotenv, no secrets directory.

        The environment and the file were read once by :func:`load_config`
        (it needs ``core.disabled_plugins`` before this class even exists);
        they come in as fixed layers so the same dicts drive both the model
        and the provenance report.
        """
        layers = cls._uringstack_layers
        if layers is None:
            return (init_settings,)
        return (
            init_settings,
            InitSettingsSource(settings_cls, layers.env),
            InitSettingsSource(settings_cls, layers.file),
        )

    def section(self, name: str, model: type[M]) -> M:
        """This config's section *name*, checked to be an instance of *model*.

        Raises :class:`KeyError` when no loaded plugin contributes *name*
        (e.g. the plugin is disabled) and :class:`TypeError` when the section
        has a different model.
        """
        value = self.sections().get(name)
        if value is None:
            raise KeyError(f"no config section {name!r} (known: {', '.join(self.sections())})")
        if not isinstance(value, model):
            raise TypeError(
                f"config section {name!r} is a {type(value).__name__}, not {model.__name__}"
            )
        return value

    def sections(self) -> dict[str, BaseModel]:
        """Every section by name, ``core`` first."""
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), BaseModel)
        }


def build_config_model(sections: list[PluginSection]) -> type[StackConfig]:
    """The root model for *sections*: ``core`` plus one typed field per plugin section.

    Raises :class:`PluginError` for a section name that is reserved, not a
    lower-case identifier, used by two plugins, or whose model cannot be built
    from defaults (every key needs one, so an empty file is valid).
    """
    fields: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for section in sections:
        name, model, plugin = section.name, section.model, section.plugin
        if name == CORE_SECTION or name in owners:
            other = "the core" if name == CORE_SECTION else f"plugin {owners[name]!r}"
            raise PluginError(
                f"plugin {plugin!r}: config section {name!r} is already used by {other}"
            )
        if not _SECTION_NAME.match(name) or name.startswith("model_") or hasattr(StackConfig, name):
            raise PluginError(
                f"plugin {plugin!r}: config section name {name!r} must be a lower-case "
                f"identifier not starting with 'model_' and not a StackConfig attribute"
            )
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"plugin {plugin!r}: section {name!r} model must be a pydantic model")
        try:
            model()
        except ValidationError as exc:
            raise PluginError(
                f"plugin {plugin!r}: section model {model.__name__} needs a default for every "
                f"field so an empty file is valid: {exc}"
            ) from exc
        owners[name] = plugin
        doc = (model.__doc__ or "").strip().splitlines()
        fields[name] = (
            model,
            Field(
                default_factory=model,
                description=(doc[0] if doc else f"Settings of the {plugin} plugin.")
                + f" (plugin: {plugin})",
            ),
        )
    built: type[StackConfig] = create_model(
        "StackConfig", __base__=StackConfig, __module__=__name__, **fields
    )
    return built


# --- errors ---------------------------------------------------------------------------------

_NO_VALUE: Any = object()


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration."""

    key: str
    """Dotted key, e.g. ``sqpoll.mode`` (or just the section for an unknown section)."""
    message: str
    value: Any = _NO_VALUE
    allowed: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        extra: list[str] = []
        shown = _show(self.value) if self.value is not _NO_VALUE else None
        if shown is not None and shown not in self.message:
            extra.append(f"got {shown}")
        if self.allowed and self.allowed not in self.message:
            extra.append(f"allowed: {self.allowed}")
        if extra:
            text += f" ({'; '.join(extra)})"
        if self.source:
            text += f" [{self.source}]"
        return text


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists each issue.

    ``str(error)`` is one line per problem:
    ``section.key: message (got VALUE; allowed: ...) [source]``.
    """

    def __init__(
        self, problems: list[ConfigProblem], header: str = "invalid uringstack config"
    ) -> None:
        self.problems = problems
        self.header = header
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{header}:\n{lines}" if problems else header)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def describe_allowed(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A short English description of what a field accepts, from its type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        return describe_allowed(base, [*(metadata or []), *meta])
    if origin is Literal:
        return ", ".join(str(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_allowed(a) for a in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = get_args(annotation)
        return f"a list of {describe_allowed(args[0]) if args else 'values'}"
    if annotation is bool:
        return "true, false"
    if annotation in (int, float):
        kind = "an integer" if annotation is int else "a number"
        bounds = []
        for meta in metadata or []:
            if isinstance(meta, annotated_types.Ge):
                bounds.append(f">= {meta.ge}")
            elif isinstance(meta, annotated_types.Gt):
                bounds.append(f"> {meta.gt}")
            elif isinstance(meta, annotated_types.Le):
                bounds.append(f"<= {meta.le}")
            elif isinstance(meta, annotated_types.Lt):
                bounds.append(f"< {meta.lt}")
        return f"{kind} {' and '.join(bounds)}".strip()
    if annotation is str:
        return "a string"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table with keys " + ", ".join(annotation.model_fields)
    return getattr(annotation, "__name__", str(annotation))


def _field_allowed(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    return describe_allowed(info.annotation, list(info.metadata))


def _resolve_loc(
    model: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[tuple[str, ...], FieldInfo | None, type[BaseModel]]:
    """Walk *loc* through nested models: (field path, its FieldInfo, the model holding it)."""
    path: list[str] = []
    current: type[BaseModel] = model
    info: FieldInfo | None = None
    for part in loc:
        if not isinstance(part, str) or part not in current.model_fields:
            break
        info = current.model_fields[part]
        path.append(part)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
            continue
        break
    return tuple(path), info, current


def _clean_message(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg[:1].lower() + msg[1:]


def _problems_from_validation(
    exc: ValidationError, model: type[StackConfig], locate: _Locator
) -> list[ConfigProblem]:
    grouped: dict[tuple[str, ...], list[Any]] = {}
    order: list[tuple[str, ...]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path, info, holder = _resolve_loc(model, loc)
        if err["type"] == "extra_forbidden":
            # The unknown name is the first part of loc the models do not know.
            key = (*path, str(loc[len(path)])) if len(loc) > len(path) else path
            grouped[("!extra", *key)] = [err, holder, len(key)]
            order.append(("!extra", *key))
            continue
        if path not in grouped:
            grouped[path] = []
            order.append(path)
        grouped[path].append((err, info))

    problems: list[ConfigProblem] = []
    for gkey in order:
        entry = grouped[gkey]
        if gkey and gkey[0] == "!extra":
            err, holder, depth = entry
            key = gkey[1:]
            dotted = ".".join(key)
            if depth == 1:
                known = ", ".join(model.model_fields)
                if isinstance(err["input"], dict):
                    msg, value = "unknown section", _NO_VALUE
                else:
                    msg = "unknown top-level key (keys belong inside a [section] table)"
                    value = err["input"]
                problems.append(
                    ConfigProblem(dotted, msg, value, f"sections {known}", locate(key))
                )
            else:
                problems.append(
                    ConfigProblem(
                        dotted,
                        "unknown key",
                        err["input"],
                        ", ".join(holder.model_fields),
                        locate(key),
                    )
                )
            continue
        errs = entry
        dotted = ".".join(gkey)
        first, info = errs[0]
        allowed = _field_allowed(info) if info is not None else None
        value = first["input"] if len(first["loc"]) >= len(gkey) else _NO_VALUE
        value_errors = [e for e, _ in errs if e["type"] in ("value_error", "assertion_error")]
        if value_errors:
            message = _clean_message(value_errors[0]["msg"])
        elif first["type"] == "literal_error" and len(errs) == 1:
            choices = allowed or ""
            message = f"{_show(first['input'])} is not one of {choices}"
        elif len(errs) > 1:
            # A union: pydantic reports one error per member; one line says it better.
            value = _input_at(gkey, errs)
            message = "not an allowed value"
        else:
            message = _clean_message(first["msg"])
            if len(first["loc"]) > len(gkey):
                # An item inside a list: say which.
                inner = ".".join(str(p) for p in first["loc"][len(gkey) :])
                message = f"item {inner}: {message}"
                value = _input_at(gkey, errs)
        problems.append(ConfigProblem(dotted, message, value, allowed, locate(gkey)))
    return problems


def _input_at(path: tuple[str, ...], errs: list[Any]) -> Any:
    # For union/list errors the innermost input is a fragment; the user typed the whole value.
    for err, _ in errs:
        if len(err["loc"]) == len(path) or not isinstance(err["loc"][len(path)], int):
            return err["input"]
    return _NO_VALUE


# --- sources ---------------------------------------------------------------------------------


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source reading a given mapping instead of os.environ.

    ``load_config(env=...)`` must not depend on the process environment (tests,
    ``config validate`` of a file meant for another machine).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {key.lower(): value for key, value in self._environ.items()}


def _read_toml(path: Path, why: str) -> dict[str, Any]:
    # Read with tomllib ourselves rather than TomlConfigSettingsSource: the raw
    # table is needed before the model exists (core.disabled_plugins decides
    # which plugins load), a missing file must be an error (the source treats
    # it as empty) and a syntax error must name the file and the line.
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([], f"config file {path} ({why}) does not exist") from None
    except OSError as exc:
        raise ConfigError([], f"cannot read config file {path} ({why}): {exc.strerror}") from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([], f"{path}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{match.group(1)}" if match else str(path)
        raise ConfigError([], f"{where}: invalid TOML: {exc}") from exc


def _expand_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"core.ring_entries": 512}`` and ``{"core": {"ring_entries": 512}}`` both work."""
    result: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, BaseModel):
            value = value.model_dump(exclude_unset=True)
        parts = key.split(".")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(target.get(parts[-1]), dict):
            target[parts[-1]].update(value)
        else:
            target[parts[-1]] = dict(value) if isinstance(value, Mapping) else value
    return result


def _env_lookup(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """Case-insensitive lookup of an environment variable: (actual name, value)."""
    if name in environ:
        return name, environ[name]
    lowered = name.lower()
    for key, value in environ.items():
        if key.lower() == lowered:
            return key, value
    return None


def _raw_disabled(
    overrides: dict[str, Any], environ: Mapping[str, str], file_data: dict[str, Any]
) -> list[str]:
    """``core.disabled_plugins`` from the highest source that sets it, before validation."""
    candidates: list[object] = []
    core = overrides.get(CORE_SECTION)
    if isinstance(core, dict) and "disabled_plugins" in core:
        candidates.append(core["disabled_plugins"])
    found = _env_lookup(environ, f"{ENV_PREFIX}CORE{NESTED_DELIMITER}DISABLED_PLUGINS")
    if found is not None:
        candidates.append(found[1])
    else:
        whole = _env_lookup(environ, f"{ENV_PREFIX}CORE")
        if whole is not None:
            try:
                parsed = json.loads(whole[1])
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and "disabled_plugins" in parsed:
                candidates.append(parsed["disabled_plugins"])
    core_file = file_data.get(CORE_SECTION)
    if isinstance(core_file, dict) and "disabled_plugins" in core_file:
        candidates.append(core_file["disabled_plugins"])
    if not candidates:
        return []
    names = parse_name_list(candidates[0])
    # A malformed value is reported by full validation later; block nothing for it.
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return []


class _Locator:
    """Says which source supplied a key, for provenance and for error messages."""

    def __init__(
        self,
        overrides: dict[str, Any],
        env_layer: dict[str, Any],
        file_layer: dict[str, Any],
        environ: Mapping[str, str],
        path: Path | None,
    ) -> None:
        self.layers: list[tuple[str, dict[str, Any]]] = [
            ("argument", overrides),
            ("env", env_layer),
            ("file", file_layer),
        ]
        self.environ = environ
        self.path = path

    def __call__(self, key: tuple[str, ...]) -> str | None:
        for kind, layer in self.layers:
            if _has_path(layer, key):
                return self._label(kind, key)
        return None

    def _label(self, kind: str, key: tuple[str, ...]) -> str:
        if kind == "file":
            return f"file:{self.path}"
        if kind == "env":
            # The most specific variable that exists names the source.
            for depth in range(len(key), 0, -1):
                name = ENV_PREFIX + NESTED_DELIMITER.join(k.upper() for k in key[:depth])
                found = _env_lookup(self.environ, name)
                if found is not None:
                    return f"env:{found[0]}"
            return "env"
        return kind


def _has_path(layer: Mapping[str, Any], key: tuple[str, ...]) -> bool:
    current: Any = layer
    for part in key:
        if not isinstance(current, Mapping):
            return False
        match = next((k for k in current if k.lower() == part.lower()), None)
        if match is None:
            return False
        current = current[match]
    return True


# --- loading --------------------------------------------------------------------------------


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
        for section_name, section in self.config.sections().items():
            for key in type(section).model_fields:
                dotted = f"{section_name}.{key}"
                yield ConfigRow(
                    dotted, getattr(section, key), self.provenance.get(dotted, "default")
                )

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
    override_layer = _expand_overrides(overrides)

    file_path: Path | None = None
    file_layer: dict[str, Any] = {}
    if path is not None:
        file_path = Path(path)
        file_layer = _read_toml(file_path, "given as the config file")
    else:
        from_env = _env_lookup(environ, CONFIG_ENV)
        if from_env is not None and from_env[1]:
            file_path = Path(from_env[1])
            file_layer = _read_toml(file_path, f"named by {from_env[0]}")

    disabled = _raw_disabled(override_layer, environ, file_layer)
    notes: list[str] = []
    if plugin_manager is None:
        plugin_manager = make_plugin_manager(blocked=disabled)
    else:
        for name in disabled:
            plugin_manager.block(name)

    sections = plugin_manager.config_sections()
    model = build_config_model(sections)
    known = set(model.model_fields)

    problems: list[ConfigProblem] = []
    env_layer = _read_env(model, environ, problems)
    problems.extend(_unknown_env_sections(environ, known, disabled, notes))

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

    locate = _Locator(override_layer, env_layer, file_layer, environ, file_path)
    model._uringstack_layers = _Layers(env=env_layer, file=file_layer)
    try:
        config = model(**override_layer)
    except ValidationError as exc:
        # Report everything at once: environment problems found above plus
        # every validation error, so one run of `config validate` shows all.
        problems.extend(_problems_from_validation(exc, model, locate))
    finally:
        model._uringstack_layers = None
    if problems:
        raise ConfigError(problems) from None

    provenance: dict[str, str] = {}
    for section_name, section in config.sections().items():
        for key in type(section).model_fields:
            provenance[f"{section_name}.{key}"] = locate((section_name, key)) or "default"
    return LoadedConfig(
        config=config,
        plugin_manager=plugin_manager,
        provenance=provenance,
        path=file_path,
        notes=notes,
        sections=sections,
    )


def _read_env(
    model: type[StackConfig], environ: Mapping[str, str], problems: list[ConfigProblem]
) -> dict[str, Any]:
    try:
        return dict(_MappingEnvSource(model, environ)())
    except SettingsError as exc:
        # pydantic-settings names the field but not the variable; find it.
        match = re.search(r'field "([^"]+)"', str(exc))
        section = match.group(1) if match else "?"
        names = [
            k
            for k in environ
            if k.upper().startswith(f"{ENV_PREFIX}{section.upper()}")
        ]
        cause = exc.__cause__ or exc
        problems.append(
            ConfigProblem(
                section,
                f"cannot parse environment value: {cause}",
                source="env:" + ",".join(sorted(names)) if names else "env",
            )
        )
        return {}


def _unknown_env_sections(
    environ: Mapping[str, str], known: set[str], disabled: list[str], notes: list[str]
) -> list[ConfigProblem]:
    # pydantic-settings only reads variables of known fields, so a misspelled
    # section (URINGSTACK_SQPOL__MODE) would be silently ignored.  Variables
    # with the SECTION__KEY shape are clearly meant as config: check them.
    # Others without "__" may belong to other tools and are left alone.
    problems: list[ConfigProblem] = []
    reserved = {name.upper() for name in RESERVED_ENV_VARS}
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in reserved:
            continue
        rest = upper[len(ENV_PREFIX) :]
        if NESTED_DELIMITER not in rest:
            continue
        section = rest.split(NESTED_DELIMITER, 1)[0].lower()
        if section in known:
            continue
        if section in disabled:
            notes.append(f"{name} ignored: plugin {section!r} is disabled")
            continue
        problems.append(
            ConfigProblem(
                section,
                "unknown section",
                allowed="sections " + ", ".join(sorted(known, key=_core_first)),
                source=f"env:{name}",
            )
        )
    return problems


def _core_first(name: str) -> tuple[bool, str]:
    return (name != CORE_SECTION, name)


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
        pm = make_plugin_manager(blocked=_raw_disabled({}, environ, {}))
    else:
        pm = plugin_manager
    schema: dict[str, Any] = build_config_model(pm.config_sections()).model_json_schema()
    return schema
