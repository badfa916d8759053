#!/usr/bin/env python3
"""Where the CPU of one QD1 read goes: user and system time per op, beside fio's.

Runs, pinned to one CPU and alternating in every round, (1) the public API's
QD1 loop (one prepared read of one leased buffer, ``prepared.run([offset])``:
the call ``uringstack bench randread -q 1``'s ``batched`` row makes, without
the bench's metering) under each ``--python`` given (e.g. this worktree's and
main's venv: an A/B in the same time window), and (2) fio's io_uring job with
the same file, block size and pinning.  Per op it prints wall time, user and
system CPU time (getrusage of the process; fio's usr_cpu/sys_cpu of its job)
and context switches; medians over the rounds at the end.

``--buffered`` runs both on a hot page cache instead: each read completes in
its submitting io_uring_enter, nothing sleeps, so the user time is the hot cost
of the code.  The difference of the two runs is the point of the script: on
this VM a read that sleeps (a context switch, the CPU idle or running another
tenant meanwhile) makes every process's user time per op about five times its
hot cost, so per-op Python work counts about five times at QD1 (docs/bench.md,
"QD1: where the CPU per I/O goes").  ``--layers`` peels the call layer by
layer in one process (the same multiplier, per layer).

    .venv/bin/python scripts/qd1-cpu.py --file F --python .venv/bin/python \\
        --python /work/main/.venv/bin/python --rounds 6 --ops 25000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time


def child(path: str, ops: int, direct: bool) -> None:
    import uringstack

    blocks = os.path.getsize(path) // 4096
    rnd = random.Random(1)
    offs = [(rnd.randrange(blocks) * 4096,) for _ in range(ops)]
    with uringstack.open_stack() as stack, stack.open(path, direct=direct) as f:
        bufs = f.lease_buffers(1, size=4096)
        run = f.prepare_reads(bufs).run
        for o in offs[:3000]:  # warm-up
            run(o)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for o in offs:
            run(o)
        t1 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cs = r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw
    per = 1e6 / ops
    print(json.dumps({
        "wall_us": (t1 - t0) * per, "usr_us": (r1.ru_utime - r0.ru_utime) * per,
        "sys_us": (r1.ru_stime - r0.ru_stime) * per, "cs": cs / ops,
    }))  # fmt: skip


def layers(path: str, ops: int, rounds: int, direct: bool) -> None:
    """The QD1 call peeled layer by layer, in one process, alternating chunks of *ops*:
    ``run`` (PreparedIO.run, the public call), ``run_one`` (the backend's prepared
    single op), ``bound`` (Ring.bind_rw_one's function) and ``raw`` (the cffi call
    alone, no checks).  Reaches into private attributes: a diagnostic that says so
    when they moved, not an API."""
    import uringstack

    blocks = os.path.getsize(path) // 4096
    rnd = random.Random(1)
    with uringstack.open_stack() as stack, stack.open(path, direct=direct) as f:
        p = f.prepare_reads(f.lease_buffers(1, size=4096))
        p.run([0])
        try:
            prep = p._prep
            bound = prep._bound
            cells = {k: c.cell_contents for k, c in zip(bound.__code__.co_freevars, bound.__closure__, strict=True)}
            call, arg, ring = cells["call"], cells["bound"], cells["ring"]
            result, tick = ring._one_result, ring._tick_ms_now
        except (AttributeError, KeyError, TypeError) as e:
            raise SystemExit(f"--layers: the private attributes it peels moved ({e!r})") from None
        fns = {
            "run": p.run,
            "run_one": lambda t: prep.run_one(t[0]),
            "bound": lambda t: bound(t[0]),
            "raw": lambda t: call(arg, 0, t[0], result, tick),
        }
        cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
        for r in range(rounds):
            for name, fn in list(fns.items())[:: 1 if r % 2 == 0 else -1]:
                offs = [(rnd.randrange(blocks) * 4096,) for _ in range(ops)]
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                for o in offs:
                    fn(o)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                cpu[name].append(((r1.ru_utime - r0.ru_utime) * 1e6 / ops, (r1.ru_stime - r0.ru_stime) * 1e6 / ops))
    print(f"medians of {rounds} chunks of {ops} ops (µs per op):")
    for name, v in cpu.items():
        tot, usr = statistics.median(u + s for u, s in v), statistics.median(u for u, _ in v)
        print(f"  {name:8s} cpu={tot:.2f} usr={usr:.2f} sys={statistics.median(s for _, s in v):.2f}")


def fio(fio_bin: str, path: str, cpu: str, seconds: float, direct: bool) -> dict[str, float]:
    args = [
        fio_bin, "--name=qd1", f"--filename={path}", "--rw=randread", "--bs=4k", "--iodepth=1",
        "--ioengine=io_uring", f"--direct={int(direct)}", "--time_based=1", f"--runtime={int(seconds * 1000)}ms",
        "--ramp_time=300ms", "--norandommap=1", "--randrepeat=0", f"--cpus_allowed={cpu}", "--output-format=json",
    ]  # fmt: skip
    if not direct:
        args.append("--invalidate=0")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]
    n, secs = job["read"]["total_ios"], job["job_runtime"] / 1e3
    per = secs / n * 1e6
    return {
        "wall_us": per, "usr_us": job["usr_cpu"] / 100 * per, "sys_us": job["sys_cpu"] / 100 * per,
        "cs": job["ctx"] / n,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True, help="data file (the bench's, e.g. .uringstack-bench/data-*.bin)")
    ap.add_argument("--python", action="append", help="interpreter with uringstack installed (repeatable)")
    ap.add_argument("--fio", default="fio")
    ap.add_argument("--cpu", default="1", help="CPU every side is pinned to [1]")
    ap.add_argument("--ops", type=int, default=25000, help="ops per uringstack run [25000]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--buffered", action="store_true", help="hot page cache: nothing sleeps")
    ap.add_argument("--layers", action="store_true", help="peel the QD1 call layer by layer in one process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    direct = not a.buffered
    if a.child:
        child(a.file, a.ops, direct)
        return
    if a.layers:
        os.sched_setaffinity(0, {int(a.cpu)})
        layers(a.file, a.ops, a.rounds, direct)
        return
    pythons = a.python or [sys.executable]
    rows: dict[str, list[dict[str, float]]] = {}
    for r in range(a.rounds):
        # reversed every other round, so neither side always runs first
        sides = [*pythons, "fio"] if r % 2 == 0 else ["fio", *reversed(pythons)]
        for side in sides:
            if side == "fio":
                # about as long as a uringstack run: ops x the last run's wall time
                last = rows.get(pythons[0], [{"wall_us": 60.0}])[-1]["wall_us"]
                res = fio(a.fio, a.file, a.cpu, max(0.5, a.ops * last / 1e6), direct)
            else:
                cmd = ["taskset", "-c", a.cpu, side, __file__, "--child", "--file", a.file, "--ops", str(a.ops)]
                out = subprocess.run(cmd + (["--buffered"] if a.buffered else []), capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{side}: {out.stderr.strip()}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.setdefault(side, []).append(res)
            print(f"round {r} {side}: " + " ".join(f"{k}={v:.2f}" for k, v in res.items()), flush=True)
    print("medians (µs per op; cs = context switches per op):")
    for side, runs in rows.items():
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        name = re.sub(r"/bin/python[\d.]*$", "", side)
        print(f"  {name}: cpu={med['usr_us'] + med['sys_us']:.2f} " + " ".join(f"{k}={v:.2f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
