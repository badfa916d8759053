#!/usr/bin/env bash
# Set up (scripts/setup.sh), print this machine's capability report, the stack
# uringstack would build here, and run a short benchmark against fio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
uringstack probe
uringstack plan
uringstack bench randread --file-size 256m --duration 2 --queue-depth 32
