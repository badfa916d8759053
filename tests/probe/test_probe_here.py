"""The probe on the machine running the tests, checked against independent sources.

Where io_uring is blocked here (sysctl or seccomp), the io_uring assertions
skip with that reason; everything else still runs.
"""

from __future__ import annotations

import os
import platform
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from uringstack.cli import cli
from uringstack.probe import probe, probe_cached
from uringstack.probe.kernel import kernel_facts
from uringstack.probe.model import Capabilities


@pytest.fixture(scope="module")
def caps() -> Capabilities:
    return probe()


def _uring_allowed() -> None:
    facts = kernel_facts()
    if facts.io_uring_disabled == 2 or facts.status.seccomp_filtered:
        pytest.skip(f"io_uring is blocked on this machine ({facts})")


def _kernel_at_least(major: int, minor: int) -> bool:
    parts = platform.release().split(".")
    return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)


def test_io_uring_usable_with_storage_opcodes(caps: Capabilities) -> None:
    _uring_allowed()
    assert caps.uring.usable, caps.uring.reason
    assert caps.uring.blocker == "none"
    release = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    # (IORING_OP_URING_CMD came in 5.19: asserted on 5.10 too until session 32, where the
    # VM's Debian 11 kernel showed it; this group ran on the host only)
    ops = ("READ", "WRITE", "READV", "WRITEV", "FSYNC", "READ_FIXED") + (("URING_CMD",) if release >= (5, 19) else ())
    for op in ops:
        assert caps.uring.supports_op(op), op
    if release < (5, 19):
        assert not caps.uring.supports_op("URING_CMD")
    assert "NODROP" in caps.uring.features
    assert caps.uring.feature_bits & 1  # IORING_FEAT_SINGLE_MMAP (5.4+)


def test_setup_flags_found_by_creating_rings(caps: Capabilities) -> None:
    _uring_allowed()
    assert set(caps.uring.setup_flags) == {
        "SQPOLL", "IOPOLL", "SQE128", "CQE32", "SINGLE_ISSUER", "COOP_TASKRUN", "DEFER_TASKRUN",
    }  # fmt: skip
    assert caps.uring.accepts("SQPOLL")
    assert caps.uring.accepts("IOPOLL")
    if _kernel_at_least(6, 1):  # DEFER_TASKRUN is the newest of the probed flags
        rejected = [f for f, s in caps.uring.setup_flags.items() if not s.accepted]
        assert rejected == [], caps.uring.setup_flags


def test_cpus_and_memlock_match_the_os(caps: Capabilities) -> None:
    assert caps.cpus.allowed == sorted(os.sched_getaffinity(0))
    assert len(caps.cpus.online) == os.cpu_count()
    assert set(caps.cpus.allowed) <= set(caps.cpus.online)
    if caps.cpus.numa_nodes:
        node_cpus = sorted(c for cpus in caps.cpus.numa_nodes.values() for c in cpus)
        assert node_cpus == caps.cpus.online
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    assert caps.memlock.soft_bytes == (-1 if soft == inf else soft)
    assert caps.memlock.hard_bytes == (-1 if hard == inf else hard)


def test_nofile_matches_the_os(caps: Capabilities) -> None:
    # the fixedbuf file table is sized from it: the kernel refuses one larger than the soft limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    assert caps.nofile.soft == (-1 if soft == inf else soft)
    assert caps.nofile.hard == (-1 if hard == inf else hard)


def test_root_filesystem_device_is_in_use(caps: Capabilities) -> None:
    assert caps.device_scan_error == ""
    st = os.stat("/")
    sysdev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not sysdev.exists():
        pytest.skip("/ is not on a block device (overlayfs, tmpfs, btrfs subvolume)")
    name = sysdev.resolve().name
    # The root may be a partition: then its disk is the reported device.
    disk = next((d for d in caps.devices if d.name == name or name in d.partitions), None)
    assert disk is not None, (name, [d.name for d in caps.devices])
    assert disk.in_use
    assert any("mounted at /" in u for u in disk.usage), disk.usage
    # A partition's queue/ attributes live in its parent disk's directory.
    disk_dir = sysdev.resolve() if disk.name == name else sysdev.resolve().parent
    logical = int((disk_dir / "queue" / "logical_block_size").read_text())
    assert disk.logical_block_size == logical
    if not disk.io_poll:
        assert disk.io_poll_reason, "a device without polling must say why"


def test_json_round_trip(caps: Capabilities) -> None:
    again = Capabilities.model_validate_json(caps.model_dump_json())
    assert again == caps


def test_probe_cached_reuses_then_expires(tmp_path: Path) -> None:
    cache = tmp_path / "caps.json"
    first = probe_cached(cache, max_age_s=60, devices=False)
    assert cache.exists()
    # Mark the cache so a reuse is distinguishable from a fresh probe.
    marked = first.model_copy(update={"extras": {"marker": 1}})
    cache.write_text(marked.model_dump_json())
    assert probe_cached(cache, max_age_s=60, devices=False).extras == {"marker": 1}
    old = time.time() - 120
    os.utime(cache, (old, old))
    assert probe_cached(cache, max_age_s=60, devices=False).extras == {}
    cache.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="is not a uringstack probe report"):
        assert probe_cached(cache, max_age_s=60, devices=False).kernel_release == platform.release()
    assert cache.read_text() == "{not json"  # (not a report: left alone, see below)


def test_probe_cached_reprobes_in_another_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until session 32 the cache was keyed on age, schema and kernel release only: a report
    from an unrestricted shell was reused under seccomp, another memlock limit, CPU mask..."""
    import uringstack.probe as probe_mod

    cache = tmp_path / "caps.json"
    first = probe_cached(cache, max_age_s=60, devices=False)
    assert first.environment["seccomp"].startswith("mode ")
    cache.write_text(first.model_copy(update={"extras": {"marker": 1}}).model_dump_json())
    assert probe_cached(cache, max_age_s=60, devices=False).extras == {"marker": 1}
    here = dict(first.environment)
    for key in ("seccomp", "io_uring_disabled", "rlimit_memlock", "rlimit_nofile", "cap_eff", "cpus_allowed", "uids"):
        cache.write_text(first.model_copy(update={"extras": {"marker": 1}}).model_dump_json())
        monkeypatch.setattr(probe_mod, "process_environment", lambda key=key: {**here, key: "changed"})
        again = probe_cached(cache, max_age_s=60, devices=False)
        assert again.extras == {}, f"a report taken with another {key} was reused"
        assert again.environment[key] == "changed"


def test_probe_cached_reprobes_under_another_rlimit(tmp_path: Path) -> None:
    cache = tmp_path / "caps.json"
    first = probe_cached(cache, max_age_s=60, devices=False)
    cache.write_text(first.model_copy(update={"extras": {"marker": 1}}).model_dump_json())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = f"from uringstack.probe import probe_cached; print(probe_cached({str(cache)!r}, 60, devices=False).extras)"

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 64), hard))

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=lower, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{}"


@pytest.mark.parametrize("max_age_s", [-1.0, float("nan")])
def test_probe_cached_refuses_an_age_no_cache_can_have(tmp_path: Path, max_age_s: float) -> None:
    with pytest.raises(ValueError, match="max_age_s must be a number of seconds >= 0"):
        probe_cached(tmp_path / "caps.json", max_age_s=max_age_s, devices=False)


def test_a_cache_that_cannot_be_written_does_not_hide_the_findings(tmp_path: Path) -> None:
    """``probe --cache`` on a read-only or full file system still reports (a warning on stderr,
    exit 0, the JSON intact on stdout); it used to fail with the temporary file's name."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "caps.json"  # (its directory cannot be made: a file is in the way)
    # (it said "[Errno 17] File exists: '.../a-file'" until session 32)
    with pytest.warns(RuntimeWarning, match="probe cache .* not written: .*(Not a directory|a file is in the way)"):
        caps = probe_cached(cache, max_age_s=60, devices=False)
    assert caps.kernel_release == platform.release()
    # The command itself (pytest would catch the warning CliRunner lets through):
    command = [sys.executable, "-c", "from uringstack.cli import main; main()", "probe", "--json", "--no-devices"]
    result = subprocess.run([*command, "--no-plugins", "--cache", str(cache)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Capabilities.model_validate_json(result.stdout).kernel_release == platform.release()
    assert result.stderr.startswith(f"warning: probe cache {cache} not written: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one line, no library source line


# Until session 32 `probe --cache FILE` replaced any FILE: a user's notes.txt became a
# probe report (mode 0600), and a symlink was replaced by a regular file.
@pytest.mark.parametrize("content", [b"my notes\n", b'{"a": 1}', b"\xff\xfe", b"[1, 2]"])
def test_probe_cached_never_overwrites_a_file_that_is_not_a_report(tmp_path: Path, content: bytes) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    notes.chmod(0o644)
    with pytest.warns(RuntimeWarning, match=r"not written: .*notes.txt exists and is not a uringstack probe report"):
        caps = probe_cached(notes, max_age_s=60, devices=False)
    assert caps.kernel_release == platform.release()
    assert notes.read_bytes() == content
    assert notes.stat().st_mode & 0o777 == 0o644


def test_probe_cache_on_a_users_file_warns_prints_and_exits_0(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    command = [sys.executable, "-c", "from uringstack.cli import main; main()", "probe", "--json", "--no-devices"]
    result = subprocess.run([*command, "--no-plugins", "--cache", str(notes)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Capabilities.model_validate_json(result.stdout).kernel_release == platform.release()
    assert result.stderr == (
        f"warning: probe cache {notes} not written: {notes} exists and is not a uringstack probe report\n"
    )
    assert notes.read_text() == "my notes\n"


def test_probe_cached_does_not_read_or_replace_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.warns(RuntimeWarning, match="exists and is not a uringstack probe report"):
        probe_cached(fifo, max_age_s=60, devices=False)  # (reading it would block)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("target_exists", [True, False])
def test_probe_cached_writes_through_a_symlink(tmp_path: Path, target_exists: bool) -> None:
    real = tmp_path / "real" / "caps.json"
    real.parent.mkdir()
    if target_exists:
        stale = probe_cached(real, max_age_s=60, devices=False)
        real.write_text(stale.model_copy(update={"extras": {"marker": 1}}).model_dump_json())
        old = time.time() - 120
        os.utime(real, (old, old))
    link = tmp_path / "caps.json"
    link.symlink_to(os.path.relpath(real, tmp_path))
    caps = probe_cached(link, max_age_s=60, devices=False)
    assert link.is_symlink()
    assert Capabilities.model_validate_json(real.read_bytes()) == caps
    assert caps.extras == {}


def test_probe_cached_keeps_the_mode_of_the_report_it_replaces(tmp_path: Path) -> None:
    cache = tmp_path / "caps.json"
    probe_cached(cache, max_age_s=60, devices=False)
    cache.chmod(0o644)
    old = time.time() - 120
    os.utime(cache, (old, old))
    probe_cached(cache, max_age_s=60, devices=False)
    assert time.time() - cache.stat().st_mtime < 60  # (rewritten)
    assert cache.stat().st_mode & 0o777 == 0o644


def test_plugin_hook_adds_facts() -> None:
    import pluggy

    from uringstack import hookspecs

    class Plugin:
        @hookspecs.hookimpl  # type: ignore[untyped-decorator]  # pluggy marker is untyped
        def uringstack_probe(self, report: Capabilities) -> None:
            report.extras["test-plugin"] = {"cpus": report.cpus.count}

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin())
    caps = probe(devices=False, plugin_manager=pm)
    assert caps.extras["test-plugin"] == {"cpus": len(os.sched_getaffinity(0))}
    assert caps.devices == []


def test_cli_report_and_json() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["probe"])
    assert result.exit_code == 0, result.output
    # One line for io_uring, one per built-in plugin's verdict.
    for feature in ("io_uring", "sqpoll", "iopoll", "fixedbuf", "nvme_passthrough", "fallback"):
        assert f"\n  {feature}: usable" in result.output or f"\n  {feature}: not usable: " in result.output, feature
    facts = kernel_facts()
    if not (facts.io_uring_disabled == 2 or facts.status.seccomp_filtered):
        assert "io_uring: usable" in result.output
    result = runner.invoke(cli, ["probe", "--json", "--no-devices", "--no-plugins"])
    assert result.exit_code == 0
    caps = Capabilities.model_validate_json(result.output)
    assert caps.devices == [] and caps.kernel_release == platform.release()


def test_cli_help() -> None:
    result = CliRunner().invoke(cli, ["probe", "--help"])
    assert result.exit_code == 0
    for opt in ("--json", "--no-devices", "--cache"):
        assert opt in result.output
