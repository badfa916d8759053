"""The capability probe: what io_uring, CPUs, memory and devices offer this process.

:func:`probe` asks the kernel (it creates rings, opens devices) and returns a
:class:`~uringstack.probe.model.Capabilities`; :func:`probe_cached` keeps the
answer in a JSON file for start-up paths that must not create a dozen rings.
"""

from __future__ import annotations

import json
import os
import platform
import stat
import time
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from uringstack.probe.defects import matching_defects, running_kernel, version_note
from uringstack.probe.kernel import kernel_facts, process_environment
from uringstack.probe.model import (
    BlockDevice,
    Capabilities,
    CpuInfo,
    FlagSupport,
    MemlockInfo,
    NofileInfo,
    UringSupport,
)
from uringstack.probe.system import cpu_info, memlock_info, nofile_info
from uringstack.probe.uring import probe_uring, rings_charged_to_memlock

# A probe report is tens of KiB even with many devices; a larger file is someone else's.
_MAX_REPORT_BYTES = 16 * 1024 * 1024

__all__ = [
    "BlockDevice",
    "Capabilities",
    "CpuInfo",
    "FlagSupport",
    "MemlockInfo",
    "NofileInfo",
    "UringSupport",
    "probe",
    "probe_cached",
]


def _scan_devices(caps: Capabilities) -> None:
    # pyudev and sysfs can fail in containers (no /sys, no libudev): the rest of
    # the report is still worth having, so the failure is recorded, not raised.
    try:
        from uringstack.probe.devices import scan_block_devices

        caps.devices = scan_block_devices()
    except Exception as exc:  # any failure here must not hide the io_uring facts
        caps.device_scan_error = f"{type(exc).__name__}: {exc}"
        return
    if not caps.devices:
        from uringstack.probe.blockdev import sysfs_hidden_reason

        caps.device_scan_error = sysfs_hidden_reason()


def probe(*, devices: bool = True, plugin_manager: Any | None = None) -> Capabilities:
    """Probe this machine for this process and return the capability report.

    Creates a ring, submits one NOP on it and reads its opcode table (so each of
    io_uring_setup, io_uring_enter and io_uring_register is tried; under a seccomp
    filter first in a forked child, as the filter may kill), then one ring per
    probed setup flag (a few milliseconds in all), scans block
    devices through pyudev unless *devices* is false, then lets plugins add
    facts through the ``uringstack_probe`` hook when *plugin_manager* (a
    pluggy manager or the facade from ``make_plugin_manager``) is given.
    Never raises because io_uring is unusable: that is reported in
    ``caps.uring.blocker``/``reason``.
    """
    facts = kernel_facts()
    memlock = memlock_info()
    kernel = running_kernel() if facts.system == "Linux" else None
    caps = Capabilities(
        kernel_release=facts.release,
        kernel_debian_version=kernel.debian if kernel else None,
        kernel_defects=matching_defects(kernel) if kernel else [],
        kernel_version_note=version_note(kernel) if kernel else "",
        system=facts.system,
        python=platform.python_version(),
        uring=probe_uring(facts, memlock_soft_bytes=memlock.soft_bytes),
        memlock=memlock,
        nofile=nofile_info(),
        cpus=cpu_info(),
        environment=process_environment() if facts.system == "Linux" else {},
    )
    if caps.uring.usable and not memlock.cap_ipc_lock and memlock.soft_bytes >= 0:
        # only where the answer matters: the plan fits the rings into the limit
        memlock.rings_charged = rings_charged_to_memlock()
    if devices and facts.system == "Linux":
        _scan_devices(caps)
    if plugin_manager is not None:
        # A raw pluggy manager exposes ``.hook``; uringstack's typed facade
        # (``make_plugin_manager()``) exposes ``.probe(report)``.
        hook = getattr(plugin_manager, "hook", None)
        if hook is not None:
            hook.uringstack_probe(report=caps)
        else:
            plugin_manager.probe(caps)
    return caps


def probe_cached(
    path: str | os.PathLike[str],
    max_age_s: float,
    *,
    devices: bool = True,
    plugin_manager: Any | None = None,
) -> Capabilities:
    """The report from *path* if it is younger than *max_age_s*, else a fresh probe.

    A fresh result is written atomically (temp file + rename) so concurrent
    starters never read half a file; one that cannot be written (a read-only or
    full file system) is a ``RuntimeWarning``, not an error.  A cache that is unreadable, from another
    schema version, another kernel (a reboot into a new kernel changes what
    io_uring accepts), another process environment (seccomp, io_uring sysctls,
    limits, capabilities, CPU mask, ids, boot: :func:`process_environment`) or
    probed without devices when devices are wanted is ignored.
    """
    if not max_age_s >= 0:  # (nan too: no age is within it, so the cache would never be used)
        raise ValueError(f"max_age_s must be a number of seconds >= 0, got {max_age_s!r}")
    cache = Path(path)
    try:
        st = cache.stat()
        age = time.time() - st.st_mtime
        # (only a regular file: reading a FIFO would block, a device is nobody's cache)
        if stat.S_ISREG(st.st_mode) and 0 <= age <= max_age_s:
            cached = Capabilities.model_validate_json(cache.read_bytes())
            if (
                cached.schema_version == Capabilities.model_fields["schema_version"].default
                and cached.kernel_release == platform.release()
                # (a report from an unrestricted shell is no answer under seccomp, after a
                # sysctl change, or with another memlock limit or CPU mask)
                and cached.environment == (process_environment() if platform.system() == "Linux" else {})
                and (not devices or cached.devices or cached.device_scan_error)
            ):
                return cached
    except (OSError, ValidationError, ValueError):
        pass
    caps = probe(devices=devices, plugin_manager=plugin_manager)
    from uringstack.probe.tune_cache import write_atomic

    try:
        # Through a symlink to its target: replacing the link by a regular file would
        # break whoever pointed it somewhere.
        target = Path(os.path.realpath(cache))
        replaceable, keep_mode = _replaceable_report(target)
        if not replaceable:
            # (until session 32 a user's notes.txt given as FILE became a probe report)
            warnings.warn(
                f"probe cache {cache} not written: {cache} exists and is not a uringstack probe report",
                RuntimeWarning,
                stacklevel=2,
            )
            return caps
        write_atomic(target, caps.model_dump_json(indent=2), mode=keep_mode)
    except OSError as exc:  # the findings still count: a cache that cannot be written costs a probe next time
        warnings.warn(f"probe cache {cache} not written: {exc}", RuntimeWarning, stacklevel=2)
    return caps


def _replaceable_report(path: Path) -> tuple[bool, int | None]:
    """Whether the probe may write its report to *path*, and the permission bits the new
    file keeps: ``(True, None)`` when nothing is there, ``(True, mode)`` for an empty file
    or a probe report, ``(False, None)`` for anything else: a user's file is never
    overwritten.

    Any JSON object with the report's top-level keys counts as a report, whatever its
    schema version, so an old cache is refreshed rather than refused.  Raises
    ``OSError`` when *path* cannot be examined (then it is not written either)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return True, None
    if not stat.S_ISREG(st.st_mode):
        return False, None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_size == 0:  # (e.g. made by mktemp for the purpose: nothing to lose)
        return True, mode
    if st.st_size > _MAX_REPORT_BYTES:
        return False, None
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return False, None
    is_report = isinstance(data, dict) and {"schema_version", "kernel_release", "uring"} <= data.keys()
    return (True, mode) if is_report else (False, None)
