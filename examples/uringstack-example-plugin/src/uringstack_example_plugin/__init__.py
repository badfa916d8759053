"""uringstack-example-plugin: the smallest useful third-party uringstack plugin.

Registered through the ``uringstack`` entry-point group (see pyproject.toml);
uringstack never imports it by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from uringstack.hookspecs import hookimpl
from uringstack.types import FeatureMode, FeatureVerdict

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring_params import RingParams

PLUGIN = "example"


class ExampleConfig(BaseModel):
    """Settings of the example plugin ([example] in the config file)."""

    # Misspelled keys in [example] become errors that name the key.
    model_config = ConfigDict(extra="forbid")

    mode: FeatureMode = Field(
        default="auto",
        description="auto: act where io_uring is usable; on: require io_uring; off: do nothing.",
    )
    min_entries: int = Field(
        default=1024, ge=1, le=32768, description="Raise storage rings to at least this many SQEs."
    )
    coop_taskrun: bool = Field(
        default=True, description="Set IORING_SETUP_COOP_TASKRUN where the kernel accepts it."
    )


@hookimpl
def uringstack_config_sections() -> tuple[str, type[BaseModel]]:
    return PLUGIN, ExampleConfig


@hookimpl
def uringstack_check_support(caps: Capabilities, config: StackConfig) -> FeatureVerdict:
    cfg = config.section(PLUGIN, ExampleConfig)
    if cfg.mode == "off":
        return FeatureVerdict(plugin=PLUGIN, mode="off", enabled=False, reason="off in config")
    if not caps.uring.usable:
        return FeatureVerdict(
            plugin=PLUGIN,
            mode=cfg.mode,
            enabled=False,
            reason=f"io_uring unusable here: {caps.uring.reason}",
            hint="run where io_uring is allowed, or set example.mode = 'off'",
        )
    return FeatureVerdict(
        plugin=PLUGIN,
        mode=cfg.mode,
        enabled=True,
        reason=f"storage rings get >= {cfg.min_entries} entries",
    )


@hookimpl
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    cfg = config.section(PLUGIN, ExampleConfig)
    if cfg.mode == "off" or not caps.uring.usable or params.role != "storage":
        return
    if params.entries < cfg.min_entries:
        params.reasons.append(
            f"{PLUGIN}: entries {params.entries} -> {cfg.min_entries} (example.min_entries)"
        )
        params.entries = cfg.min_entries
    if cfg.coop_taskrun:
        if caps.uring.accepts("COOP_TASKRUN"):
            # Imported here: the flag enum needs the compiled binding, which
            # only the ring-building path needs; config loading does not.
            from uringstack.flags import SetupFlag

            params.add(
                SetupFlag.COOP_TASKRUN,
                f"{PLUGIN}: COOP_TASKRUN, completions run when the worker enters the kernel",
            )
        else:
            params.reasons.append(f"{PLUGIN}: no COOP_TASKRUN, the kernel rejects it")
