"""Access to the compiled binding, with an actionable error when it is missing."""

from __future__ import annotations

try:
    from uringstack.ring._uring import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "uringstack's C binding (uringstack.ring._uring) is not built. It compiles against the "
        "system liburing: install it (Debian: apt-get install -y liburing-dev) and reinstall "
        "uringstack (pip install -e .)."
    ) from exc

__all__ = ["ffi", "lib"]
