"""The fallback plugin: serve targets from a thread pool where io_uring cannot.

Chosen automatically when the probe finds io_uring unusable (old kernel,
seccomp, the io_uring_disabled sysctl, not Linux), and on demand with
``[fallback] mode = "on"`` or ``[core] backend = "fallback"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from uringstack.config.errors import ConfigError, ConfigProblem
from uringstack.config.load import backend_conflict
from uringstack.feature import Feature
from uringstack.hookspecs import hookimpl
from uringstack.plugins.fallback.backend import RESOURCE_KEY, FallbackBackend
from uringstack.plugins.fallback.pool import ThreadPool
from uringstack.types import FeatureConfig, FeatureMode

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


def _check_conflicts(mode: str, backend: str) -> None:
    """``core.backend`` and ``[fallback] mode`` that contradict each other are a config error
    (the loader reports it first, with sources; this covers a config built without it)."""
    why = backend_conflict(mode, backend)
    if why is not None:
        raise ConfigError([ConfigProblem(f"{NAME}.mode", why, mode)], "conflicting uringstack config")


def _decide(caps: Capabilities, config: StackConfig) -> tuple[bool, str]:
    mode = FEATURE.section(config).mode
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


FEATURE = Feature(NAME, FallbackConfig, _decide)
uringstack_config_sections, uringstack_check_support = FEATURE.hooks()


@hookimpl(trylast=True)
def uringstack_select_backend(target: Target, caps: Capabilities, config: StackConfig) -> FallbackBackend | None:
    enabled, reason, _ = FEATURE.decide(caps, config)
    if not enabled:
        return None
    threads = FEATURE.section(config).threads
    return FallbackBackend(reason=f"thread pool (os.preadv/os.pwritev): {reason}", threads=threads)


@hookimpl
def uringstack_stack_teardown(stack: Stack) -> None:
    for worker in stack.workers:
        pool = worker.resources.pop(RESOURCE_KEY, None)
        if isinstance(pool, ThreadPool):
            pool.shutdown(wait=True)
