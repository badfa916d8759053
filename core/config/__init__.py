"""Configuration: one TOML file plus ``URINGSTACK_*`` environment variables.

The file has a ``[core]`` table (:class:`CoreConfig`) and one table per plugin,
each validated by the model the plugin returns from
``uringstack_config_sections``.  The root model is built with
:func:`pydantic.create_model` *after* the plugins are loaded, so one
validation names ``sqpoll.idle_ms`` precisely and one JSON schema covers the
whole file.

Priority, highest first (merged key by key, then validated once in strict
mode: a TOML ``true`` is not the integer 1, ``"yes"`` is not a boolean)::

    explicit arguments  >  environment  >  TOML file  >  defaults

Environment variables are ``URINGSTACK_<SECTION>__<KEY>`` (case-insensitive),
e.g. ``URINGSTACK_CORE__RING_ENTRIES=512`` or ``URINGSTACK_SQPOLL__MODE=on``.
The file is ``--config FILE`` or ``URINGSTACK_CONFIG``.

Plugins named in ``core.disabled_plugins`` are blocked in the plugin manager
*before* the model is built (so they are never imported); their tables in
the file are ignored with a note, so disabling a plugin never requires
editing the file.

The modules, one job each: ``values`` (list parsers for env values),
``core`` (:class:`CoreConfig`), ``model`` (:class:`StackConfig`,
:func:`build_config_model`), ``sources`` (reading the TOML, environment and
override layers), ``strict`` (typing environment strings, the strict merge),
``provenance`` (which layer set a key), ``errors``
(:class:`ConfigProblem`, :class:`ConfigError`), ``validation`` (pydantic
errors into problems) and ``load`` (:func:`load_config`, :func:`config_schema`).
Import from ``uringstack.config``; the modules are its implementation.
"""

from __future__ import annotations

from uringstack.ring.kernel import MAX_SQ_ENTRIES as MAX_RING_ENTRIES

from .core import CoreConfig
from .errors import ConfigError, ConfigProblem
from .load import ConfigRow, LoadedConfig, config_schema, load_config
from .model import CORE_SECTION, ENV_PREFIX, NESTED_DELIMITER, M, StackConfig, build_config_model
from .sources import CONFIG_ENV, RESERVED_ENV_VARS
from .validation import describe_allowed
from .values import RingEntries, parse_cpu_list, parse_name_list

__all__ = [
    "CONFIG_ENV",
    "CORE_SECTION",
    "ENV_PREFIX",
    "MAX_RING_ENTRIES",
    "NESTED_DELIMITER",
    "RESERVED_ENV_VARS",
    "ConfigError",
    "ConfigProblem",
    "ConfigRow",
    "CoreConfig",
    "LoadedConfig",
    "M",
    "RingEntries",
    "StackConfig",
    "build_config_model",
    "config_schema",
    "describe_allowed",
    "load_config",
    "parse_cpu_list",
    "parse_name_list",
]
