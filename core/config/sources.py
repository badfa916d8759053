"""Reading the layers: the TOML file, the environment and explicit overrides.

Each layer is read once, as a plain dict, by :func:`~uringstack.config.load_config`;
the same dicts then drive the model (see ``StackConfig.settings_customise_sources``)
and the provenance report.  ``core.disabled_plugins`` is pre-read from the raw
layers because it decides which plugins load, i.e. what the model is.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsError

from uringstack.types import DISABLE_AUTOLOAD_ENV

from .errors import ConfigError, ConfigProblem, unknown_section_message
from .model import CORE_SECTION, ENV_PREFIX, NESTED_DELIMITER, StackConfig
from .values import parse_name_list

CONFIG_ENV = "URINGSTACK_CONFIG"
"""Environment variable naming the TOML file when no path is given."""

RESERVED_ENV_VARS: frozenset[str] = frozenset({CONFIG_ENV, DISABLE_AUTOLOAD_ENV})
"""``URINGSTACK_*`` variables that are not config keys (never treated as sections)."""


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


def read_toml(path: Path, why: str) -> dict[str, Any]:
    """The TOML file *path* as a dict; *why* says where the path came from, for the error.

    Raises :class:`ConfigError` when the file is missing, unreadable, not
    UTF-8 or not TOML (naming the line).
    """
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


def expand_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
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


def env_lookup(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """Case-insensitive lookup of an environment variable: (actual name, value)."""
    if name in environ:
        return name, environ[name]
    lowered = name.lower()
    for key, value in environ.items():
        if key.lower() == lowered:
            return key, value
    return None


def case_variant_problems(environ: Mapping[str, str]) -> list[ConfigProblem]:
    """``URINGSTACK_*`` variables set more than once in different cases, with different values.

    Names are matched without case (as pydantic-settings and :func:`env_lookup`
    read them), so ``URINGSTACK_CORE__BACKEND=fallback`` beside
    ``uringstack_core__backend=uring`` is one setting given twice: which one
    wins is an accident of the environment's order.  Refused, naming both;
    the same value in both is harmless and allowed.
    """
    groups: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if name.upper().startswith(ENV_PREFIX):
            groups.setdefault(name.upper(), {})[name] = value
    problems = []
    for upper, names in sorted(groups.items()):
        if len(names) < 2 or len(set(names.values())) < 2:
            continue
        rest = upper[len(ENV_PREFIX) :].lower()
        key = rest.replace(NESTED_DELIMITER.lower(), ".") if rest != CONFIG_ENV[len(ENV_PREFIX) :].lower() else ""
        shown = ", ".join(f"{n}={v!r}" for n, v in sorted(names.items()))
        problems.append(
            ConfigProblem(
                key,
                f"set twice, in different cases, with different values ({shown}): names are read "
                "without case, so which one wins would be an accident; unset all but one",
                source="env:" + ",".join(sorted(names)),
            )
        )
    return problems


def raw_disabled(overrides: dict[str, Any], environ: Mapping[str, str], file_data: dict[str, Any]) -> list[str]:
    """``core.disabled_plugins`` from the highest source that sets it, before validation."""
    candidates = _disabled_in(overrides.get(CORE_SECTION))
    found = env_lookup(environ, f"{ENV_PREFIX}CORE{NESTED_DELIMITER}DISABLED_PLUGINS")
    if found is not None:
        candidates.append(found[1])
    else:
        whole = env_lookup(environ, f"{ENV_PREFIX}CORE")
        if whole is not None:
            try:
                parsed = json.loads(whole[1])
            except json.JSONDecodeError:
                parsed = None
            candidates.extend(_disabled_in(parsed))
    candidates.extend(_disabled_in(file_data.get(CORE_SECTION)))
    if not candidates:
        return []
    names = parse_name_list(candidates[0])
    # A malformed value is reported by full validation later; block nothing for it.
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    return []


def _disabled_in(core: object) -> list[object]:
    """``[core["disabled_plugins"]]`` when *core* is a table that sets it, else ``[]``."""
    if isinstance(core, dict) and "disabled_plugins" in core:
        return [core["disabled_plugins"]]
    return []


def read_env(model: type[StackConfig], environ: Mapping[str, str], problems: list[ConfigProblem]) -> dict[str, Any]:
    """The environment layer for *model*, read from *environ* as pydantic-settings reads it.

    A value pydantic-settings cannot decode (e.g. bad JSON for a whole
    section) is appended to *problems* naming the variables, and the layer is
    read again without that section's variables, so that validation still
    reports everything else (until session 31 the whole layer was dropped, and
    with it every other variable's error).
    """
    environ = dict(environ)
    while True:
        try:
            return dict(_MappingEnvSource(model, environ)())
        except SettingsError as exc:
            # pydantic-settings names the field but not the variable; find it.
            match = re.search(r'field "([^"]+)"', str(exc))
            section = match.group(1) if match else "?"
            names = [k for k in environ if k.upper().startswith(f"{ENV_PREFIX}{section.upper()}")]
            cause = exc.__cause__ or exc
            problems.append(
                ConfigProblem(
                    section,
                    f"cannot parse environment value: {cause}",
                    source="env:" + ",".join(sorted(names)) if names else "env",
                )
            )
            if not names:
                return {}  # (nothing to leave out: no second try could differ)
            for name in names:
                del environ[name]


def unknown_env_sections(
    environ: Mapping[str, str], known: set[str], disabled: list[str], notes: list[str]
) -> list[ConfigProblem]:
    """A problem per ``URINGSTACK_SECTION__KEY`` variable whose section is not in *known*.

    Variables of *disabled* plugins get a line in *notes* instead.
    """
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
            # (a whole-section variable, URINGSTACK_SQPOLL='{"mode": "on"}': ignored as silently
            # as the per-key ones were noted, until session 31)
            if rest.lower() in disabled:
                notes.append(f"{name} ignored: plugin {rest.lower()!r} is disabled")
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
                unknown_section_message(section, known),
                allowed="sections " + ", ".join(sorted(known, key=_core_first)),
                source=f"env:{name}",
            )
        )
    return problems


def _core_first(name: str) -> tuple[bool, str]:
    return (name != CORE_SECTION, name)
