"""The iopoll plugin: O_DIRECT I/O on pollable block devices through an IOPOLL ring.

An IOPOLL ring finds completions by polling the device's poll queues instead
of waiting for an interrupt.  It may carry only O_DIRECT reads and writes to
devices whose ``queue/io_poll`` is 1, so it is a separate ring per core,
never the storage ring (fsync or buffered I/O on it fail with EOPNOTSUPP).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from pydantic import Field

from uringstack.config import RingEntries
from uringstack.feature import Feature
from uringstack.hookspecs import hookimpl
from uringstack.plugins.iopoll.backend import IopollBackend
from uringstack.probe.blockdev import backing_disk
from uringstack.probe.defects import POLLED_FILE_READS, DefectFinding, refusal
from uringstack.ring.flags import SetupFlag
from uringstack.tune.model import TuneDimension
from uringstack.types import FeatureConfig, FeatureMode, PlanError

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import BlockDevice, Capabilities
    from uringstack.ring.params import RingParams
    from uringstack.tune.model import TuneTarget
    from uringstack.types import Target

log = logging.getLogger(__name__)

NAME = "iopoll"
ROLE = "iopoll"


class IopollConfig(FeatureConfig):
    """``[iopoll]``: polled completions for NVMe namespaces with poll queues."""

    mode: FeatureMode = Field("auto", description="auto: where a device has poll queues; on: required; off")
    entries: RingEntries = Field(
        128, description="SQ entries of the per-core IOPOLL ring: a power of two from 1 to 32768"
    )


LABELS = {"on": "with IOPOLL", "off": "without"}
RULE = "rule: poll where queue/io_poll is 1"


def measured(caps: Capabilities, disk: str | None) -> tuple[bool | None, str]:
    """For ``auto`` on the whole disk *disk*: did ``uringstack tune`` find polling faster
    there (``None``: no measurement of it), and the reason.

    IOPOLL is chosen per device, so only the comparisons measured on targets on
    *disk* count (``caps.tuning.comparisons(..., device=disk)``), and polling
    must have won on every one of them.
    """
    state = caps.tuning
    found = state.comparisons(NAME, device=disk) if state is not None and disk else []
    if found:
        return all(c.best == "on" for c in found), "auto: " + "; ".join(c.describe(LABELS) for c in found)
    if state is None:
        why = "no measurement looked up"
    elif state.records:
        why = f"no measurement of {disk or 'its device'}"
    else:
        why = state.no_measurement(NAME)
    return None, f"auto, {why}: {RULE}"


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    enabled, why = _decide_devices(caps, config)
    defect = polled_file_reads_defect(caps, config) if enabled else None
    if defect is not None:
        # said in the verdict (uringstack probe / plan), not only per open in a debug log
        why += f"; block devices only: {refusal(defect, 'polling reads of files on a file system')}"
    return enabled, why


def _decide_devices(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    mode = FEATURE.section(config).mode
    if mode == "off":
        return False, "off (config)"
    if not caps.uring.usable or config.core.backend == "fallback":
        return False, "no io_uring rings"
    if not caps.uring.accepts("IOPOLL"):
        return False, "the kernel refuses IORING_SETUP_IOPOLL"
    pollable = [d.name for d in caps.devices if d.io_poll]
    if not pollable:
        why = "; ".join(f"{d.name}: {d.io_poll_reason or 'queue/io_poll is 0'}" for d in caps.devices)
        return False, f"no block device has poll queues ({why or caps.device_scan_error or 'no block devices found'})"
    if mode == "on":
        return True, f"poll queues on {', '.join(pollable)}: O_DIRECT I/O there is reaped by polling"
    # auto: an IOPOLL ring is worth making while some pollable device is measured faster
    # polled, or not measured at all (then the rule applies to it)
    decided = {name: measured(caps, name) for name in pollable}
    polled = [name for name in pollable if decided[name][0] is not False]
    reasons = "; ".join(dict.fromkeys(why for _, why in decided.values()))
    if not polled:
        return False, reasons
    return True, f"poll queues on {', '.join(polled)}: O_DIRECT I/O there is reaped by polling ({reasons})"


FEATURE = Feature(NAME, IopollConfig, _decide, ring_roles=(ROLE,))
uringstack_config_sections, uringstack_check_support = FEATURE.hooks()


@hookimpl
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    if params.role != ROLE:
        return
    params.entries = FEATURE.section(config).entries
    params.add(SetupFlag.IOPOLL, "iopoll: completions reaped by polling the device's poll queues")
    params.required |= SetupFlag.IOPOLL


def serve_decision(target: Target, caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    """Should the IOPOLL ring serve *target*?  ``(answer, reason)``; raises when ``on`` cannot be met.

    Only O_DIRECT block devices and files whose (whole) disk has
    ``queue/io_poll`` = 1 qualify; buffered targets stay on the storage ring
    (IOPOLL cannot carry them), and NVMe char devices belong to passthrough.
    """
    mode = FEATURE.section(config).mode
    if mode == "off":
        return False, "iopoll: off (config)"
    if target.kind == "nvme_char":
        return False, "iopoll: NVMe char devices are served by passthrough"
    if not target.direct:
        return False, "iopoll: not O_DIRECT; buffered I/O cannot be polled, it stays on the storage ring"
    enabled, why, _ = FEATURE.decide(caps, config)
    if not enabled:
        return False, f"iopoll: {why}"
    if target.kind == "file":
        defect = polled_file_reads_defect(caps, config)
        if defect is not None:
            # Trust first: a read this kernel can report as the end of the file is worse than
            # an interrupt; block devices are not affected (no holes, their reads always reach
            # the device), so only files leave the IOPOLL ring.
            why = refusal(defect, f"polling O_DIRECT reads of {target.path}")
            if mode == "on":
                raise PlanError(f"[iopoll] mode = 'on' but {why}")
            return False, f"iopoll: {why}; the storage ring serves it"
    probe_path = target.path
    if target.kind == "file" and not os.path.exists(probe_path):
        probe_path = os.path.dirname(probe_path) or "."  # about to be created: its filesystem decides
    ok, reason = poll_fact(probe_path, caps, target.device)
    if not ok and mode == "on":
        raise PlanError(
            f"[iopoll] mode = 'on' but {target.path} cannot be polled: {reason}. Set iopoll.mode to "
            "'auto' to serve it from the storage ring instead"
        )
    if ok and mode == "auto":
        won, why = measured(caps, _disk_name(probe_path, target))
        if won is False:
            return False, f"iopoll: {why}; the storage ring serves it"
        return True, f"iopoll: {reason} ({why})"
    return ok, f"iopoll: {reason}"


def polled_file_reads_defect(caps: Capabilities, config: StackConfig) -> DefectFinding | None:
    """The known defect of this kernel that rules out polling files' reads, unless accepted in [core]."""
    return caps.defect_ruling_out(POLLED_FILE_READS, config.core.accept_kernel_defects)


def _disk_name(path: str, target: Target) -> str | None:
    """The whole disk *target* is on (the name its measurements are filed under), if known."""
    if target.device is not None:
        return target.device.name
    try:
        disk, _ = backing_disk(path)
    except OSError:
        return None
    return disk


def poll_fact(path: str, caps: Capabilities, device: BlockDevice | None = None) -> tuple[bool, str]:
    """Can O_DIRECT I/O on *path* be polled?  ``(answer, reason)`` from the probe's report only.

    *device* is the probed device behind *path* when the caller knows it (a
    block target); otherwise the whole disk under *path* (a partition's disk,
    a file's filesystem's disk) is looked up in ``caps.devices``.  The
    probe's ``io_poll`` fact decides: this plugin reads no sysfs attribute
    itself, so the plan and every open agree with ``uringstack probe``.
    """
    dev = device
    if dev is None:
        try:
            disk, why = backing_disk(path)
        except OSError as exc:
            return False, f"cannot stat {path}: {exc.strerror}"
        if disk is None:
            return False, why
        dev = next((d for d in caps.devices if d.name == disk), None)
        if dev is None:
            listed = caps.device_scan_error or f"it lists {', '.join(d.name for d in caps.devices) or 'no device'}"
            return False, f"{why}, which the probe did not list ({listed}), so it is not polled"
    if dev.io_poll:
        return True, f"{path} is on {dev.name}: queue/io_poll is 1"
    return False, f"{path} is on {dev.name}: {dev.io_poll_reason or 'queue/io_poll is 0'}"


@hookimpl
def uringstack_select_backend(target: Target, caps: Capabilities, config: StackConfig) -> IopollBackend | None:
    # Not tryfirst: nvme_passthrough (tryfirst) answers first for targets that asked
    # for passthrough, and when it passes, a pollable O_DIRECT target lands here.
    ok, reason = serve_decision(target, caps, config)
    if not ok:
        log.debug("%s: %s", target.path, reason)
        return None
    return IopollBackend(reason=f"IOPOLL ring of the worker ({reason})")


@hookimpl
def uringstack_tune_candidates(target: TuneTarget, caps: Capabilities, config: StackConfig) -> TuneDimension | None:
    # only where polling is possible for this target: an O_DIRECT read of a pollable device
    if not target.workload.direct or not caps.uring.accepts("IOPOLL"):
        return None
    if not poll_fact(target.path, caps)[0]:
        return None
    if target.kind in ("file", "directory") and polled_file_reads_defect(caps, config) is not None:
        return None  # (not a choice here: serve_decision keeps files off the IOPOLL ring)
    return TuneDimension.off_or_on(
        NAME,
        "completions polled from the device's poll queues (IOPOLL ring)",
        {"off": "without", "on": "with IOPOLL"},
        {"iopoll.mode": "auto"},
    )
