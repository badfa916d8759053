"""Turning a pydantic :class:`~pydantic.ValidationError` into :class:`ConfigProblem` entries.

pydantic reports locations as tuples and one error per union member; users
want ``section.key: message (got VALUE; allowed: ...) [source]``, one line
per key, with the allowed values spelled out from the field's type.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from pathlib import PurePath
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .errors import NO_VALUE, ConfigProblem, show_value, unknown_section_message
from .strict import ENV_BOOL_ALLOWED

Locate = Callable[[tuple[str, ...]], str | None]
"""Names the source that supplied a key (``file:PATH``, ``env:NAME``, ...), or ``None``."""


def describe_allowed(annotation: Any, metadata: list[Any] | None = None, env: bool = False) -> str:
    """A short English description of what a field accepts, from its type.

    With *env* the value came from an environment variable, whose booleans
    have their own spellings (:data:`~uringstack.config.strict.ENV_BOOL_ALLOWED`).
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        # Annotated[int, Field(ge=0)] holds its bounds in the FieldInfo's metadata
        meta = [m for item in meta for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        return describe_allowed(base, [*(metadata or []), *meta], env)
    if origin is Literal:
        return ", ".join(str(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_allowed(a, env=env) for a in get_args(annotation))
    if origin is tuple and get_args(annotation) and get_args(annotation)[-1] is not Ellipsis:
        items = get_args(annotation)
        return f"a list of {len(items)}: " + ", ".join(describe_allowed(a, env=env) for a in items)
    if origin in (list, tuple, set, frozenset):
        args = get_args(annotation)
        return f"a list of {_plural(describe_allowed(args[0])) if args else 'values'}"
    if annotation is bool:
        return ENV_BOOL_ALLOWED if env else "true, false"
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
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ", ".join(str(item.value) for item in annotation)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "a path (a string)"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table with keys " + ", ".join(annotation.model_fields)
    return getattr(annotation, "__name__", str(annotation))


def _plural(one: str) -> str:
    """``"an integer >= 0"`` -> ``"integers >= 0"``: what a list holds, said of several."""
    for article in ("a ", "an "):
        if one.startswith(article):
            word, _, rest = one[len(article) :].partition(" ")
            return f"{word}s {rest.replace('(a string)', '(strings)')}".strip()
    return f"values among {one}"  # a Literal's or an enum's values


def _field_allowed(info: FieldInfo, env: bool = False) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    return describe_allowed(info.annotation, list(info.metadata), env)


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
    # "Input should be ..." reads better lower-cased after "key: "; "CPU ids ..." must stay as written.
    if msg[1:2].isupper():
        return msg
    return msg[:1].lower() + msg[1:]


def problems_from_validation(exc: ValidationError, model: type[BaseModel], locate: Locate) -> list[ConfigProblem]:
    """One problem per key of *model* that *exc* complains about, in the order pydantic found them.

    *locate* names the source of each key for the ``[source]`` suffix.
    """
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
                    msg, value = unknown_section_message(dotted, model.model_fields), NO_VALUE
                else:
                    msg = "unknown top-level key (keys belong inside a [section] table)"
                    value = err["input"]
                problems.append(ConfigProblem(dotted, msg, value, f"sections {known}", locate(key)))
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
        source = locate(gkey)
        # (a key's own variable is text; a whole section's JSON is typed as in the file)
        own_variable = (source or "").startswith("env:") and "__" in (source or "")
        allowed = _field_allowed(info, env=own_variable) if info is not None else None
        value = first["input"] if len(first["loc"]) >= len(gkey) else NO_VALUE
        value_errors = [e for e, _ in errs if e["type"] in ("value_error", "assertion_error")]
        if value_errors:
            message = _clean_message(value_errors[0]["msg"])
        elif first["type"] == "is_instance_of" and len(errs) == 1 and allowed and allowed.startswith("a "):
            message = f"input should be {allowed}"  # (a path: pydantic says "an instance of PosixPath")
        elif first["type"] in ("literal_error", "enum", "is_instance_of") and len(errs) == 1 and allowed:
            choices = allowed or ""
            message = f"{show_value(first['input'])} is not one of {choices}"
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
        problems.append(ConfigProblem(dotted, message, value, allowed, source))
    return problems


def _input_at(path: tuple[str, ...], errs: list[Any]) -> Any:
    # For union/list errors the innermost input is a fragment; the user typed the whole value.
    for err, _ in errs:
        if len(err["loc"]) == len(path) or not isinstance(err["loc"][len(path)], int):
            return err["input"]
    return NO_VALUE
