"""One udev context per thread, for every reader of the udev database.

``pyudev.Context()`` loads libudev again each time through
``ctypes.util.find_library``, which on Linux runs ``/sbin/ldconfig -p``: one
process per context.  The probe, the usage check before a passthrough open and
the tuning cache's device key each needed a context, so a test run started
hundreds of ``ldconfig`` processes (204 in the NVMe VM's host groups, where a
process start costs a tenth of a second).  libudev's context must not be shared
between threads, hence one per thread.
"""

from __future__ import annotations

import threading

import pyudev

_local = threading.local()


def udev_context() -> pyudev.Context:
    """This thread's udev context, made on first use."""
    ctx: pyudev.Context | None = getattr(_local, "context", None)
    if ctx is None:
        ctx = _local.context = pyudev.Context()
    return ctx
