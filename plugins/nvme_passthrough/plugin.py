"""The nvme_passthrough plugin: NVMe commands straight to a namespace's generic char device.

Reads and writes become NVMe Read/Write commands sent with IORING_OP_URING_CMD
on a ring with 128-byte SQEs and 32-byte CQEs, bypassing the block layer and
any filesystem.  Writable opens of a namespace that is mounted or held are
refused by the core's one rule for devices in use (``[core]
allow_writes_in_use``), before this plugin is asked to serve them.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from uringstack.config import RingEntries
from uringstack.feature import Feature
from uringstack.hookspecs import hookimpl
from uringstack.plugins.nvme_passthrough.backend import PassthroughBackend
from uringstack.plugins.nvme_passthrough.device import open_char_device
from uringstack.probe.defects import PASSTHROUGH, POLLED_PASSTHROUGH, DefectFinding, refusal
from uringstack.ring.flags import SetupFlag
from uringstack.ring.interrupts import close_stored
from uringstack.types import FeatureConfig, FeatureMode, PlanError

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring.params import RingParams
    from uringstack.types import Target

log = logging.getLogger(__name__)

NAME = "nvme_passthrough"
ROLE = "passthrough"


class PassthroughConfig(FeatureConfig):
    """``[nvme_passthrough]``: NVMe passthrough on /dev/ngXnY."""

    mode: FeatureMode = Field("auto", description="auto: where a char device is accessible; on: required; off")
    allow_writes_in_use: bool = Field(
        False,
        description=(
            "deprecated, no effect: [core] allow_writes_in_use is the one switch for writes to a "
            "device in use (block devices and namespaces alike); accepted so old config files load"
        ),
    )
    entries: RingEntries = Field(
        128, description="SQ entries of the per-core passthrough ring: a power of two from 1 to 32768"
    )

    iopoll: bool = Field(
        False,
        description=(
            "also poll for completions (needs poll queues); ignored in 'auto' (refused in 'on') "
            "where a known kernel defect rules out polled passthrough"
        ),
    )

    @field_validator("allow_writes_in_use")
    @classmethod
    def _moved_to_core(cls, value: bool) -> bool:
        # A safety switch that does nothing must say so where it is set: the open it
        # meant to allow is refused, and the refusal names [core] allow_writes_in_use.
        if value:
            warnings.warn(
                "[nvme_passthrough] allow_writes_in_use is deprecated and has no effect: "
                "set [core] allow_writes_in_use = true to allow writes to a device in use",
                FutureWarning,
                stacklevel=2,
            )
        return value


def polled_passthrough_defect(caps: Capabilities, config: StackConfig) -> DefectFinding | None:
    """The known defect of this kernel that rules out ``iopoll = true``, unless accepted in [core]."""
    return caps.defect_ruling_out(POLLED_PASSTHROUGH, config.core.accept_kernel_defects)


def passthrough_defect(caps: Capabilities, config: StackConfig) -> DefectFinding | None:
    """The known defect of this kernel that rules out passthrough itself, unless accepted in [core]."""
    return caps.defect_ruling_out(PASSTHROUGH, config.core.accept_kernel_defects)


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    enabled, reason = _decide_passthrough(caps, config)
    cfg = FEATURE.section(config)
    defect = polled_passthrough_defect(caps, config) if cfg.iopoll else None
    if not enabled or defect is None:
        return enabled, reason
    why = refusal(defect, "iopoll = true (polled passthrough)")
    if cfg.mode == "on":
        # 'on' with iopoll = true asks for exactly the pattern that crashes this kernel.
        return False, why
    return True, f"{reason}; interrupt-driven ring: {why}"


def _decide_passthrough(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    if FEATURE.section(config).mode == "off":
        return False, "off (config)"
    u = caps.uring
    if not u.usable or config.core.backend == "fallback":
        return False, "no io_uring rings"
    missing = [f for f in ("SQE128", "CQE32") if not u.accepts(f)]
    if missing or not u.supports_op("URING_CMD"):
        return False, f"the kernel lacks {', '.join(missing) or 'IORING_OP_URING_CMD'}"
    nvme = [d for d in caps.devices if d.nvme]
    if not nvme:
        return False, "no NVMe namespace on this machine"
    usable = [d for d in nvme if d.generic_char and d.generic_char_accessible]
    if not usable:
        why = "; ".join(f"{d.name}: {d.generic_char_error or 'no generic char device (kernel < 5.13?)'}" for d in nvme)
        return False, f"no accessible /dev/ngXnY ({why})"
    defect = passthrough_defect(caps, config)
    if defect is not None:
        # Trust first: a kernel that can drop acknowledged writes gets no passthrough at all
        # ('auto': block I/O instead; 'on': refused), only the explicit override allows it.
        return False, refusal(defect, "NVMe passthrough")
    return True, "passthrough via " + ", ".join(f"{d.generic_char} ({d.name})" for d in usable)


FEATURE = Feature(NAME, PassthroughConfig, _decide, ring_roles=(ROLE,))
uringstack_config_sections, uringstack_check_support = FEATURE.hooks()


@hookimpl
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    if params.role != ROLE:
        return
    cfg = FEATURE.section(config)
    params.entries = cfg.entries
    params.add(
        SetupFlag.SQE128 | SetupFlag.CQE32, "nvme_passthrough: NVMe commands need 128-byte SQEs and 32-byte CQEs"
    )
    params.required |= SetupFlag.SQE128 | SetupFlag.CQE32
    if not cfg.iopoll:
        return
    defect = polled_passthrough_defect(caps, config)
    if defect is not None:
        # SQE128/CQE32 without IOPOLL: every command completes by interrupt.
        params.reasons.append(f"nvme_passthrough: no IOPOLL: {refusal(defect, 'iopoll = true')}")
    else:
        params.add(SetupFlag.IOPOLL, "nvme_passthrough: iopoll = true (config)")


PASSTHROUGH_CHOICES = ("auto", "on", "off")


@hookimpl
def uringstack_open_options() -> list[str]:
    return ["passthrough"]


def _want(target: Target) -> str | None:
    """The per-open ``passthrough=`` option, normalised (True/False accepted for on/off)."""
    value = target.options.get("passthrough")
    if value is None:
        return None
    if value is True:
        return "on"
    if value is False:
        return "off"
    if value not in PASSTHROUGH_CHOICES:
        raise ValueError(f"passthrough={value!r}: allowed are {', '.join(map(repr, PASSTHROUGH_CHOICES))}")
    return str(value)


def _char_device_for(target: Target) -> tuple[str | None, str]:
    """The generic char device behind a block target, as the probe matched it, or why there is none."""
    dev = target.device
    if dev is None:
        return None, (
            f"the probe's report lists no device {target.path} (a partition, a device added "
            "since the probe, or a probe without devices)"
        )
    if dev.generic_char:
        return dev.generic_char, f"probe: {dev.name} -> {dev.generic_char}"
    if not dev.nvme:
        return None, f"{target.path} is not an NVMe namespace ({dev.model or dev.name})"
    return None, f"{dev.name} has no usable generic char device: {dev.generic_char_error or 'kernel < 5.13?'}"


def _cannot_open(char: str, target: Target) -> str | None:
    """None if this process may open *char* as *target* asks, else why not.

    Read-only access is the probe's fact (it opened each ``/dev/ngXnY`` once,
    read-only), so ``uringstack plan`` opens no device.  Read-write access
    was never probed: a writable open tries it here, once.
    """
    dev = target.device
    if dev is None:
        return f"the probe's report lists no namespace with the generic char device {char}"
    if not dev.generic_char_accessible:
        return dev.generic_char_error or f"this process cannot open {char}"
    if target.writable:
        tried: list[int] = []
        try:
            open_char_device(char, True, tried)
        except OSError as exc:
            return str(exc)
        finally:
            close_stored(tried)
    return None


def decide_backend(target: Target, caps: Capabilities, config: StackConfig) -> tuple[str | None, str]:
    """Which char device serves *target* through passthrough: ``(path, reason)`` or ``(None, why not)``.

    Raises where the caller required passthrough and it is impossible: a
    ``/dev/ngXnY`` target (nothing else can do I/O on it) or
    ``passthrough="on"``.
    """
    want = _want(target)
    cfg = FEATURE.section(config)
    if target.kind == "nvme_char":
        if want == "off":
            raise PlanError(f"{target.path} is an NVMe generic char device: only passthrough can serve it")
        want = "on"
    elif target.kind != "block" or want in (None, "off"):
        return None, "passthrough: not asked for (open a block device with passthrough='auto' or 'on')"
    assert want is not None

    def refuse(why: str) -> tuple[None, str]:
        if want == "on":
            raise PlanError(f"NVMe passthrough for {target.path} is required but impossible: {why}")
        log.info("%s: passthrough='auto' falls back to block I/O: %s", target.path, why)
        return None, f"passthrough: {why}; block I/O instead"

    enabled, why, _ = FEATURE.decide(caps, config)
    if not enabled:
        return refuse(f"nvme_passthrough is not enabled ({why})")
    if cfg.mode == "off":
        return refuse("[nvme_passthrough] mode = 'off'")
    if target.kind == "nvme_char":
        char, how = target.path, "generic char device given"
    else:
        found, how = _char_device_for(target)
        if found is None:
            return refuse(how)
        char = found
    cannot = _cannot_open(char, target)
    if cannot is not None:
        return refuse(cannot)
    return char, f"NVMe passthrough on {char} ({how})"


@hookimpl(tryfirst=True)
def uringstack_select_backend(target: Target, caps: Capabilities, config: StackConfig) -> PassthroughBackend | None:
    char, reason = decide_backend(target, caps, config)
    if char is None:
        return None
    return PassthroughBackend(reason=f"{reason}; passthrough ring of the worker", char_path=char)
