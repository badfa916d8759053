"""The fallback plugin: serve targets from a thread pool where io_uring cannot.

Chosen automatically when the probe finds io_uring unusable (old kernel,
seccomp, the io_uring_disabled sysctl, not Linux), and on demand with
``[fallback] mode = "on"`` or ``[core] backend = "fallback"``.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from uringstack.config.errors import ConfigError, ConfigProblem
from uringstack.hookspecs import hookimpl
from uringstack.plugins.fallback.backend import RESOURCE_KEY, FallbackBackend
from uringstack.types import FeatureConfig, FeatureMode, FeatureVerdict

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.stack import Stack
    from uringstack.types import Target

NAME = "fallback"


class FallbackConfig(FeatureConfig):
    """``[fallback]``: the portable thread-pool backend."""

    mode: FeatureMode = Field("auto", description="auto: only where io_uring is unusable; on: always; off: never")
    threads: int = Field(32, ge=1, le=1024, description="threads per worker (the queue depth it can reach)")


def _section(config: StackConfig) -> FallbackConfig:
    return config.section(NAME, FallbackConfig)


def _check_conflicts(mode: str, backend: str) -> None:
    """``core.backend`` and ``[fallback] mode`` that contradict each other are a config error."""
    if mode == "on" and backend == "uring":
        why = "core.backend = 'uring' requires io_uring for every target, the fallback never serves one"
    elif mode == "off" and backend == "fallback":
        why = "core.backend = 'fallback' needs this plugin to serve every target"
    else:
        return
    raise ConfigError(
        [ConfigProblem(f"{NAME}.mode", f"{mode!r} conflicts with core.backend = {backend!r}: {why}", mode)],
        "conflicting uringstack config",
    )


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    mode = _section(config).mode
    _check_conflicts(mode, config.core.backend)
    if mode == "off":
        return False, "off (config)"
    if config.core.backend == "uring":
        return False, "core.backend = 'uring': io_uring serves every target"
    if mode == "on" or config.core.backend == "fallback":
        return True, "configured: every target is served by the thread pool"
    if not caps.uring.usable:
        return True, f"io_uring is unusable here: {caps.uring.reason}"
    return False, "io_uring works here, the thread pool is not needed"


@hookimpl
def uringstack_config_sections() -> tuple[str, type[BaseModel]]:
    return NAME, FallbackConfig


@hookimpl
def uringstack_check_support(caps: Capabilities, config: StackConfig) -> FeatureVerdict:
    enabled, reason = _decide(caps, config)
    return FeatureVerdict(plugin=NAME, mode=_section(config).mode, enabled=enabled, reason=reason)


@hookimpl(trylast=True)
def uringstack_select_backend(target: Target, caps: Capabilities, config: StackConfig) -> FallbackBackend | None:
    enabled, reason = _decide(caps, config)
    if not enabled:
        return None
    return FallbackBackend(reason=f"thread pool (os.preadv/os.pwritev): {reason}", threads=_section(config).threads)


@hookimpl
def uringstack_stack_teardown(stack: Stack) -> None:
    for worker in stack.workers:
        pool = worker.resources.pop(RESOURCE_KEY, None)
        if isinstance(pool, concurrent.futures.ThreadPoolExecutor):
            pool.shutdown(wait=True)
