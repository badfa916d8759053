"""``python -m uringstack.bench.child SPEC_JSON MODE [--no-io | --processes]``: one mode in a child.

Prints one JSON line: the row (``{"ops": N, "status": ..., ...}``, the
schema of a result row).  With ``--no-io`` it builds and tears down the same
stack without I/O: the start-up calls ``--syscalls`` subtracts.

With ``--processes`` the spec's N workers run as N processes (each this
module with a one-worker spec pinned to one of the CPUs, its own interpreter,
GIL and stack), started together, and the printed row merges them
(:mod:`uringstack.bench.processes`).
"""

from __future__ import annotations

import json
import sys
import time

from uringstack.bench.ladder import RUNGS
from uringstack.bench.processes import run_processes
from uringstack.bench.runner import run_mode
from uringstack.bench.spec import BenchSpec


def main(argv: list[str]) -> int:
    spec = BenchSpec.from_json(json.loads(argv[0]))
    mode, opts = argv[1], argv[2:]
    if "--processes" in opts:
        row = run_processes(spec, mode)
    else:
        if "--start-at" in opts:
            time.sleep(max(0.0, float(opts[opts.index("--start-at") + 1]) - time.monotonic()))
        row = run_mode(spec, RUNGS[mode], io="--no-io" not in opts)
    print(json.dumps(row.to_json(spec.block_size)))
    return 0 if row.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
