"""Provenance: which layer (argument, environment, file) supplied a key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import ENV_PREFIX, NESTED_DELIMITER
from .sources import env_lookup


class Locator:
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
        """``argument``, ``env:NAME`` or ``file:PATH`` for the highest layer setting *key*, else ``None``."""
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
                found = env_lookup(self.environ, name)
                if found is not None:
                    return f"env:{found[0]}"
            # A key the model does not have (an unknown table) came from variables
            # naming keys below it: URINGSTACK_CORE__SQPOLL__MODE for core.sqpoll
            below = ENV_PREFIX + NESTED_DELIMITER.join(k.upper() for k in key) + NESTED_DELIMITER
            names = sorted(n for n in self.environ if n.upper().startswith(below))
            return "env:" + ",".join(names) if names else "env"
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
