"""The pytest11 fixtures as a plugin author sees them: in a separate pytest run."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from uringstack.testing import make_fake_capabilities

AUTHOR_TESTS = textwrap.dedent(
    """
    from uringstack.hookspecs import hookimpl
    from uringstack.pluginmanager import make_plugin_manager

    SHARED = make_plugin_manager(autoload=False)

    class Marker:
        @hookimpl
        def uringstack_probe(self, report):
            report.extras["marker"] = True

    def test_a_registers(register_plugin, plugin_manager):
        register_plugin(Marker(), "marker", manager=SHARED)
        register_plugin(Marker(), "marker")
        assert SHARED.plugin_names() == ["marker"]
        assert plugin_manager.plugin_names() == ["marker"]

    def test_b_was_unregistered(plugin_manager, fake_capabilities):
        assert SHARED.plugin_names() == []
        assert plugin_manager.plugin_names() == []   # fresh per test, autoload off
        caps = fake_capabilities(uring="seccomp")
        plugin_manager.probe(caps)
        assert "marker" not in caps.extras
    """
)


def test_fixtures_come_from_the_entry_point_and_clean_up(tmp_path: pathlib.Path) -> None:
    (tmp_path / "test_author.py").write_text(AUTHOR_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_author.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_fake_capabilities_shapes() -> None:
    usable = make_fake_capabilities(cores=[0, 2], memlock_bytes=-1, nvme=True)
    assert usable.uring.usable and usable.uring.accepts("SQPOLL")
    assert usable.cpus.allowed == [0, 2]
    assert usable.memlock.allows(1 << 40)
    [dev] = usable.devices
    assert dev.io_poll and dev.generic_char == "/dev/ng0n1"
    assert usable.device_for_path("/dev/ng0n1") is dev

    blocked = make_fake_capabilities(uring="seccomp")
    assert not blocked.uring.usable and blocked.uring.blocker == "seccomp"
    assert "seccomp" in blocked.uring.reason
    assert not blocked.uring.accepts("SQPOLL")

    picky = make_fake_capabilities(rejected_flags=["defer_taskrun"], nvme=True, nvme_io_poll=False)
    assert not picky.uring.accepts("DEFER_TASKRUN") and picky.uring.accepts("COOP_TASKRUN")
    assert not picky.devices[0].io_poll
    with pytest.raises(ValueError, match="unknown setup flags"):
        make_fake_capabilities(rejected_flags=["TURBO"])
