"""Settings that require something fail clearly; settings that contradict each other are config errors."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess
import sys
import threading

import pytest

import uringstack.probe
from uringstack.config import ConfigError, load_config
from uringstack.errors import WrongThreadError
from uringstack.plan import make_plan
from uringstack.ring.flags import SetupFlag
from uringstack.stack import open_stack
from uringstack.testing import make_fake_capabilities
from uringstack.types import PlanError

SECCOMP = pathlib.Path(__file__).parents[1] / "probe" / "seccomp_deny_uring.py"
CPUS = sorted(os.sched_getaffinity(0))
x86_64_only = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the seccomp filter is written for x86_64 syscall numbers"
)
RUN_CLI = "import sys; from uringstack.cli import main; sys.argv[0] = 'uringstack'; main()"


def _plan(overrides: dict[str, object], **caps_args: object) -> object:
    loaded = load_config(env={}, overrides=overrides)
    caps = make_fake_capabilities(cores=CPUS, **caps_args)  # type: ignore[arg-type]
    return make_plan(caps, loaded.config, loaded.plugin_manager)


def test_backend_uring_where_io_uring_is_blocked_is_a_plan_error() -> None:
    with pytest.raises(PlanError) as info:
        _plan({"core.backend": "uring"}, uring="seccomp")
    message = str(info.value)
    assert "core.backend = 'uring' requires io_uring" in message
    assert "seccomp" in message


def test_backend_uring_never_plans_the_fallback() -> None:
    plan = _plan({"core.backend": "uring"})
    assert plan.default_backend == "uring"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("backend", "mode"), [("uring", "on"), ("fallback", "off")])
def test_backend_and_fallback_mode_that_contradict_are_a_config_error(backend: str, mode: str) -> None:
    with pytest.raises(ConfigError) as info:
        _plan({"core.backend": backend, "fallback.mode": mode})
    message = str(info.value)
    assert f"fallback.mode: '{mode}' conflicts with core.backend = '{backend}'" in message
    assert "disabled or not installed" not in message


def test_the_contradiction_is_found_by_config_validate_with_each_keys_source(tmp_path: pathlib.Path) -> None:
    """Until session 32 ``config validate`` said "valid" for such a file (only the plan found
    it), and the plan's error named no source."""
    f = tmp_path / "c.toml"
    f.write_text('[fallback]\nmode = "off"\n')
    env = {**os.environ, "URINGSTACK_CORE__BACKEND": "fallback"}
    out = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "config", "validate", "--with-env", str(f)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "fallback.mode: 'off' conflicts with core.backend = 'fallback'" in out.stderr, out.stderr
    assert f"[fallback.mode: file:{f}; core.backend: env:URINGSTACK_CORE__BACKEND]" in out.stderr, out.stderr


def test_the_plugin_refuses_the_contradiction_in_a_config_not_from_the_loader() -> None:
    loaded = load_config(env={})
    loaded.config.core.backend = "uring"
    loaded.config.sections()["fallback"].mode = "on"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"fallback\.mode: 'on' conflicts with core\.backend = 'uring'"):
        make_plan(make_fake_capabilities(cores=CPUS), loaded.config, loaded.plugin_manager)


def test_backend_fallback_with_the_plugin_disabled_says_so() -> None:
    with pytest.raises(PlanError, match=r"core\.backend = 'fallback'.*listed in core\.disabled_plugins"):
        _plan({"core.backend": "fallback", "core.disabled_plugins": ["fallback"]})


@x86_64_only
def test_backend_uring_under_the_real_seccomp_filter_fails_with_the_reason(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "URINGSTACK_CORE__BACKEND": "uring"}
    cli = [sys.executable, str(SECCOMP), sys.executable, "-c", RUN_CLI, "plan"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "core.backend = 'uring' requires io_uring" in out.stderr
    assert "seccomp" in out.stderr
    child = "from uringstack.stack import open_stack\nopen_stack()"
    out = subprocess.run(
        [sys.executable, str(SECCOMP), sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode != 0
    assert "PlanError: core.backend = 'uring' requires io_uring" in out.stderr


@x86_64_only
@pytest.mark.parametrize("syscall", ["enter", "register"])
def test_backend_uring_where_a_later_syscall_is_denied_names_it(syscall: str) -> None:
    """Until session 32 the probe only created a ring: with io_uring_enter denied the plan
    chose io_uring and every I/O failed; with io_uring_register denied open_stack died."""
    env = {**os.environ, "URINGSTACK_CORE__BACKEND": "uring"}
    cli = [sys.executable, str(SECCOMP), "--deny", syscall, sys.executable, "-c", RUN_CLI, "plan"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "core.backend = 'uring' requires io_uring" in out.stderr
    assert f"io_uring_{syscall} blocked by seccomp" in out.stderr


@x86_64_only
def test_backend_uring_with_fallback_on_under_seccomp_is_not_exit_0() -> None:
    env = {**os.environ, "URINGSTACK_CORE__BACKEND": "uring", "URINGSTACK_FALLBACK__MODE": "on"}
    cli = [sys.executable, str(SECCOMP), sys.executable, "-c", RUN_CLI, "plan"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stdout
    assert "core.backend = 'uring'" in out.stderr


def test_sqpoll_cpu_that_is_not_online_is_a_plan_error() -> None:
    offline = max(CPUS) + 97
    with pytest.raises(PlanError, match=rf"sqpoll\.cpu = {offline}: CPU {offline} is not online"):
        _plan({"sqpoll.mode": "on", "sqpoll.cpu": offline})
    with pytest.raises(PlanError, match=rf"sqpoll\.cpu = {offline}"):
        _plan({"sqpoll.cpu": offline})  # auto: the poller would silently run unpinned
    _plan({"sqpoll.mode": "off", "sqpoll.cpu": offline})  # off: the key is unused


def test_single_issuer_on_where_the_kernel_refuses_it_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match=r"core\.single_issuer = 'on'.*refuses IORING_SETUP_SINGLE_ISSUER"):
        _plan({"core.single_issuer": "on"}, rejected_flags=["SINGLE_ISSUER"])


def test_single_issuer_auto_says_why_it_is_not_set() -> None:
    plan = _plan({"core.single_issuer": "auto"})
    for worker in plan.workers:  # type: ignore[attr-defined]
        for ring in worker.rings:
            assert "SINGLE_ISSUER" not in ring.flags
            assert any("SINGLE_ISSUER auto: not set" in r for r in ring.reasons)


@pytest.fixture
def single_issuer_caps() -> object:
    caps = uringstack.probe.probe()
    if not caps.uring.accepts("SINGLE_ISSUER"):
        pytest.skip("this kernel refuses IORING_SETUP_SINGLE_ISSUER (Linux 6.0+)")
    return caps


def test_single_issuer_on_stack_works_through_its_worker(single_issuer_caps: object, tmp_path: pathlib.Path) -> None:
    with open_stack(
        overrides={"core.single_issuer": "on", "core.cores": [CPUS[0]], "fixedbuf.files": 4}, caps=single_issuer_caps
    ) as stack:  # type: ignore[arg-type]
        ring = stack.workers[0].rings["storage"]
        assert ring.flags & SetupFlag.SINGLE_ISSUER
        h = stack.open(tmp_path / "f", create=True)  # registers its fixed-file slot on the worker
        assert h.fixed_index is not None
        with pytest.raises(WrongThreadError, match=r"core\.single_issuer = 'on'.*handle\.worker\.call"):
            h.write_from(b"from the wrong thread", 0)
        assert h.worker.call(h.write_durable, b"from the worker", 0) == 15
        buf = bytearray(15)
        assert stack.run_on_workers(lambda w: h.read_into(buf, 0)) == [15]
        assert bytes(buf) == b"from the worker"
        closer = threading.Thread(target=h.close)  # close works from any thread too
        closer.start()
        closer.join(timeout=30)
        assert not closer.is_alive()
        assert h.fixed_index is None
