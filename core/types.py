"""Small shared types of the plugin contract: modes, verdicts, targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from uringstack.errors import UringStackError

if TYPE_CHECKING:
    from uringstack.probe.model import BlockDevice
    from uringstack.ring.io_backend import FileIO
    from uringstack.stack import Worker

FeatureMode = Literal["auto", "on", "off"]
"""``auto``: use where the probe says it helps; ``on``: required (a clear error if
impossible); ``off``: never."""

TargetKind = Literal["file", "block", "nvme_char"]


class FeatureConfig(BaseModel):
    """Base of a plugin's config section: a misspelled key is an error, not ignored.

    Feature plugins add ``mode: FeatureMode`` (with their own description of
    what ``auto`` decides) and read the section with
    ``config.section(NAME, TheirConfig)``.
    """

    model_config = ConfigDict(extra="forbid")


class FeatureVerdict(BaseModel):
    """One plugin's answer to "will you be used here, and why (not)?"."""

    model_config = ConfigDict(frozen=True)

    plugin: str
    mode: FeatureMode
    enabled: bool
    reason: str
    hint: str = ""
    ring_roles: tuple[str, ...] = ()
    """Extra rings per core this feature needs when enabled (e.g. ``("iopoll",)``);
    the core adds them to the plan and runs ``uringstack_ring_params`` on each."""


@dataclass
class Target:
    """What a user asked :meth:`Stack.open` for, resolved against the probe.

    ``device`` is the probed block device or namespace backing the target
    (``None`` for a file whose device the probe did not list); ``options``
    carries per-open choices such as ``passthrough="auto"``.
    """

    path: str
    kind: TargetKind
    direct: bool
    writable: bool
    device: BlockDevice | None = None
    create: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class PlanError(UringStackError):
    """The configuration asks for something this machine cannot do (``on`` impossible)."""


class BackendFactory(Protocol):
    """What :func:`uringstack_select_backend` returns: a named opener of handles."""

    name: str
    reason: str

    def open(self, target: Target, worker: Worker) -> FileIO:
        """Open *target* for *worker*; the result implements :class:`uringstack.ring.io_backend.FileIO`.

        Called on the thread that called :meth:`Stack.open`, not on the worker's thread.
        """
        ...
