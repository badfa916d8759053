"""``python -m uringstack.bench.child SPEC_JSON MODE [--no-io]``: one mode, for ``strace``.

Prints one JSON line ``{"ops": N, ...}``.  With ``--no-io`` it builds and
tears down the same stack without I/O: the start-up calls to subtract.
"""

from __future__ import annotations

import json
import sys

from uringstack.bench.ladder import RUNGS
from uringstack.bench.runner import run_mode
from uringstack.bench.spec import BenchSpec


def main(argv: list[str]) -> int:
    spec = BenchSpec.from_json(json.loads(argv[0]))
    row = run_mode(spec, RUNGS[argv[1]], io="--no-io" not in argv[2:])
    print(json.dumps({"ops": row.ops, "status": row.status, "reason": row.reason}))
    return 0 if row.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
