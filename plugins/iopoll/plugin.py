"""The iopoll plugin: O_DIRECT I/O on pollable block devices through an IOPOLL ring.

An IOPOLL ring finds completions by polling the device's poll queues instead
of waiting for an interrupt.  It may carry only O_DIRECT reads and writes to
devices whose ``queue/io_poll`` is 1, so it is a separate ring per core,
never the storage ring (fsync or buffered I/O on it fail with EOPNOTSUPP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from uringstack.flags import SetupFlag
from uringstack.hookspecs import hookimpl
from uringstack.types import FeatureMode, FeatureVerdict

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring_params import RingParams

NAME = "iopoll"
ROLE = "iopoll"


class IopollConfig(BaseModel):
    """``[iopoll]``: polled completions for NVMe namespaces with poll queues."""

    model_config = ConfigDict(extra="forbid")

    mode: FeatureMode = Field("auto", description="auto: where a device has poll queues; on: required; off")
    entries: int = Field(128, ge=1, le=32768, description="SQ entries of the per-core IOPOLL ring")


def _section(config: StackConfig) -> IopollConfig:
    return getattr(config, NAME)  # type: ignore[no-any-return]


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    if _section(config).mode == "off":
        return False, "off (config)"
    if not caps.uring.usable or config.core.backend == "fallback":
        return False, "no io_uring rings"
    if not caps.uring.accepts("IOPOLL"):
        return False, "the kernel refuses IORING_SETUP_IOPOLL"
    pollable = [d.name for d in caps.devices if d.io_poll]
    if not pollable:
        why = "; ".join(f"{d.name}: {d.io_poll_reason or 'queue/io_poll is 0'}" for d in caps.devices)
        return False, f"no block device has poll queues ({why or 'no block devices found'})"
    return True, f"poll queues on {', '.join(pollable)}: O_DIRECT I/O there is reaped by polling"


@hookimpl
def uringstack_config_sections() -> tuple[str, type[BaseModel]]:
    return NAME, IopollConfig


@hookimpl
def uringstack_check_support(caps: Capabilities, config: StackConfig) -> FeatureVerdict:
    enabled, reason = _decide(caps, config)
    return FeatureVerdict(
        plugin=NAME, mode=_section(config).mode, enabled=enabled, reason=reason,
        ring_roles=(ROLE,) if enabled else (),
    )


@hookimpl
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    if params.role != ROLE:
        return
    params.entries = _section(config).entries
    params.add(SetupFlag.IOPOLL, "iopoll: completions reaped by polling the device's poll queues")
    params.required |= SetupFlag.IOPOLL
