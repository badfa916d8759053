"""The iopoll plugin decides from the probe's io_poll fact, not from a second sysfs read."""

from __future__ import annotations

from uringstack.config import load_config
from uringstack.plugins.iopoll.plugin import serve_decision
from uringstack.testing import make_fake_capabilities
from uringstack.types import Target


def test_block_target_uses_the_probed_io_poll() -> None:
    # /dev/nvme0n1 does not exist on this machine: a sysfs read would say "cannot
    # stat"; the probe's report (here a fake one) is the fact the plan uses too.
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)
    dev = caps.devices[0]
    config = load_config(env={}).config
    target = Target(path=dev.path, kind="block", direct=True, writable=False, device=dev)
    ok, reason = serve_decision(target, caps, config)
    assert ok, reason
    assert "nvme0n1" in reason


def test_probed_device_without_poll_queues_gives_the_probe_reason() -> None:
    caps = make_fake_capabilities(nvme=True, nvme_io_poll=True)
    dev = caps.devices[0]
    other = dev.model_copy(
        update={
            "name": "nvme1n1",
            "path": "/dev/nvme1n1",
            "generic_char": None,
            "io_poll": False,
            "io_poll_reason": "no poll queues (nvme poll_queues=0)",
        }
    )
    caps.devices.append(other)
    config = load_config(env={}).config
    target = Target(path=other.path, kind="block", direct=True, writable=False, device=other)
    ok, reason = serve_decision(target, caps, config)
    assert not ok
    assert "no poll queues (nvme poll_queues=0)" in reason
