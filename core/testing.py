"""pytest fixtures for uringstack plugin authors (loaded through the ``pytest11`` entry point).

Installing uringstack makes these fixtures available in every pytest run,
as tox does for tox plugin authors::

    def test_my_plugin_raises_entries(plugin_manager, register_plugin,
                                      fake_capabilities, stack_config):
        register_plugin(my_plugin, "mine")
        caps = fake_capabilities(cores=8, nvme=True)
        config = stack_config({"mine": {"mode": "on"}})
        params = RingParams()
        plugin_manager.ring_params(params, caps, config)
        assert params.entries == 1024

* ``fake_capabilities`` — factory for a :class:`~uringstack.probe.model.Capabilities`
  report of an imaginary machine (no probing, no io_uring needed);
* ``plugin_manager`` — a fresh manager with autoload off (no built-in or
  installed plugin is loaded; register what the test needs);
* ``register_plugin`` — register a plugin for one test, unregistered after it;
* ``stack_config`` — factory: a validated :class:`~uringstack.config.StackConfig`
  from a dict, with the sections of the plugins in ``plugin_manager``.

Imports of uringstack happen inside the fixtures: this module is imported
by every pytest run in an environment where uringstack is installed, and
must stay cheap and must never break an unrelated test session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import pytest

from uringstack.ring.opnames import OPCODE_NAMES

if TYPE_CHECKING:
    from uringstack.config import StackConfig
    from uringstack.pluginmanager import UringstackPluginManager
    from uringstack.probe.model import BlockDevice, Capabilities, UringBlocker

UringState = Literal["usable", "seccomp", "sysctl_disabled", "enosys", "not_linux"]

# What a 6.1 kernel (Debian 12) reports: every opcode up to URING_CMD (46),
# enough for plugins that look for opcodes.
DEFAULT_OPCODES: tuple[str, ...] = OPCODE_NAMES[: OPCODE_NAMES.index("URING_CMD") + 1]

DEFAULT_FEATURES: tuple[str, ...] = (
    "SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS", "CUR_PERSONALITY",
    "FAST_POLL", "POLL_32BITS", "SQPOLL_NONFIXED", "EXT_ARG", "NATIVE_WORKERS",
    "RSRC_TAGS", "CQE_SKIP", "LINKED_FILE",
)  # fmt: skip

SETUP_FLAG_NAMES: tuple[str, ...] = (
    "SQPOLL", "IOPOLL", "SQE128", "CQE32", "SINGLE_ISSUER", "COOP_TASKRUN", "DEFER_TASKRUN",
)  # fmt: skip

_BLOCKERS: dict[str, tuple[int, str]] = {
    # blocker -> (errno, reason as the real probe words it)
    "seccomp": (
        1,
        "io_uring_setup blocked by seccomp (EPERM from a seccomp filter; Docker's default "
        "profile does this: run with a profile that allows io_uring_setup/io_uring_enter/"
        "io_uring_register)",
    ),
    "sysctl_disabled": (1, "kernel.io_uring_disabled=2: io_uring is disabled for everyone"),
    "enosys": (38, "this kernel has no io_uring (Linux 5.1+ needed, 5.19+ recommended)"),
    "not_linux": (0, "io_uring exists only on Linux"),
}


class CapabilitiesFactory(Protocol):
    """Signature of the ``fake_capabilities`` fixture."""

    def __call__(
        self,
        *,
        uring: UringState | bool = ...,
        cores: int | Iterable[int] = ...,
        memlock_bytes: int = ...,
        nofile: int = ...,
        nvme: bool = ...,
        nvme_io_poll: bool = ...,
        nvme_in_use: bool = ...,
        rejected_flags: Iterable[str] = ...,
        devices: Iterable[BlockDevice] = ...,
        kernel_release: str = ...,
        **overrides: Any,
    ) -> Capabilities: ...


def make_fake_capabilities(
    *,
    uring: UringState | bool = "usable",
    cores: int | Iterable[int] = 4,
    memlock_bytes: int = 8 * 1024 * 1024,
    nofile: int = 1024,
    nvme: bool = False,
    nvme_io_poll: bool = True,
    nvme_in_use: bool = False,
    rejected_flags: Iterable[str] = (),
    devices: Iterable[BlockDevice] = (),
    kernel_release: str = "6.1.0-test",
    **overrides: Any,
) -> Capabilities:
    """A capability report for an imaginary machine; what ``fake_capabilities`` calls.

    ``uring``: ``"usable"`` (or ``True``), or why it is not — ``"seccomp"``
    (Docker's default profile), ``"sysctl_disabled"``, ``"enosys"``,
    ``"not_linux"`` (or ``False`` for seccomp).  ``cores``: a count or the
    CPU ids.  ``memlock_bytes``: RLIMIT_MEMLOCK soft and hard limit (-1 is
    unlimited).  ``nofile``: RLIMIT_NOFILE soft limit (hard: 524288, Debian's
    default; -1 is unlimited).  ``nvme``: add namespace ``/dev/nvme0n1`` with generic char
    device ``/dev/ng0n1`` (accessible), poll queues when ``nvme_io_poll``,
    mounted when ``nvme_in_use``.  ``rejected_flags``: setup flag names the
    kernel refuses (EINVAL).  ``devices``: more devices.  ``overrides``:
    any other :class:`Capabilities` field.
    """
    from uringstack.probe.model import (
        BlockDevice,
        Capabilities,
        CpuInfo,
        FlagSupport,
        MemlockInfo,
        NofileInfo,
        UringSupport,
    )

    state: str = "usable" if uring is True else "seccomp" if uring is False else uring
    rejected = {name.upper() for name in rejected_flags}
    unknown = rejected - set(SETUP_FLAG_NAMES)
    if unknown:
        raise ValueError(f"unknown setup flags {sorted(unknown)}; known: {SETUP_FLAG_NAMES}")
    if state == "usable":
        support = UringSupport(
            usable=True,
            io_uring_disabled_sysctl=0,
            features=list(DEFAULT_FEATURES),
            opcodes=list(DEFAULT_OPCODES),
            setup_flags={
                name: (
                    FlagSupport(accepted=False, errno=22, error="EINVAL: kernel rejected it")
                    if name in rejected
                    else FlagSupport(accepted=True)
                )
                for name in SETUP_FLAG_NAMES
            },
        )
    elif state in _BLOCKERS:
        err, reason = _BLOCKERS[state]
        support = UringSupport(
            usable=False,
            blocker=cast("UringBlocker", state),  # checked against _BLOCKERS above
            reason=reason,
            io_uring_disabled_sysctl=2 if state == "sysctl_disabled" else 0,
            setup_flags={
                name: FlagSupport(accepted=False, errno=err, error="not tried: io_uring unusable")
                for name in SETUP_FLAG_NAMES
            }
            if state != "not_linux"
            else {},
        )
    else:
        raise ValueError(f"uring must be 'usable' or one of {sorted(_BLOCKERS)}, got {uring!r}")

    cpus = list(range(cores)) if isinstance(cores, int) else sorted(cores)
    if not cpus:
        raise ValueError("a machine has at least one CPU")
    all_devices = list(devices)
    if nvme:
        all_devices.append(
            BlockDevice(
                name="nvme0n1",
                path="/dev/nvme0n1",
                model="uringstack fake NVMe",
                size_bytes=64 * 1024**3,
                logical_block_size=4096,
                physical_block_size=4096,
                io_poll=nvme_io_poll,
                io_poll_reason="" if nvme_io_poll else "queue/io_poll=0: no poll queues",
                nvme=True,
                controller="nvme0",
                nsid=1,
                poll_queues=2 if nvme_io_poll else 0,
                generic_char="/dev/ng0n1",
                generic_char_accessible=True,
                in_use=nvme_in_use,
                usage=["mounted at /data"] if nvme_in_use else [],
            )
        )
    fields: dict[str, Any] = {
        "kernel_release": kernel_release,
        "system": "Darwin" if state == "not_linux" else "Linux",
        "python": "3.11.2",
        "uring": support,
        "memlock": MemlockInfo(soft_bytes=memlock_bytes, hard_bytes=memlock_bytes),
        "nofile": NofileInfo(soft=nofile, hard=-1 if nofile < 0 else max(nofile, 524288)),
        "cpus": CpuInfo(online=cpus, allowed=cpus, numa_nodes={0: cpus}),
        "devices": all_devices,
    }
    fields.update(overrides)
    return Capabilities(**fields)


@pytest.fixture
def fake_capabilities() -> CapabilitiesFactory:
    """Factory fixture: ``fake_capabilities(uring="seccomp", cores=2, nvme=True, ...)``.

    See :func:`make_fake_capabilities` for every parameter.  Nothing is
    probed: the report describes an imaginary machine, so a plugin's
    decisions can be tested for machines the test runner is not.
    """
    return make_fake_capabilities


@pytest.fixture
def plugin_manager() -> UringstackPluginManager:
    """A fresh plugin manager with the uringstack hook specs and no plugins.

    Autoload is off, so neither the built-in plugins nor anything installed
    in the environment is loaded: the test registers exactly what it needs
    (``register_plugin``).
    """
    from uringstack.pluginmanager import make_plugin_manager

    return make_plugin_manager(autoload=False)


RegisterPlugin = Callable[..., str]


@pytest.fixture
def register_plugin(plugin_manager: UringstackPluginManager) -> Iterator[RegisterPlugin]:
    """Register a plugin for this test: ``register_plugin(plugin, name=None, manager=None)``.

    Registers into the ``plugin_manager`` fixture unless *manager* is given,
    returns the name, and unregisters every plugin it registered when the
    test ends (even if it failed), so a manager shared across tests is left
    as it was found.  Hook implementations are checked at registration: a
    misspelled hook fails here.
    """
    registered: list[tuple[UringstackPluginManager, str]] = []

    def register(plugin: object, name: str | None = None, manager: UringstackPluginManager | None = None) -> str:
        target = manager if manager is not None else plugin_manager
        registered_name: str = target.register(plugin, name)
        registered.append((target, registered_name))
        return registered_name

    yield register
    for target, name in reversed(registered):
        target.unregister(name)


StackConfigFactory = Callable[..., "StackConfig"]


@pytest.fixture
def stack_config(plugin_manager: UringstackPluginManager) -> StackConfigFactory:
    """Factory: ``stack_config({"core": {...}, "mysection": {...}})`` -> validated StackConfig.

    Uses the sections of the plugins registered in ``plugin_manager`` *at call
    time* (register first, then build the config).  The process environment
    and ``URINGSTACK_CONFIG`` are ignored; pass ``env={...}`` to test
    environment handling.  Invalid values raise
    :class:`~uringstack.config.ConfigError` as in production.
    """
    from uringstack.config import load_config

    def build(
        values: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        manager: UringstackPluginManager | None = None,
    ) -> StackConfig:
        loaded = load_config(
            None,
            env=env if env is not None else {},
            overrides=values,
            plugin_manager=manager if manager is not None else plugin_manager,
        )
        return loaded.config

    return build
