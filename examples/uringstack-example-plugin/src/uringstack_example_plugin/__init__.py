"""uringstack-example-plugin: the smallest useful third-party uringstack plugin.

Registered through the ``uringstack`` entry-point group (see pyproject.toml);
uringstack never imports it by name.  It caps (raises) ring sizes, reports a
verdict, and counts completions per worker of each stack.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

from pydantic import Field

from uringstack.feature import Decision, Feature
from uringstack.hookspecs import hookimpl
from uringstack.types import FeatureConfig, FeatureMode

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.probe.model import Capabilities
    from uringstack.ring import Ring
    from uringstack.ring.params import RingParams
    from uringstack.stack import Stack, Worker

PLUGIN = "example"


class ExampleConfig(FeatureConfig):
    """Settings of the example plugin ([example] in the config file).

    FeatureConfig forbids unknown keys: a misspelled key in [example] is an
    error that names it.
    """

    mode: FeatureMode = Field(
        default="auto",
        description="auto: act where io_uring is usable; on: require io_uring; off: do nothing.",
    )
    min_entries: int = Field(
        default=1024, ge=1, le=32768, description="Raise storage rings to at least this many SQEs."
    )
    coop_taskrun: bool = Field(default=True, description="Set IORING_SETUP_COOP_TASKRUN where the kernel accepts it.")


def _decide(caps: Capabilities, config: StackConfig) -> Decision:
    cfg = FEATURE.section(config)
    if cfg.mode == "off":
        return Decision(False, "off in config")
    if not caps.uring.usable:
        return Decision(
            False,
            f"io_uring unusable here: {caps.uring.reason}",
            "run where io_uring is allowed, or set example.mode = 'off'",
        )
    return Decision(True, f"storage rings get >= {cfg.min_entries} entries")


# The section, the verdict and the decision the other hooks reuse, in one object.
FEATURE = Feature(PLUGIN, ExampleConfig, _decide)
uringstack_config_sections, uringstack_check_support = FEATURE.hooks()


@hookimpl
def uringstack_ring_params(params: RingParams, caps: Capabilities, config: StackConfig) -> None:
    cfg = FEATURE.section(config)
    if params.role != "storage" or not FEATURE.decide(caps, config).enabled:
        return
    if params.entries < cfg.min_entries:
        params.reasons.append(f"{PLUGIN}: entries {params.entries} -> {cfg.min_entries} (example.min_entries)")
        params.entries = cfg.min_entries
    if cfg.coop_taskrun:
        if caps.uring.accepts("COOP_TASKRUN"):
            # Imported here: the flag enum needs the compiled binding, which
            # only the ring-building path needs; config loading does not.
            from uringstack.ring.flags import SetupFlag

            params.add(
                SetupFlag.COOP_TASKRUN,
                f"{PLUGIN}: COOP_TASKRUN, completions run when the worker enters the kernel",
            )
        else:
            params.reasons.append(f"{PLUGIN}: no COOP_TASKRUN, the kernel rejects it")


class Completions:
    """Completions per worker index and op, for one stack."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_worker: dict[int, Counter[str]] = {}

    def add(self, worker: int, op: str, n: int) -> None:
        # The hook runs on whichever thread reaped the batch: two may run at once.
        with self.lock:
            self.by_worker.setdefault(worker, Counter())[op] += n


@hookimpl
def uringstack_completion_batch(worker: Worker, op: str, results: list[int], ring: Ring | None) -> None:
    # Per-stack state: two stacks in one process keep separate counts.
    worker.stack.plugin_state(PLUGIN, Completions).add(worker.index, op, len(results))


def completions(stack: Stack) -> dict[int, Counter[str]]:
    """Completions counted so far on *stack*, per worker index and op."""
    return stack.plugin_state(PLUGIN, Completions).by_worker
