"""The nvme_passthrough plugin: NVMe commands straight to a namespace's generic char device.

Reads and writes become NVMe Read/Write commands sent with IORING_OP_URING_CMD
on a ring with 128-byte SQEs and 32-byte CQEs, bypassing the block layer and
any filesystem — hence the safety rule: writes are refused on a namespace
that is mounted or held unless ``allow_writes_in_use = true``.
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

NAME = "nvme_passthrough"
ROLE = "passthrough"


class PassthroughConfig(BaseModel):
    """``[nvme_passthrough]``: NVMe passthrough on /dev/ngXnY."""

    model_config = ConfigDict(extra="forbid")

    mode: FeatureMode = Field("auto", description="auto: where a char device is accessible; on: required; off")
    allow_writes_in_use: bool = Field(False, description="allow writes to a mounted or held namespace (dangerous)")
    entries: int = Field(128, ge=1, le=32768, description="SQ entries of the per-core passthrough ring")
    iopoll: bool = Field(False, description="also poll for completions (needs poll queues)")


def _section(config: StackConfig) -> PassthroughConfig:
    return getattr(config, NAME)  # type: ignore[no-any-return]


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    if _section(config).mode == "off":
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
        why = "; ".join(
            f"{d.name}: {d.generic_char_error or 'no generic char device (kernel < 5.13?)'}" for d in nvme
        )
        return False, f"no accessible /dev/ngXnY ({why})"
    return True, "passthrough via " + ", ".join(f"{d.generic_char} ({d.name})" for d in usable)


@hookimpl
def uringstack_config_sections() -> tuple[str, type[BaseModel]]:
    return NAME, PassthroughConfig


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
    cfg = _section(config)
    params.entries = cfg.entries
    params.add(
        SetupFlag.SQE128 | SetupFlag.CQE32, "nvme_passthrough: NVMe commands need 128-byte SQEs and 32-byte CQEs"
    )
    params.required |= SetupFlag.SQE128 | SetupFlag.CQE32
    if cfg.iopoll:
        params.add(SetupFlag.IOPOLL, "nvme_passthrough: iopoll = true (config)")
