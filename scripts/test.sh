#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: the host tests, then
# in ../shared/nvme-vm on kernels 5.10, 6.1 and 6.12 the NVMe hardware group
# (IOPOLL and passthrough need an NVMe device with poll queues that this machine
# lacks) and the host groups that depend most on the kernel (scripts/test-nvme.sh).
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
  echo "== NVMe VM, kernels 5.10 / 6.1 / 6.12: the NVMe group, then the ring, plugin and WAL groups"
  start=$(date +%s)
  rc=0
  bash scripts/test-nvme.sh || rc=$?
  echo "== NVMe hardware group: $(( $(date +%s) - start )) s, exit $rc"
  exit $rc
fi
