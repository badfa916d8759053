#!/usr/bin/env bash
# Run the NVMe hardware test group (tests/nvme, marker "nvme") inside the
# emulated-NVMe VM of ../shared/nvme-vm on a kernel matrix, and after it the
# host groups that depend most on the kernel (scripts/vm-guest-tests.sh:
# NVME_HOST_GROUPS, default "tests/ring tests/plugins" and the file objects'
# differential and O_DIRECT-descriptor tests "| tests/wal tests/probe" and the
# handle's durability-order tests from tests/stack and the file objects' C steps: two parts,
# run as two pytest processes side by side; empty for none), ONE VM call per
# kernel (boot costs ~10 s under TCG):
#
#   5.10  Debian 11 (NVME_VM_SUITE=bullseye): no /dev/ng0n1, no SQE128
#   6.1   Debian 12 (the default): the polled-passthrough defect (docs/nvme.md)
#   6.12  Debian 13 (NVME_VM_SUITE=trixie)
#
# NVME_KERNELS="6.1 6.12" picks a subset; arguments go to pytest.
#
# The VM loads ext4 (after crc32c_generic, which it needs to mount) and
# null_blk with poll queues (/dev/nullb0) at boot through NVME_VM_MODPROBE.
# 5.10's null_blk has no poll_queues parameter: it ignores it and gives a
# /dev/nullb0 without polling, which the tests expect there.
#
# Outcomes per kernel: the guest prints a marker before pytest starts, so
#  - no marker and exit 124/125: the VM never booted -> that kernel is SKIPPED
#    with the reason (if no kernel booted, the group runs on the host, where
#    every test skips with its reason, so nothing claims a pass);
#  - a guest oops: the VM panics (oops=panic) and run exits 125 within
#    seconds with the kernel log on stderr -> FAILED, never a 15-minute hang;
#  - anything else non-zero -> FAILED.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
shared="$(dirname "$repo")/shared"
vm="${NVME_VM_RUN:-$shared/nvme-vm/run}"  # NVME_VM_RUN: a stand-in, for tests of this script
py="$repo/.venv/bin/python"
# timeout_method=thread: a test stuck inside a syscall (where SIGALRM cannot
# reach Python) still ends, with every thread's stack printed.
pytest_args=(-m pytest tests/nvme -m nvme -q -p no:cacheprovider --timeout=180 --timeout-method=thread --durations=6 "$@")
marker="test-nvme: guest booted"  # printed by scripts/vm-guest-tests.sh

host_skip() {
    echo "test-nvme: $1; running the group on the host, where it skips" >&2
    exec "$py" "${pytest_args[@]}"
}

[ -x "$vm" ] || host_skip "$vm not found"

export NVME_VM_MODPROBE="${NVME_VM_MODPROBE-crc32c_generic;ext4;null_blk queue_mode=2 poll_queues=2 gb=1}"

suite_of() {
    case $1 in
        5.10) echo bullseye ;;
        6.1) echo "" ;;
        6.12) echo trixie ;;
        *) echo "test-nvme: unknown kernel '$1' in NVME_KERNELS (known: 5.10 6.1 6.12)" >&2; return 1 ;;
    esac
}

summary=()
# the FAILED/ERROR lines of pytest's short summary, per kernel: CI shows only the
# tail of a run's output, and a failure's name must be in that tail (stop 55's
# "[h1] 1 failed" on 5.10 named no test)
failures=()
failed=0
booted=0
# The runner probes KVM once per kernel image (15 s each when it fails, as on
# nested hosts).  Whether KVM works is the host's property: once one kernel
# found it does not, the others start under TCG at once.
accel_args=()
accel_of() {
    tail -1 "${XDG_CACHE_HOME:-$HOME/.cache}/nvme-vm${1:+-$1}/accel" 2>/dev/null
}
for kernel in ${NVME_KERNELS:-5.10 6.1 6.12}; do
    suite=$(suite_of "$kernel") || exit 2
    echo "== NVMe group on kernel $kernel (${suite:-host suite, bookworm})"
    out=$(mktemp)
    start=$(date +%s)
    # 2400 s: the host groups take 10-15 min per kernel under TCG
    NVME_VM_SUITE=$suite "$vm" ${accel_args[@]+"${accel_args[@]}"} --timeout 2400 -- \
        sh "$repo/scripts/vm-guest-tests.sh" "$py" "${pytest_args[@]}" | tee "$out"
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    # pytest's summary line of each part, the host groups' tagged by their part:
    # "NVMe group: 45 passed ...; host groups: [h1] 400 passed ...; [h2] 380 passed ..."
    last=$(grep -E '^(\[h[0-9]+\] )?[0-9]+ (passed|failed|skipped|error|deselected).* in [0-9.]+s' "$out" \
        | sed 's/ in [0-9.]*s.*//' | paste -sd';' | sed 's/;/; host groups: /; s/;\([^ ]\)/; \1/g')
    [ -z "$last" ] || last="NVMe group: $last"
    while IFS= read -r line; do
        failures+=("$kernel: $line")
    done < <(grep -E '^(\[h[0-9]+\] )?(FAILED|ERROR) ' "$out" | cut -c1-400)
    if grep -q "^$marker" "$out"; then
        booted=$((booted + 1))
        running=$(grep -m1 "^$marker" "$out" | sed 's/.*(\(.*\))/\1/')
    else
        running=""
    fi
    rm -f "$out"
    if [ -z "${NVME_VM_ACCEL:-}" ] && [ "$(accel_of "$suite")" = tcg ]; then
        accel_args=(--accel tcg)
    fi
    case $rc in
        0) summary+=("$kernel ($running): ok in ${secs}s: $last") ;;
        124|125)
            if [ -z "$running" ]; then
                summary+=("$kernel: SKIPPED: the VM did not boot (exit $rc: timeout or boot failure, ${secs}s)")
            else
                failed=1
                why="the guest kernel died (oops/panic: its log is printed above)"
                [ "$rc" = 124 ] && why="the VM hit its timeout mid-run"
                summary+=("$kernel ($running): FAILED after ${secs}s: $why (exit $rc)")
            fi ;;
        *) failed=1; summary+=("$kernel ($running): FAILED in ${secs}s (exit $rc): $last") ;;
    esac
done

echo "== NVMe kernel matrix"
printf '  %s\n' "${summary[@]}"
if [ "${#failures[@]}" -gt 0 ]; then
    echo "== failed tests"
    printf '  %s\n' "${failures[@]}"
fi
[ "$booted" -gt 0 ] || host_skip "no NVMe VM booted"
exit $failed
