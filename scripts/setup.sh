#!/usr/bin/env bash
# Set up a uringstack development environment on Debian (run as root or with sudo):
# installs what is missing (liburing-dev, a C compiler, Python venv/headers),
# creates .venv and installs the package in editable mode with its dev extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
python=${PYTHON:-python3}
say() { echo "setup: $*" >&2; }

need=()
pkg-config --exists liburing 2>/dev/null || [ -f /usr/include/liburing.h ] || need+=(liburing-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v gcc >/dev/null || need+=(gcc)
"$python" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
inc=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || need+=(python3-dev)
# CPython's own test_io/test_fileio suites run against uringstack's file objects
# (tests/fileobj/test_cpython_*.py); Debian ships the `test` package apart
"$python" -c 'import test.test_io, test.test_fileio' 2>/dev/null ||
  need+=("libpython$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-testsuite")
[ "${URINGSTACK_SKIP_FIO:-0}" = 1 ] || command -v fio >/dev/null || need+=(fio)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
# Reinstall when the package metadata or the C binding changed (or it was never built).
stamp=.venv/.uringstack-installed
src_hash=$(cat pyproject.toml setup.py core/ring/_native/* core/fileobj/_fastio.c core/ring/_futures.c core/ring/_exports.c | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$src_hash" ] || ! .venv/bin/python -c 'import uringstack.ring._uring, uringstack.fileobj._fastio, uringstack.ring._futures, uringstack.ring._exports' 2>/dev/null; then
  say "installing uringstack (editable) and its dev dependencies"
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e '.[dev]' >&2
  echo "$src_hash" > "$stamp"
fi
