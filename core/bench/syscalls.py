"""``--syscalls``: re-run one mode in a child process under ``strace -c -f``.

strace's summary counts every system call of every thread, including the
child's start-up (imports, probe, stack build); a second child that builds
the same stack but does no I/O measures that overhead, which is subtracted.
strace slows every syscall down a lot, so only the ratio (syscalls per I/O)
is meaningful, never the speed of a traced run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from uringstack.bench.children import run_child
from uringstack.bench.spec import BenchSpec


def strace_path() -> str | None:
    return shutil.which("strace")


def parse_strace_total(text: str) -> int:
    """Total calls from ``strace -c`` output (the ``total`` row's calls column)."""
    for line in reversed(text.splitlines()):
        parts = line.split()
        if parts and parts[-1] == "total":
            # % time, seconds, usecs/call, calls, [errors], "total"
            nums = parts[:-1]
            if len(nums) >= 4:
                return int(nums[3])
            return int(nums[-1])
    raise ValueError("no 'total' row in strace -c output")


def _traced(strace: str, spec: BenchSpec, mode: str, io: bool) -> tuple[int, int]:
    with tempfile.NamedTemporaryFile("r", suffix=".strace", delete=False) as out:
        path = out.name
    try:
        cmd = [
            strace,
            "-c",
            "-f",
            "-o",
            path,
            sys.executable,
            "-m",
            "uringstack.bench.child",
            json.dumps(spec.to_json()),
            mode,
        ] + ([] if io else ["--no-io"])
        proc = run_child(cmd)  # stopped and reaped if the bench is interrupted
        if proc.returncode != 0:
            raise RuntimeError(f"traced child failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        ops = int(json.loads(proc.stdout.strip().splitlines()[-1])["ops"])
        with open(path) as f:
            return parse_strace_total(f.read()), ops
    finally:
        os.unlink(path)


def syscalls_per_io(strace: str, spec: BenchSpec, mode: str) -> tuple[float, dict[str, int]]:
    """Syscalls per I/O of *mode* (start-up subtracted) and the raw counts behind it."""
    total, ops = _traced(strace, spec, mode, True)
    base, _ = _traced(strace, spec, mode, False)
    if ops <= 0:
        raise RuntimeError("the traced run completed no I/O")
    return max(0, total - base) / ops, {
        "traced_calls": total,
        "startup_calls": base,
        "traced_ops": ops,
    }
