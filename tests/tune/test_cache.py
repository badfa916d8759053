"""The cache key, stale and foreign entries, corrupt and newer-format files; never breaking open_stack()."""

from __future__ import annotations

import json
import os
import pathlib
import stat

import pytest

from uringstack.probe.tune_cache import cache_dir, load_state, read_document, write_entry
from uringstack.probe.tune_key import MachineFacts, identity_of, key_of
from uringstack.probe.tuning import FORMAT_VERSION, TuneDocument
from uringstack.stack import open_stack

from .fakes import fake_record

HERE = MachineFacts.here()


def test_cache_dir_follows_xdg(tmp_path: pathlib.Path) -> None:
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "uringstack" / "tune"
    home = pathlib.Path(os.path.expanduser("~"))
    assert cache_dir({}) == home / ".cache" / "uringstack" / "tune"
    assert cache_dir({"XDG_CACHE_HOME": "relative"}) == home / ".cache" / "uringstack" / "tune"


def test_key_names_the_disk_the_file_system_and_the_machine(tmp_path: pathlib.Path) -> None:
    key = key_of(str(tmp_path))
    st = os.stat(tmp_path)
    dev = key.device
    assert key.kernel == os.uname().release and key.cpus == os.cpu_count()
    assert dev.fs  # ext4 here, tmpfs elsewhere: never empty for a directory
    if os.path.exists(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"):
        assert dev.name and dev.size_bytes > 0
        sysfs_serial = pathlib.Path(f"/sys/block/{dev.name}/serial")
        if sysfs_serial.exists() and sysfs_serial.read_text().strip():
            assert dev.serial == sysfs_serial.read_text().strip()
        node = f"/dev/{dev.name}"
        if os.path.exists(node):
            raw = identity_of(node)  # the raw device: same disk, no file system
            assert raw.fs == "" and raw.serial == dev.serial and raw.devnum == dev.devnum


def test_key_mismatch_reasons() -> None:
    key = HERE.key(identity_of("/"))
    assert key.mismatches(key) == []
    other_kernel = key.model_copy(update={"kernel": "5.4.0"})
    assert other_kernel.mismatches(key) == [f"kernel 5.4.0 (tuned) != {key.kernel} (here)"]
    assert key.model_copy(update={"cpus": 64}).mismatches(key)[0].startswith("cpus 64")
    assert key.model_copy(update={"uringstack_version": "9.9"}).mismatches(key)[0].startswith("uringstack_version")
    other_drive = key.model_copy(update={"device": key.device.model_copy(update={"serial": "OTHER", "wwn": ""})})
    wrong = other_drive.mismatches(key)
    assert wrong and wrong[0].startswith("device serial 'OTHER'")
    # shipped to an identical machine: another drive of the same model and size is expected
    assert other_drive.mismatches(key, same_device_class=True) == []
    bigger = key.model_copy(update={"device": key.device.model_copy(update={"size_bytes": 1})})
    assert bigger.mismatches(key, same_device_class=True)


def test_device_number_is_the_identity_only_without_serial() -> None:
    key = HERE.key(identity_of("/"))
    moved = key.model_copy(update={"device": key.device.model_copy(update={"devnum": "1:1"})})
    no_serial = key.model_copy(update={"device": key.device.model_copy(update={"serial": "", "wwn": ""})})
    no_serial_moved = no_serial.model_copy(update={"device": no_serial.device.model_copy(update={"devnum": "1:1"})})
    if key.device.serial or key.device.wwn:
        assert moved.mismatches(key) == []  # renumbered after a reboot: still the same drive
    want = f"device devnum '1:1' (tuned) != {key.device.devnum!r} (here)"
    assert no_serial_moved.mismatches(no_serial) == [want]


def test_valid_entry_is_used(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    path = write_entry(fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}}), cache)
    assert path.parent == cache and path.suffix == ".json"
    state = load_state(directory=cache)
    assert [a.record.target for a in state.records] == [str(tmp_path)] and state.ignored == []
    assert state.records[0].source == f"cache:{path}"


def test_stale_entry_is_ignored_with_the_reason(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    old = MachineFacts(kernel="5.15.0-old", uringstack_version=HERE.uringstack_version, cpus=HERE.cpus)
    write_entry(fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}}, facts=old), cache)
    state = load_state(directory=cache)
    assert state.records == []
    assert len(state.ignored) == 1 and "stale: kernel 5.15.0-old (tuned) != " in state.ignored[0]
    assert "no valid measurement" in state.no_measurement() and "stale" in state.no_measurement()


def test_foreign_entries_are_ignored(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    record = fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}})
    dev = record.key.device
    other = record.model_copy(
        update={"key": record.key.model_copy(update={"device": dev.model_copy(update={"serial": "X", "wwn": "Y"})})}
    )
    write_entry(other, cache)
    gone = record.model_copy(update={"target": str(tmp_path / "gone")})
    write_entry(gone, cache)
    state = load_state(directory=cache)
    assert state.records == []
    reasons = " | ".join(state.ignored)
    assert "foreign: device serial" in reasons and f"foreign: {tmp_path / 'gone'} does not exist here" in reasons


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "corrupt (not JSON"),
        (b"[1, 2]", "corrupt (not a JSON object)"),
        (b'{"schema": "uringstack.tune/1", "format_version": 1, "records": [{"target": 3}]}', "corrupt (records.0"),
        (b'{"schema": "other/9", "records": []}', "not a tune document (its \"schema\" is 'other/9'"),
        (b'{"schema_version": 3, "kernel_release": "6.1.0"}', "not a tune document"),  # a probe report
        (b"[" * 100_000 + b"]" * 100_000, "corrupt (not JSON: RecursionError"),
        (
            json.dumps({"format_version": FORMAT_VERSION + 1, "records": [{"future": True}]}).encode(),
            f"written by a newer uringstack (format {FORMAT_VERSION + 1}",
        ),
        (b"\xff\xfe", "corrupt"),
    ],
)
def test_bad_files_are_ignored_with_the_reason(tmp_path: pathlib.Path, content: bytes, reason: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bad.json").write_bytes(content)
    state = load_state(directory=cache)
    assert state.records == [] and len(state.ignored) == 1
    assert reason in state.ignored[0] and str(cache / "bad.json") in state.ignored[0]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"best": 99}, "best = 99 is not the index of one of its 2 measurements"),
        ({"compared": {"sqpoll": [1, 99]}}, "compared.sqpoll holds 99"),
        ({"measurements.1.settings": {}}, "compared.sqpoll: measurement 1 has no sqpoll setting"),
        ({"measurements.1.status": "failed"}, "best = 1 is a measurement that did not succeed"),
    ],
)
def test_a_record_whose_indexes_point_nowhere_is_ignored_and_hides_no_other(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, edit: dict[str, object], reason: str
) -> None:
    """JSON of the right shape with indexes out of range made every plan, ``probe`` and
    ``open_stack()`` fail (IndexError, KeyError) until session 32."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = cache_dir()
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    write_entry(fake_record(str(good_dir), {"sqpoll": {"off": 1e5, "on": 2e5}}), cache)
    doc = json.loads(write_entry(fake_record(str(bad_dir), {"sqpoll": {"off": 1e5, "on": 2e5}}), cache).read_text())
    for dotted, value in edit.items():
        *parents, last = dotted.split(".")
        node = doc["records"][0]
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    bad = next(p for p in cache.iterdir() if json.loads(p.read_text())["records"][0]["target"] == str(bad_dir))
    bad.write_text(json.dumps(doc))
    state = load_state()
    assert [r.record.target for r in state.records] == [str(good_dir)]
    assert len(state.ignored) == 1 and reason in state.ignored[0] and str(bad) in state.ignored[0], state.ignored
    with open_stack(overrides={"core.cores": [min(os.sched_getaffinity(0))]}) as stack:
        assert any(reason in note for note in stack.plan.notes), stack.plan.notes


@pytest.mark.timeout(30)
def test_a_fifo_in_the_cache_is_ignored_not_opened_for_good(tmp_path: pathlib.Path) -> None:
    """A FIFO named ``*.json`` made every plan and ``open_stack()`` wait in its open (session 32)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "a.json")
    write_entry(fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}}), cache)
    state = load_state(directory=cache)
    assert len(state.records) == 1
    assert state.ignored == [f"{cache / 'a.json'}: unreadable (not a regular file)"]


def test_a_newer_record_inside_a_current_document_is_refused(tmp_path: pathlib.Path) -> None:
    record = fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}})
    doc = TuneDocument.of([record.model_copy(update={"format_version": FORMAT_VERSION + 1})])
    path = tmp_path / "doc.json"
    path.write_text(doc.model_dump_json(by_alias=True))
    with pytest.raises(ValueError, match="newer uringstack"):
        read_document(path)


def test_broken_cache_never_breaks_open_stack(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = cache_dir()
    cache.mkdir(parents=True)
    (cache / "a.json").write_bytes(b"\x00garbage")
    (cache / "b.json").write_text(json.dumps({"format_version": 99}))
    os.mkdir(cache / "c.json")  # a directory where a file should be: unreadable
    with open_stack(overrides={"core.cores": [min(os.sched_getaffinity(0))]}) as stack:
        notes = "\n".join(stack.plan.notes)
        assert "tune: ignored" in notes and "corrupt" in notes and "format 99" in notes and "unreadable" in notes
        assert stack.caps.tuning is not None and stack.caps.tuning.records == []
        sqpoll = next(v for v in stack.plan.verdicts if v.plugin == "sqpoll")
        assert "no valid measurement" in sqpoll.reason


def test_shipped_results_hold_on_an_identical_machine(tmp_path: pathlib.Path) -> None:
    record = fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}})
    dev = record.key.device
    # what another machine of the same model wrote: its own drive's serial and WWN
    shipped = record.model_copy(
        update={"key": record.key.model_copy(update={"device": dev.model_copy(update={"serial": "S2", "wwn": "W2"})})}
    )
    path = tmp_path / "tuned.json"
    path.write_text(TuneDocument.of([shipped]).model_dump_json(by_alias=True))
    state = load_state(str(path))
    assert len(state.records) == 1 and state.records[0].source == f"core.tune_results:{path}"
    # the same file in this machine's cache is another drive's measurement
    cache = tmp_path / "cache"
    write_entry(shipped, cache)
    assert load_state(directory=cache).records == []
    # a different kernel is not an identical machine
    stale = shipped.model_copy(update={"key": shipped.key.model_copy(update={"kernel": "4.19"})})
    path.write_text(TuneDocument.of([stale]).model_dump_json(by_alias=True))
    assert "stale: kernel 4.19" in load_state(str(path)).ignored[0]


def test_missing_include_is_reported(tmp_path: pathlib.Path) -> None:
    state = load_state(str(tmp_path / "nope.json"))
    assert state.records == [] and state.ignored == [f"core.tune_results: {tmp_path / 'nope.json'} is not a file"]


def test_an_unexpected_failure_in_the_lookup_never_breaks_open_stack(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uringstack.probe.tune_cache as cache_mod

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    write_entry(fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}}))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("udev exploded")

    monkeypatch.setattr(cache_mod, "key_of", broken)
    entry = cache_dir() / next(p.name for p in cache_dir().iterdir())
    with open_stack(overrides={"core.cores": [min(os.sched_getaffinity(0))]}) as stack:
        # (each file on its own: one failing file no longer hides the others, session 32)
        assert f"tune: ignored {entry}: unusable: RuntimeError: udev exploded" in stack.plan.notes


def test_a_target_path_that_cannot_exist_is_foreign(tmp_path: pathlib.Path) -> None:
    record = fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}})
    write_entry(record.model_copy(update={"target": "/bad\0path"}), tmp_path / "c")
    state = load_state(directory=tmp_path / "c")
    assert state.records == [] and "foreign: /bad\0path cannot be looked up here" in state.ignored[0]


_SQPOLL = {"sqpoll": {"off": 100e3, "on": 121e3}}


def _record_syscalls(monkeypatch: pytest.MonkeyPatch, calls: list[str], fail_fsync: bool = False) -> None:
    """Record ``fsync`` (of a file or a directory) and ``replace`` in the order they run."""
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:

        calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        if fail_fsync:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)


def test_an_entry_reaches_the_disk_before_its_name_does(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that reached the disk before the data leaves an empty file after a crash:
    the data is fsynced first, the directory (the rename) after."""
    calls: list[str] = []
    _record_syscalls(monkeypatch, calls)
    path = write_entry(fake_record(str(tmp_path), _SQPOLL), tmp_path)
    assert calls == ["fsync-file", "replace", "fsync-dir"]
    assert read_document(path).records and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_failed_write_keeps_the_old_entry_and_leaves_no_temporary_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_entry(fake_record(str(tmp_path), _SQPOLL), tmp_path)
    before = path.read_bytes()
    calls: list[str] = []
    _record_syscalls(monkeypatch, calls, fail_fsync=True)
    with pytest.raises(OSError, match="Input/output error"):
        write_entry(fake_record(str(tmp_path), {"sqpoll": {"off": 1e3, "on": 2e3}}), tmp_path)
    assert calls == ["fsync-file"]  # never renamed over the old entry
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_the_probe_report_follows_the_measurements_as_the_plan_does(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/probe.md: the probe's verdict lines "are the same verdicts `uringstack plan`
    prints". After a tune, the plan followed the measurement while the probe said
    "no measurement looked up" (it never attached the tune results)."""
    from uringstack.cli.probe_report import verdicts
    from uringstack.config import load_config
    from uringstack.plan import make_plan
    from uringstack.probe import probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    write_entry(fake_record(str(tmp_path), {"sqpoll": {"off": 1e5, "on": 2e5}}))
    loaded = load_config(overrides={"core.cores": [min(os.sched_getaffinity(0))]})
    caps = probe(plugin_manager=loaded.plugin_manager)
    planned = {v.plugin: v.reason for v in make_plan(caps, loaded.config, loaded.plugin_manager).verdicts}
    reported = {
        c.feature: c.reason for c in verdicts(caps, loaded.plugin_manager, loaded.config) if c.feature in planned
    }
    assert "measured:" in planned["sqpoll"]
    assert {name: reported[name].split("; hint: ")[0] for name in planned} == planned
