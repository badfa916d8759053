"""Strict typing of file and environment values.

pydantic's lax mode turns TOML ``ring_entries = true`` into 1 and
``direct = "yes"`` into True: a typo then silently configures something else.
Every layer is therefore validated in strict mode (a TOML integer for an
integer, a TOML boolean for a boolean).  A key's own environment variable
is a string, so it is first parsed by the type of the field it sets, with a
small fixed grammar: integers in decimal, booleans as ``true``/``false``/
``1``/``0`` (any case).  Anything else stays a string, and strict validation
then names the key, the value and what is allowed.  A whole section given
as one JSON table is typed as the file is (JSON has numbers and booleans).
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, create_model

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
ENV_BOOL_ALLOWED = "true, false, 1, 0 (any case)"
"""The booleans the environment grammar accepts, as error messages list them."""


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (or the annotation itself), ``Annotated`` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(m for a in get_args(annotation) for m in _members(a))
    return (annotation,)


def parse_env_scalar(annotation: Any, text: str) -> Any:
    """*text* (an environment value) as the scalar *annotation* expects, or *text* unchanged.

    A literal alternative that matches the text wins (``cpu = "auto"``); then
    bool, int and float, each with its strict grammar.
    """
    members = _members(annotation)
    for member in members:
        if get_origin(member) is Literal:
            for choice in get_args(member):
                if choice == text or (type(choice) is int and str(choice) == text.strip()):
                    return choice
    word = text.strip()
    if bool in members:
        if word.lower() in _TRUE:
            return True
        if word.lower() in _FALSE:
            return False
    if int in members and _INT.fullmatch(word):
        return int(word)
    if float in members and _FLOAT.fullmatch(word):
        return float(word)
    return text


def coerce_env_layer(
    model: type[BaseModel], layer: dict[str, Any], is_variable: Callable[[str, str], bool]
) -> dict[str, Any]:
    """The environment layer with string leaves parsed by their fields' types (in place).

    Only values of their own variable (``URINGSTACK_CORE__DIRECT=true``, which
    *is_variable(section, key)* says) are text to parse: a value inside a whole
    section's JSON (``URINGSTACK_CORE='{"direct": true}'``) is typed as in the
    file, so ``"+128"`` there is a string where an integer belongs."""
    for section, values, key, annotation in _settings_in(model, layer):
        value = values[key]
        if isinstance(value, str) and is_variable(section, key):
            values[key] = parse_env_scalar(annotation, value)
    return layer


def _settings_in(model: type[BaseModel], layer: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, Any]]:
    """``(section, its table, key, the key's annotation)`` for each key of *layer* that a
    section model of *model* has (the table, to replace the value in place)."""
    for section, values in layer.items():
        field = model.model_fields.get(section)
        sub = field.annotation if field is not None else None
        if not (isinstance(values, dict) and isinstance(sub, type) and issubclass(sub, BaseModel)):
            continue
        for key in list(values):
            inner = sub.model_fields.get(key)
            if inner is not None:
                yield section, values, key, inner.annotation


def _as_typed(annotation: Any, value: Any) -> Any:
    """*value* (from TOML, JSON or an environment string) as the instance strict
    validation wants for a path, an enum or a tuple field, where it names one;
    else *value* unchanged (validation then reports it)."""
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, PurePath) and isinstance(value, str):
            return member(value)
        if isinstance(member, type) and issubclass(member, enum.Enum) and not isinstance(value, member):
            for item in member:
                # (by type too: TOML's true is not the member whose value is 1)
                if type(item.value) is type(value) and item.value == value:
                    return item
                if isinstance(value, str) and str(item.value) == value:
                    return item
        if (member is tuple or get_origin(member) is tuple) and isinstance(value, list):
            return tuple(value)
    return value


def typed_as_file(model: type[BaseModel], merged: dict[str, Any]) -> dict[str, Any]:
    """*merged* with path, enum and tuple values made the objects their fields hold (in place).

    Strict validation (which keeps a TOML ``true`` from being the integer 1)
    wants a ``Path``, an enum member, a tuple: things neither TOML, JSON nor
    the environment can spell, so a plugin's section with such a field could
    not be set at all.  A string becomes the path, a member's value (or its
    text, from the environment) the member, a list the tuple; its items are
    still validated strictly."""
    for _, values, key, annotation in _settings_in(model, merged):
        values[key] = _as_typed(annotation, values[key])
    return merged


def strict_twin(model: type[BaseModel]) -> type[BaseModel]:
    """A plain model with *model*'s fields, validated with ``strict=True``.

    The settings class cannot be validated strictly itself (its ``__init__``
    re-reads the sources and drops the flag), so the merged layers are checked
    on this twin and the sections it produced are handed to the settings class.
    """
    fields: dict[str, Any] = {name: (f.annotation, f) for name, f in model.model_fields.items()}
    twin: type[BaseModel] = create_model(
        model.__name__, __config__=ConfigDict(extra="forbid"), __module__=model.__module__, **fields
    )
    return twin


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, later layers winning key by key (tables merge, other values replace)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        _merge_into(merged, layer)
    return merged


def _merge_into(target: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = _copy(value)


def _copy(value: Any) -> Any:
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value
