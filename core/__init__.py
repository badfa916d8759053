"""uringstack: the fast Linux storage path for Python.

Typical use::

    import uringstack

    with uringstack.open_stack() as stack:          # probe, config, plan, build
        with stack.open("data.bin", direct=True) as f:
            buf = uringstack.aligned_buffer(4096)
            f.read_into(buf, 0)

See README.md and docs/ for the plan, the plugins and the configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# `uringstack.probe` is the probe subpackage (call `uringstack.probe.probe()`).
# Imported lazily: `import uringstack` must work (and say why) even where the
# C binding or io_uring is unavailable, e.g. to run `uringstack probe`.
_EXPORTS = {
    "open_stack": "uringstack.stack",
    "Stack": "uringstack.stack",
    "Worker": "uringstack.stack",
    "FileHandle": "uringstack.stack.handle",
    "aligned_buffer": "uringstack.ring.buffers",
    "RegisteredBuffer": "uringstack.ring.buffers",
    "Ring": "uringstack.ring",
    "RingParams": "uringstack.ring.params",
    "hookimpl": "uringstack.hookspecs",
    "load_config": "uringstack.config",
    "make_plan": "uringstack.plan",
    "UringIOError": "uringstack.errors",
    "CancelTimeoutError": "uringstack.errors",
    "ShortIOError": "uringstack.errors",
    "AlignmentError": "uringstack.errors",
    "RingClosedError": "uringstack.errors",
    "ForkedChildError": "uringstack.errors",
    "DeviceInUseError": "uringstack.errors",
    "NamespaceInUseError": "uringstack.errors",
    "PlanError": "uringstack.types",
    "FileIO": "uringstack.fileobj.fileio",
    "open": "uringstack.fileobj.openfile",
}

__all__ = [
    "AlignmentError",
    "CancelTimeoutError",
    "DeviceInUseError",
    "FileHandle",
    "FileIO",
    "ForkedChildError",
    "NamespaceInUseError",
    "PlanError",
    "RegisteredBuffer",
    "Ring",
    "RingClosedError",
    "RingParams",
    "ShortIOError",
    "Stack",
    "UringIOError",
    "Worker",
    "aligned_buffer",
    "hookimpl",
    "load_config",
    "make_plan",
    "open",
    "open_stack",
]

if TYPE_CHECKING:
    from uringstack import aio as aio
    from uringstack import wal as wal
    from uringstack.config import load_config
    from uringstack.errors import (
        AlignmentError,
        CancelTimeoutError,
        DeviceInUseError,
        ForkedChildError,
        NamespaceInUseError,
        RingClosedError,
        ShortIOError,
        UringIOError,
    )
    from uringstack.fileobj.fileio import FileIO
    from uringstack.fileobj.openfile import open
    from uringstack.hookspecs import hookimpl
    from uringstack.plan import make_plan
    from uringstack.ring import Ring
    from uringstack.ring.buffers import RegisteredBuffer, aligned_buffer
    from uringstack.ring.params import RingParams
    from uringstack.stack import Stack, Worker, open_stack
    from uringstack.stack.handle import FileHandle
    from uringstack.types import PlanError


# Subpackages the docs reach as attributes after a bare `import uringstack`
# (`uringstack.aio.open(...)`, as `aiofiles.open`), imported on first use.
_SUBPACKAGES = frozenset({"aio", "wal"})


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBPACKAGES:
        return importlib.import_module(f"uringstack.{name}")  # (the import binds it here too)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'uringstack' has no attribute {name!r}")

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
