"""fixedbuf: leases, READ_FIXED use, fixed-file slots, and the memlock fallback."""

from __future__ import annotations

import gc
import json
import os
import pathlib
import subprocess
import sys
import weakref
from collections.abc import Iterator

import pytest

from tests.requires import skip_without
from uringstack.ring.buffers import RegisteredBuffer
from uringstack.ring.flags import Op
from uringstack.stack import Stack, open_stack

BS = 4096


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = open_stack(
        overrides={
            "core.cores": [0],
            "fixedbuf.mode": "on",
            "fixedbuf.count": 8,
            "fixedbuf.buffer_size": 2 * BS,
            "fixedbuf.files": 4,
            # direct opens stay on the storage ring, whose pool this file tests, also
            # where tmp_path is on a device with poll queues (the NVMe VM)
            "iopoll.mode": "off",
        }
    )
    yield s
    s.close()


def test_pool_is_registered_with_the_ring(stack: Stack) -> None:
    worker = stack.workers[0]
    pool = worker.buffers.get("fixedbuf")
    assert worker.rings["storage"].registered_buffers == 8
    assert pool.available() == 8
    assert stack.describe()["workers"][0]["rings"]["storage"]["registered_files"] == 4
    described = stack.describe()["workers"][0]
    assert described["buffer_providers"] == ["fixedbuf"]
    assert described["resources"] == ["fixedbuf.files"]


def test_reads_on_leases_are_read_fixed(stack: Stack, tmp_path: pathlib.Path) -> None:
    data = os.urandom(8 * BS)
    (tmp_path / "f").write_bytes(data)
    with stack.open(tmp_path / "f", direct=True) as h:
        leases = h.lease_buffers(4, size=BS)
        assert all(isinstance(b, RegisteredBuffer) for b in leases)
        pending = h.start_read_many([0, BS, 2 * BS, 3 * BS], leases)
        ops = pending.batch._arrays.get("opcodes")  # type: ignore[attr-defined]
        assert ops == [Op.READ_FIXED] * 4
        assert pending.wait() == [BS] * 4
        for i, lease in enumerate(leases):
            assert bytes(lease.view) == data[i * BS : (i + 1) * BS]
        h.release_buffers(leases)
        assert stack.workers[0].buffers.get("fixedbuf").available() == 8


def test_double_release_is_an_error(stack: Stack, tmp_path: pathlib.Path) -> None:
    pool = stack.workers[0].buffers.get("fixedbuf")
    lease = pool.lease()
    pool.release(lease)
    with pytest.raises(ValueError, match="released twice"):
        pool.release(lease)
    assert pool.available() == 8


def test_exhausted_pool_raises_and_release_in_finally_returns_it(stack: Stack) -> None:
    pool = stack.workers[0].buffers.get("fixedbuf")
    taken = [pool.lease() for _ in range(8)]
    with pytest.raises(BufferError, match="all 8 registered buffers are leased"):
        pool.lease()
    try:
        raise RuntimeError("caller failed while holding leases")
    except RuntimeError:
        pass
    finally:
        for lease in taken:
            pool.release(lease)
    assert pool.available() == 8


def test_lease_in_flight_is_not_handed_out_again(stack: Stack) -> None:
    """Released while the kernel still owns it: the pool defers the return until the CQE."""
    pool = stack.workers[0].buffers.get("fixedbuf")
    ring = stack.workers[0].rings["storage"]
    r, w = os.pipe()
    lease = pool.lease()
    batch = ring.submit(Op.READ, r, addrs=lease.addr, lens=64, offsets=-1 & (2**64 - 1), keep=[lease])
    lease.batch = batch
    pool.release(lease)
    others = [pool.lease() for _ in range(7)]
    assert lease not in others
    with pytest.raises(BufferError):
        pool.lease()
    os.write(w, b"k" * 64)
    ring.wait(batch)
    assert pool.lease() is lease
    assert bytes(lease.view[:64]) == b"k" * 64
    os.close(r)
    os.close(w)


def test_a_part_of_a_registered_buffer_is_in_flight_while_its_buffer_is(stack: Stack) -> None:
    """Batches mark the registered buffer a lease is part of (lease_buffers hands out parts):
    a part's in_flight() used to ask only itself and said False while the kernel read into it."""
    pool = stack.workers[0].buffers.get("fixedbuf")
    ring = stack.workers[0].rings["storage"]
    r, w = os.pipe()
    root = pool.lease()
    part, other = root.sub(0, 64), root.sub(BS, 64)
    try:
        batch = ring.submit(Op.READ, r, addrs=part.addr, lens=64, offsets=-1 & (2**64 - 1), keep=[part])
        (part.parent or part).batch = batch  # as every backend marks a lease's batch
        assert part.in_flight() and root.in_flight()
        assert other.in_flight()  # another part of the same buffer: the safe answer
        os.write(w, b"p" * 64)
        ring.wait(batch)
        assert not part.in_flight() and not root.in_flight() and not other.in_flight()
        assert bytes(part.view) == b"p" * 64
    finally:
        pool.release(root)
        os.close(r)
        os.close(w)


def test_batch_keeps_plain_buffer_alive_in_flight(stack: Stack) -> None:
    ring = stack.workers[0].rings["storage"]
    r, w = os.pipe()

    class Buf(bytearray):
        pass

    buf = Buf(32)
    ref = weakref.ref(buf)
    from uringstack.ring.native import ffi

    pin = ffi.from_buffer(buf, require_writable=True)
    batch = ring.submit(
        Op.READ, r, addrs=int(ffi.cast("uintptr_t", pin)), lens=32, offsets=-1 & (2**64 - 1), keep=[pin, buf]
    )
    del buf, pin
    gc.collect()
    assert ref() is not None
    os.write(w, b"p" * 32)
    ring.wait(batch)
    os.close(r)
    os.close(w)


def test_fixed_file_slots_are_reused_on_close(stack: Stack, tmp_path: pathlib.Path) -> None:
    handles = [stack.open(tmp_path / f"f{i}", create=True) for i in range(4)]
    slots = sorted(h.fixed_index for h in handles)  # type: ignore[type-var]
    assert slots == [0, 1, 2, 3]
    extra = stack.open(tmp_path / "extra", create=True)
    assert extra.fixed_index is None, "table full: the handle works with a plain fd"
    extra.write_from(b"plain", 0)
    freed = handles[2].fixed_index
    handles[2].close()
    again = stack.open(tmp_path / "again", create=True)
    assert again.fixed_index == freed
    # I/O through the fixed slot really reaches the right file
    again.write_from(b"via fixed slot", 0)
    again.fdatasync()
    assert (tmp_path / "again").read_bytes() == b"via fixed slot"
    for h in (*handles, extra, again):
        h.close()


CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))
from uringstack.stack import open_stack
with open_stack(overrides={"core.cores": [0]}) as stack:
    verdict = next(v for v in stack.plan.verdicts if v.plugin == "fixedbuf")
    with stack.open(sys.argv[1], create=True) as h:
        h.write_from(b"still works", 0)
        buf = bytearray(11); h.read_into(buf, 0)
    print(json.dumps({
        "pool": stack.workers[0].buffers.get("fixedbuf") is not None,
        "registered": stack.workers[0].rings["storage"].registered_buffers,
        "enabled": verdict.enabled, "reason": verdict.reason, "hint": verdict.hint,
        "notes": stack.describe()["workers"][0]["notes"], "data": buf.decode(),
    }))
"""


def _without_ipc_lock(child: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run *child* in a Python without CAP_IPC_LOCK (which exempts root from RLIMIT_MEMLOCK)."""
    return subprocess.run(
        ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", sys.executable, "-c", child,
         str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_memlock_too_low_gives_a_stack_without_registered_buffers(tmp_path: pathlib.Path) -> None:
    # Root has CAP_IPC_LOCK, which exempts it from RLIMIT_MEMLOCK: drop it for the child.
    out = _without_ipc_lock(CHILD, tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["data"] == "still works"
    assert report["pool"] is False and report["registered"] == 0
    assert "RLIMIT_MEMLOCK is 64 KiB, so the pools may pin 48 KiB" in report["reason"]
    assert "ulimit -l" in report["hint"]
    assert any("no registered buffers" in n for n in report["notes"])


def test_memlock_on_mode_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    child = CHILD.replace('overrides={"core.cores": [0]}', 'overrides={"core.cores": [0], "fixedbuf.mode": "on"}')
    out = _without_ipc_lock(child, tmp_path)
    assert out.returncode != 0
    assert "fixedbuf is configured 'on' but cannot be used" in out.stderr
    assert "RLIMIT_MEMLOCK" in out.stderr


def test_min_count_decides_between_a_shrunk_pool_and_files_only(tmp_path: pathlib.Path) -> None:
    """``min_count``: in auto, a pool the memlock limit shrinks is still registered
    when at least ``min_count`` buffers fit, and not at all below that.

    1 MiB of RLIMIT_MEMLOCK, one ring, 64 x 64 KiB wanted: three quarters of the
    limit fit 12 buffers."""
    reports = {}
    for min_count in (12, 13):
        child = CHILD.replace("(64 * 1024, 64 * 1024)", "(1 << 20, 1 << 20)").replace(
            'overrides={"core.cores": [0]}',
            'overrides={"core.cores": [0], "fixedbuf.buffer_size": 65536, "fixedbuf.count": 64, '
            f'"fixedbuf.min_count": {min_count}}}',
        )
        out = _without_ipc_lock(child, tmp_path)
        assert out.returncode == 0, out.stderr
        reports[min_count] = json.loads(out.stdout.strip().splitlines()[-1])
        assert reports[min_count]["data"] == "still works"
    shrunk, files_only = reports[12], reports[13]
    assert shrunk["enabled"] and shrunk["pool"] and shrunk["registered"] == 12, shrunk
    assert "shrunk to 12 buffers" in shrunk["reason"]
    assert files_only["pool"] is False and files_only["registered"] == 0, files_only
    assert "registered files only" in files_only["reason"]


TWO_WORKERS = r"""
import gc, json, mmap, os, resource, sys
resource.setrlimit(resource.RLIMIT_MEMLOCK, (8 << 20, 8 << 20))
import uringstack
from uringstack.ring import Ring
held = None
if sys.argv[2] == "held":
    # another ring's buffers take 6.5 MiB of the limit (io_uring charges them to the user):
    # the plan, which reads the limit, lets 1 MiB per worker through; the second is refused
    other, mem = Ring(entries=4), mmap.mmap(-1, 13 << 19)
    held = other.register_buffers([memoryview(mem)])
overrides = {"core.cores": sorted(os.sched_getaffinity(0))[:2], "fixedbuf.mode": sys.argv[3]}
if sys.argv[2] == "held":
    overrides["fixedbuf.count"] = 16
try:
    with uringstack.open_stack(overrides=overrides) as stack:
        verdict = next(v for v in stack.plan.verdicts if v.plugin == "fixedbuf")
        print(json.dumps({"reason": verdict.reason,
                          "registered": [w.rings["storage"].registered_buffers for w in stack.workers]}))
except Exception as e:
    print(json.dumps({"raised": type(e).__name__, "errno": getattr(e, "errno", None)}))
for _ in range(3):
    gc.collect()
print("survived")
"""


def _two_workers(tmp_path: pathlib.Path, held: str, mode: str) -> tuple[dict[str, object], str]:
    if len(os.sched_getaffinity(0)) < 2:
        skip_without("2 CPUs (two workers, each registering its own pool)")
    out = subprocess.run(
        ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", sys.executable, "-X", "faulthandler",
         "-c", TWO_WORKERS, str(tmp_path / "m"), held, mode],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "survived", out.stdout + out.stderr[-3000:]
    return json.loads(lines[-2]), out.stderr


def test_a_pool_filling_the_whole_memlock_limit_is_shrunk_so_every_worker_registers(tmp_path: pathlib.Path) -> None:
    """8 MiB of RLIMIT_MEMLOCK, two workers of 64 x 64 KiB: 8 MiB "fitted", and the second
    worker's registration failed (the rings' own memory is charged too), though the plan
    said both would register.  A quarter of the limit is now left free: 48 per ring."""
    report, _ = _two_workers(tmp_path, "none", "auto")
    assert report["registered"] == [48, 48], report
    assert "shrunk to 48 buffers" in str(report["reason"])


def test_a_registration_the_kernel_refuses_is_an_error_never_a_crash(tmp_path: pathlib.Path) -> None:
    """[fixedbuf] mode = "on", the second worker's registration refused (ENOMEM): open_stack
    raised the documented UringIOError, and then the interpreter died in a collection (a
    segfault after 64 "memoryview has 1 exported buffer" warnings): the failed registration
    left its buffer exports for the collector to tear down with the pool's memory."""
    report, stderr = _two_workers(tmp_path, "held", "on")
    assert report == {"raised": "UringIOError", "errno": 12}, report
    assert "Exception ignored" not in stderr and "Fatal Python error" not in stderr, stderr[-3000:]


def test_a_handle_closed_after_the_teardown_took_the_file_table_closes_cleanly(
    stack: Stack, tmp_path: pathlib.Path
) -> None:
    """``stack.close()`` in one thread while another closes a handle: the teardown may take the
    fixed-file table down (io_uring_unregister_files) before the handle's close clears its
    slot.  Clearing a slot of a table the ring no longer has fails (ENXIO), which reached the
    handle's closer as a PluginError (tests/ring/test_stress_signals.py on 5.10, session 44)."""
    from uringstack.plugins.fixedbuf.plugin import FILES_KEY

    h = stack.open(tmp_path / "f", create=True)
    assert h.fixed_index is not None
    worker = stack.workers[0]
    table = worker.resources[FILES_KEY]
    worker.call(table.close)  # what the teardown does first, here before the handle's close
    h.close()  # no error: the slot went with the table
    again = stack.open(tmp_path / "g", create=True)
    try:
        assert again.fixed_index is None, "a slot of a table that is gone was handed out"
        again.write_from(b"plain fd", 0)
    finally:
        again.close()
    assert (tmp_path / "g").read_bytes() == b"plain fd"
