"""``Feature``: the hook boilerplate every feature plugin used to repeat.

A feature plugin has a config section with a ``mode``, one decision ("will
it be used here, and why?") that several hooks need, and a verdict built
from that decision.  :class:`Feature` holds the three once::

    FEATURE = Feature("sqpoll", SqpollConfig, _decide)
    uringstack_config_sections, uringstack_check_support = FEATURE.hooks()

and the plugin's other hooks call ``FEATURE.section(config)`` and
``FEATURE.decide(caps, config)``.  The decision is computed once per
(report, config) pair and handed to every later hook that asks with the
same pair (the plan's ``ring_params`` per ring, ``select_backend`` per open),
so the verdict the plan prints is the one the hooks act on.  The report and
the config are therefore treated as read-only once a plan is made, which
they are: the probe fills the report before planning and configs are
immutable models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar, cast, get_args

from pydantic import BaseModel

from uringstack.hookspecs import hookimpl
from uringstack.ring.params import MEMLOCK_HINT
from uringstack.types import FeatureMode, FeatureVerdict

if TYPE_CHECKING:
    from uringstack.config.model import StackConfig
    from uringstack.probe.model import Capabilities

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Decision(NamedTuple):
    """What a feature's ``decide`` function returns: used here or not, why, and a hint."""

    enabled: bool
    reason: str
    hint: str = ""


Decide = Callable[["Capabilities", "StackConfig"], "Decision | tuple[bool, str]"]


class Feature(Generic[ConfigT]):
    """A feature plugin's name, config model and decision, with the hooks they imply.

    ``decide(caps, config)`` returns a :class:`Decision` (or ``(enabled,
    reason)``); it must not do I/O (``uringstack plan`` is a dry run).
    ``ring_roles`` are the extra rings per core the feature needs when
    enabled (``FeatureVerdict.ring_roles``); where the plan finds no room for
    them under RLIMIT_MEMLOCK (``caps.memlock.no_room_for`` names the
    feature) the decision is "disabled" with that reason.  The model must have a ``mode``
    field (``auto``/``on``/``off``): the verdict reports it.
    """

    def __init__(self, name: str, model: type[ConfigT], decide: Decide, *, ring_roles: tuple[str, ...] = ()) -> None:
        if "mode" not in model.model_fields:
            raise TypeError(f"{model.__name__} (section [{name}]) has no 'mode' field")
        self.name = name
        self.model = model
        self._decide = decide
        self.ring_roles = ring_roles
        self._last: tuple[Capabilities, StackConfig, Decision] | None = None
        self._lock = threading.Lock()

    def section(self, config: StackConfig) -> ConfigT:
        """This feature's validated config section."""
        return config.section(self.name, self.model)

    def mode(self, config: StackConfig) -> FeatureMode:
        """``auto``, ``on`` or ``off``, as configured."""
        value = getattr(self.section(config), "mode")  # noqa: B009 - a field of a generic model
        if value not in get_args(FeatureMode):
            raise TypeError(f"[{self.name}] mode is {value!r}, not a FeatureMode")
        return cast("FeatureMode", value)

    def decide(self, caps: Capabilities, config: StackConfig) -> Decision:
        """The decision for this report and config, computed once per pair."""
        last = self._last
        if last is not None and last[0] is caps and last[1] is config:
            return last[2]
        with self._lock:
            decision = Decision(*self._decide(caps, config))
            no_room = caps.memlock.no_room_for.get(self.name) if self.ring_roles else None
            if no_room is not None and decision.enabled:
                # the plan found no room for this feature's rings (plan.fit_extra_rings_to_memlock):
                # every hook that asks (ring_params, select_backend) must see it off
                decision = Decision(False, no_room, MEMLOCK_HINT)
            # Holding the pair keeps their ids from being reused by other objects.
            self._last = (caps, config, decision)
        return decision

    def verdict(self, caps: Capabilities, config: StackConfig) -> FeatureVerdict:
        """The :class:`FeatureVerdict` of :meth:`decide`, as the plan and the probe show it."""
        enabled, reason, hint = self.decide(caps, config)
        return FeatureVerdict(
            plugin=self.name,
            mode=self.mode(config),
            enabled=enabled,
            reason=reason,
            hint=hint,
            ring_roles=self.ring_roles if enabled else (),
        )

    def hooks(self) -> tuple[Callable[[], tuple[str, type[BaseModel]]], Callable[..., FeatureVerdict]]:
        """``(uringstack_config_sections, uringstack_check_support)`` for the plugin module.

        Bound methods marked with ``hookimpl``: assigned to module attributes
        of those names, pluggy registers them like functions."""
        return self.uringstack_config_sections, self.uringstack_check_support

    # Bound to a module attribute of the plugin, these are its hook implementations.
    @hookimpl
    def uringstack_config_sections(self) -> tuple[str, type[BaseModel]]:
        """Contribute ``[name]`` validated by ``model``."""
        return self.name, self.model

    @hookimpl
    def uringstack_check_support(self, caps: Capabilities, config: StackConfig) -> FeatureVerdict:
        """This feature's verdict (:meth:`verdict`)."""
        return self.verdict(caps, config)
