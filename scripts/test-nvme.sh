#!/usr/bin/env bash
# Run the NVMe hardware test group (tests/nvme, marker "nvme") inside the
# emulated-NVMe VM of ../shared/nvme-vm, in ONE VM call (boot costs ~7 s).
#
# When the VM is missing or cannot boot, the group is run on the host, where
# every test skips with its reason, so pytest's closing line says "N skipped"
# and never claims a pass that did not happen.
#
# The guest kernel (Debian's) has no block filesystem built in; to test the
# "refuse writes on a mounted namespace" path we fetch that kernel's ext4
# modules with apt-get download (cached) and the tests load them in the guest.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
shared="$(dirname "$repo")/shared"
vm="$shared/nvme-vm/run"
py="$repo/.venv/bin/python"
# timeout_method=thread: a test stuck inside a syscall (where SIGALRM cannot
# reach Python) still ends, with every thread's stack printed.
pytest_args=(-m pytest tests/nvme -m nvme -q -p no:cacheprovider --timeout=180 --timeout-method=thread "$@")

host_skip() {
    echo "test-nvme: $1; running the group on the host, where it skips" >&2
    exec "$py" "${pytest_args[@]}"
}

[ -x "$vm" ] || host_skip "$vm not found"

# --- ext4 modules for the guest kernel (best effort: without them the mount test skips) ---
kmods="${XDG_CACHE_HOME:-$HOME/.cache}/uringstack-nvme-test/kmods"
kpkg=$(apt-cache depends "${NVME_VM_KERNEL_PKG:-linux-image-amd64}" 2>/dev/null \
       | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kver=${kpkg#linux-image-}
if [ -n "$kver" ] && [ ! -f "$kmods/$kver/ext4.ko" ]; then
    scratch=$(mktemp -d)
    if (cd "$scratch" && apt-get download -q "$kpkg" >/dev/null 2>&1); then
        mkdir -p "$kmods/$kver"
        dpkg-deb --fsys-tarfile "$scratch"/*.deb | tar -x -C "$scratch" \
            --wildcards "./lib/modules/$kver/kernel/fs/*" "./lib/modules/$kver/kernel/lib/*" \
            "./lib/modules/$kver/kernel/crypto/*" 2>/dev/null
        for m in fs/ext4/ext4 fs/jbd2/jbd2 fs/mbcache lib/crc16 crypto/crc32c_generic; do
            cp "$scratch/lib/modules/$kver/kernel/$m.ko" "$kmods/$kver/" 2>/dev/null
        done
    else
        echo "test-nvme: could not download $kpkg; the mounted-namespace test will skip" >&2
    fi
    rm -rf "$scratch"
fi
export URINGSTACK_NVME_KMODS="$kmods"

out=$(mktemp)
"$vm" --timeout 900 -- "$py" "${pytest_args[@]}" | tee "$out"
rc=${PIPESTATUS[0]}
started=$(wc -c < "$out"); rm -f "$out"
case $rc in
    124|125)
        # Only a VM that never ran pytest is "no hardware here"; a VM that hung
        # or died while the tests ran is a failure, not a skip.
        [ "$started" -gt 0 ] && { echo "test-nvme: the VM stopped mid-run (exit $rc)" >&2; exit 1; }
        host_skip "the NVMe VM did not produce a result (exit $rc: timeout or boot failure)" ;;
esac
exit $rc
