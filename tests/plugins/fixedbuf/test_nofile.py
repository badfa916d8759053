"""fixedbuf's file table against RLIMIT_NOFILE.

The kernel refuses a registered file table with more slots than RLIMIT_NOFILE's
soft limit (EMFILE).  Until session 32 the plan never compared them: under
``prlimit --nofile=32:32`` it said "64 file slots" and open_stack, uringstack.open
and Wal.open failed with "[Errno 24] io_uring_register_files failed: Too many
open files", naming neither the limit nor ``fixedbuf.files``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from uringstack.config import load_config
from uringstack.plan import Plan, make_plan
from uringstack.probe.model import Capabilities
from uringstack.testing import make_fake_capabilities
from uringstack.types import FeatureVerdict, PlanError


def _plan(caps: Capabilities, **overrides: Any) -> Plan:
    loaded = load_config(None, env={}, overrides={"core.cores": [0], **overrides})
    return make_plan(caps, loaded.config, loaded.plugin_manager)


def _verdict(plan: Plan) -> FeatureVerdict:
    return next(v for v in plan.verdicts if v.plugin == "fixedbuf")


@pytest.mark.parametrize("nofile", [16, 32, 63])
def test_auto_shrinks_the_file_table_to_fit_rlimit_nofile(nofile: int) -> None:
    verdict = _verdict(_plan(make_fake_capabilities(nofile=nofile)))
    fit = nofile * 3 // 4  # a quarter left for the process's own descriptors
    assert verdict.enabled
    assert "64 file slots" not in verdict.reason, verdict.reason
    assert f"{fit} file slots per ring" in verdict.reason, verdict.reason
    assert f"RLIMIT_NOFILE is {nofile}" in verdict.reason and "ulimit -n" in verdict.reason
    assert "fixedbuf.files" in verdict.reason


def test_auto_keeps_the_file_table_where_the_limit_allows() -> None:
    verdict = _verdict(_plan(make_fake_capabilities(nofile=1024)))
    assert "64 x 64 KiB buffers and 64 file slots per ring" in verdict.reason
    assert "RLIMIT_NOFILE" not in verdict.reason
    assert "64 file slots per ring" in _verdict(_plan(make_fake_capabilities(nofile=-1))).reason


def test_auto_without_room_for_buffers_or_files_registers_nothing() -> None:
    # 64 KiB of memlock (no buffer fits) and a limit leaving no slot: nothing to register
    caps = make_fake_capabilities(nofile=1, memlock_bytes=64 << 10)
    verdict = _verdict(_plan(caps))
    assert not verdict.enabled
    assert "no registered files" in verdict.reason and "RLIMIT_NOFILE is 1" in verdict.reason


def test_on_with_more_files_than_rlimit_nofile_is_a_plan_error_naming_the_limit_and_the_fix() -> None:
    with pytest.raises(PlanError) as info:
        _plan(make_fake_capabilities(nofile=32), **{"fixedbuf.mode": "on"})
    message = str(info.value)
    assert "fixedbuf.files = 64" in message and "RLIMIT_NOFILE is 32" in message, message
    assert "ulimit -n 64" in message and "fixedbuf.files <= 32" in message, message
    # up to the limit itself the kernel takes the table: on gets what it asked for
    verdict = _verdict(_plan(make_fake_capabilities(nofile=32), **{"fixedbuf.mode": "on", "fixedbuf.files": 32}))
    assert verdict.enabled and "32 file slots per ring" in verdict.reason


CHILD = r"""
import json, sys
import uringstack
with uringstack.open_stack(overrides={"core.cores": [0], "iopoll.mode": "off"}) as stack:
    verdict = next(v for v in stack.plan.verdicts if v.plugin == "fixedbuf")
    with stack.open(sys.argv[1], create=True) as h:
        h.write_from(b"still works", 0)
        buf = bytearray(11); h.read_into(buf, 0)
        slot = h.fixed_index
    print(json.dumps({
        "files": stack.describe()["workers"][0]["rings"]["storage"]["registered_files"],
        "reason": verdict.reason, "slot": slot, "data": buf.decode(),
    }))
"""


def test_open_stack_under_prlimit_nofile_32_registers_a_table_that_fits(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        ["prlimit", "--nofile=32:32", "--", sys.executable, "-c", CHILD, str(tmp_path / "f")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["data"] == "still works"
    assert report["files"] == 24 and report["slot"] is not None, report
    assert "RLIMIT_NOFILE is 32" in report["reason"], report


LOWERED = r"""
import json, resource, sys
import uringstack
from uringstack.probe import probe
caps = probe(devices=False)  # the report says the limit the test runner has
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))  # lowered after probing: a stale report
with uringstack.open_stack(overrides={"core.cores": [0], "iopoll.mode": "off", "fixedbuf.files": 64},
                           caps=caps) as stack:
    with stack.open(sys.argv[1], create=True) as h:
        h.write_from(b"still works", 0)
        buf = bytearray(11); h.read_into(buf, 0)
    print(json.dumps({"notes": stack.describe()["workers"][0]["notes"], "data": buf.decode(),
                      "resources": stack.describe()["workers"][0]["resources"]}))
"""


def test_a_file_table_the_kernel_refuses_in_auto_is_a_note_not_a_failed_stack(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LOWERED, str(tmp_path / "f")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["data"] == "still works" and "fixedbuf.files" not in report["resources"], report
    assert any("failed with EMFILE" in n and "ulimit -n" in n for n in report["notes"]), report
