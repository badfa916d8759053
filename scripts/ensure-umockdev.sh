#!/bin/sh
# Make `umockdev-run` available for the device-probe tests (tests/probe).
# Installs Debian's umockdev package when it is missing and we are root;
# otherwise says what to run.  Exit 0 when umockdev-run is usable afterwards.
set -eu

if command -v umockdev-run >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "umockdev-run missing and not root: run 'apt-get install -y umockdev' as root" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "umockdev-run missing and no apt-get: install umockdev with your package manager" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Update the package lists only if the first attempt fails: fresh containers
# ship without them, but an up-to-date machine should not pay for an update.
apt-get install -y --no-install-recommends umockdev >/dev/null 2>&1 || {
    apt-get update -qq
    apt-get install -y --no-install-recommends umockdev >/dev/null
}
command -v umockdev-run >/dev/null 2>&1
