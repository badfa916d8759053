#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: the host tests, then
# the NVMe hardware group inside ../shared/nvme-vm (IOPOLL and passthrough need
# an NVMe device with poll queues that this machine lacks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
[ ! -f scripts/ensure-umockdev.sh ] || bash scripts/ensure-umockdev.sh

echo "== static checks (ruff, ruff format, mypy)"
.venv/bin/ruff check core plugins tests
.venv/bin/ruff format --check .
bash scripts/typecheck.sh

echo "== host test suite"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

if [ -f scripts/test-nvme.sh ]; then
  echo "== NVMe hardware group (inside the NVMe VM, kernels 5.10 / 6.1 / 6.12)"
  start=$(date +%s)
  rc=0
  bash scripts/test-nvme.sh || rc=$?
  echo "== NVMe hardware group: $(( $(date +%s) - start )) s, exit $rc"
  exit $rc
fi
