#!/bin/sh
# Inside the NVMe VM, one call per kernel of scripts/test-nvme.sh:
#   1. the NVMe hardware group (tests/nvme, marker "nvme") on the raw namespace;
#   2. then the host groups that depend most on the kernel (NVME_HOST_GROUPS,
#      default: the ring, the plugins, the WAL, without the WAL's benchmark
#      tests, the probe (since session 32: it submits a NOP and reads the
#      opcode table through io_uring_register on every kernel), and the file
#      objects' differential and O_DIRECT-descriptor tests, which found a
#      kernel defect on 5.10 and 6.1 in session 30), and the handle's durability-order
#      tests from tests/stack (since session 36) and the file objects' C steps
#      (since session 37), with
#      pytest's basetemp on a real ext4 made on the namespace: the
#      guest's /tmp is a tmpfs overlay, which refuses O_DIRECT.  Until session 29
#      only tests/nvme ran on 5.10 / 6.1 / 6.12; the host groups ran on the host's
#      kernel alone, and a submission that stopped at a failing op (5.10) hung.
#      Parts of NVME_HOST_GROUPS separated by "|" run as parallel pytest processes,
#      their output lines tagged [h1], [h2], ...
#
# Usage: vm-guest-tests.sh PYTHON ARGS...  (ARGS: the NVMe group's python
# arguments, "-m pytest tests/nvme -m nvme ...", from scripts/test-nvme.sh)
# Exit status: non-zero when either part failed.
set -u
py=$1
shift
echo "test-nvme: guest booted ($(uname -r))"

echo "== NVMe group"
"$py" "$@"
nvme_rc=$?

# Two parts, "|" between them, run as two pytest processes side by side: the VM has a
# vCPU per host CPU and TCG runs them in parallel (session 36: the host groups took
# 850-1,500 s per kernel in one process, CI 81 of its 90 minutes).  The split keeps
# every test that runs a child without CAP_IPC_LOCK (root's io_uring memory is then
# charged to uid 0, shared by both processes) in the first part.
default_groups="tests/ring tests/plugins tests/fileobj/test_differential.py tests/fileobj/test_direct_descriptor.py"
default_groups="$default_groups | tests/wal tests/probe"
# the handle's durability steps (the flush linked after the write, O_DSYNC, the bound
# durable write, the transfer split) through the public API, on each kernel (since
# session 36: 48-110 s per kernel, in the part that 5.10 finished 290 s sooner)
default_groups="$default_groups tests/stack/test_durable_order.py tests/stack/test_bound_durable.py"
default_groups="$default_groups tests/stack/test_durable_columns.py tests/stack/test_single_op.py"
default_groups="$default_groups tests/stack/test_direct_ends_inside_a_block.py"
# the file objects' C steps (since session 37): the cached read (preadv2 RWF_NOWAIT at
# the position) and the write at once (pwritev2 at the position, where the kernel punts
# buffered io_uring writes), with their guards
default_groups="$default_groups tests/fileobj/test_fastio_read.py tests/fileobj/test_write_direct.py"
groups=${NVME_HOST_GROUPS-$default_groups}
host_rc=0
if [ -n "$(printf '%s' "$groups" | tr -d ' |')" ]; then
    echo "== host groups on this kernel: $groups"
    mnt=/mnt/uringstack-tests
    model=$(cat /sys/block/nvme0n1/device/model 2>/dev/null)
    case $model in
        QEMU*) ;;
        *)  # never a real disk: mkfs would destroy it (tests/nvme/conftest.py refuses too)
            echo "test-nvme: /dev/nvme0n1 is not the VM's emulated namespace (model '$model'): host groups not run" >&2
            exit 1 ;;
    esac
    # Under TCG every test costs 10-20x its host time, and CI has 90 minutes for the
    # host suite and three kernels (session 35: 1,520 s of host groups per kernel, and
    # CI timed out in the third).  So the VM runs fewer rounds of the sweeps whose
    # every round is another case of the same kernel path, and none of the tests
    # marked host_only (the fallback's, by tests/conftest.py, and WAL tests whose
    # subject makes no io_uring call, in their files); the host suite runs them all.
    # The WAL's SIGKILL test starts an interpreter per round (~9 s under TCG): CI's
    # 200 rounds (CI=true reaches the guest) would take 30 min per kernel.
    export URINGSTACK_CRASH_ROUNDS="${URINGSTACK_VM_CRASH_ROUNDS:-6}"
    # The file objects' differential test: its named regression seeds and 4 more
    export DIFF_SEEDS="${DIFF_SEEDS:-4}"
    if mkfs.ext4 -q -F /dev/nvme0n1 >/dev/null && mkdir -p "$mnt" && mount /dev/nvme0n1 "$mnt"; then
        set -f  # the groups are split on "|", then on blanks; never globbed
        oldifs=$IFS
        IFS='|'
        n=0
        for part in $groups; do
            IFS=$oldifs
            n=$((n + 1))
            echo "== host groups, part $n:$part"
            # each part streams with its tag in front, and leaves its exit status behind
            (
                # shellcheck disable=SC2086  # the groups are separate arguments
                # (the umockdev runner fakes devices for the scan, not the kernel: its CLI
                # verdict for a fake namespace assumes a kernel without the passthrough
                # defect 6.12 has (it failed there in session 32, passed on 5.10 and 6.1),
                # so it runs on the host)
                "$py" -m pytest $part --ignore=tests/wal/test_bench.py \
                    --ignore=tests/probe/test_umockdev_runner.py -m "not host_only" -q -p no:cacheprovider \
                    --basetemp="$mnt/basetemp-$n" -o tmp_path_retention_policy=failed \
                    --timeout=300 --timeout-method=thread --durations=6 2>&1
                echo $? >"/tmp/host-groups-rc-$n"
            ) | sed -u "s/^/[h$n] /" &
            IFS='|'
        done
        IFS=$oldifs
        set +f
        wait
        i=0
        while [ "$i" -lt "$n" ]; do
            i=$((i + 1))
            rc=$(cat "/tmp/host-groups-rc-$i" 2>/dev/null || echo 1)
            [ "$rc" = 0 ] || host_rc=$rc
        done
        umount "$mnt" || true
    else
        echo "test-nvme: could not make an ext4 on /dev/nvme0n1 for the host groups" >&2
        host_rc=1
    fi
fi
echo "test-nvme: NVMe group exit $nvme_rc, host groups exit $host_rc"
[ "$nvme_rc" = 0 ] && [ "$host_rc" = 0 ]
