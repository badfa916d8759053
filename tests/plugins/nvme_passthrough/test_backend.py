"""Pure parts of the Stack backends: byte ranges -> NVMe commands, result folding, hook decisions."""

from __future__ import annotations

import errno
from array import array
from pathlib import Path
from typing import Any

import pytest

from uringstack.config import StackConfig, load_config
from uringstack.errors import AlignmentError
from uringstack.plan import make_plan
from uringstack.pluginmanager import make_plugin_manager
from uringstack.plugins.nvme_passthrough import plugin as pt_plugin
from uringstack.plugins.nvme_passthrough.backend import (
    PassthroughPending,
    fold_results,
    max_transfer_bytes,
    split_into_commands,
)
from uringstack.plugins.nvme_passthrough.commands import (
    NVME_CMD_WRITE,
    NVME_URING_CMD_SIZE,
    build_rw_commands,
    decode_command,
)
from uringstack.plugins.nvme_passthrough.status import NvmeStatusError
from uringstack.probe.model import BlockDevice
from uringstack.testing import make_fake_capabilities
from uringstack.types import PlanError, Target

# --- byte ranges -> commands ------------------------------------------------------------


def test_one_command_per_op_when_within_the_transfer_limit() -> None:
    plan = split_into_commands("read", "/dev/ngX", [0, 8192, 4096 * 100], [0x10000, 0x20000, 0x30000],
                               [4096, 8192, 4096], 512, 128 * 1024)  # fmt: skip
    assert list(plan.slbas) == [0, 16, 800]
    assert list(plan.nlbs) == [8, 16, 8]
    assert list(plan.addrs) == [0x10000, 0x20000, 0x30000]
    assert plan.owner is None  # 1:1, results need no folding


def test_large_op_is_split_into_consecutive_commands() -> None:
    plan = split_into_commands("write", "/dev/ngX", [4096, 0], [0x100000, 0x900000], [10 * 4096, 4096], 4096, 4 * 4096)
    assert list(plan.slbas) == [1, 5, 9, 0]
    assert list(plan.nlbs) == [4, 4, 2, 1]
    assert list(plan.addrs) == [0x100000, 0x104000, 0x108000, 0x900000]
    assert plan.owner is not None and list(plan.owner) == [0, 0, 0, 1]


def test_an_op_of_length_zero_gets_no_command_and_moves_zero_bytes() -> None:
    """The storage ring, IOPOLL and the fallback return 0 for a zero-length op (O_DIRECT
    included); NVMe has no empty transfer, so the op gets no command and its result is 0."""
    addrs = [0x1000, 0x2000, 0x3000]
    plan = split_into_commands("read", "/dev/ngX", [0, 4096, 8192], addrs, [4096, 0, 512], 512, 1 << 20)
    assert list(plan.slbas) == [0, 16] and list(plan.nlbs) == [8, 1]
    assert plan.owner is not None and list(plan.owner) == [0, 2]  # commands -> ops, the empty op skipped
    assert fold_results([0, 0], plan.owner, [4096, 0, 512]) == ([4096, 0, 512], None)
    assert fold_results([0, -errno.EIO], plan.owner, [4096, 0, 512]) == ([4096, 0, -errno.EIO], None)
    empty = split_into_commands("write", "/dev/ngX", [0], [0x1000], [0], 512, 1 << 20)
    assert empty.n == 0 and empty.owner is not None


@pytest.mark.parametrize(
    ("offset", "addr", "length", "message"),
    [
        (100, 0x1000, 4096, "offset 100 is not a multiple of 512"),
        (0, 0x1000, 1000, "length 1000 is not a multiple of 512"),
        (0, 0x1010, 4096, "buffer address 0x1010 is not a multiple of 512"),
        (-512, 0x1000, 512, "offset -512"),
        (100, 0x1000, 0, "offset 100 is not a multiple of 512"),  # checked for an empty op too
        (0, 0x1010, 0, "buffer address 0x1010"),  # (as O_DIRECT does on the other backends)
    ],
)
def test_misaligned_ranges_are_refused_with_the_reason(offset: int, addr: int, length: int, message: str) -> None:
    with pytest.raises(AlignmentError, match=message) as info:
        split_into_commands("read", "/dev/ng0n1", [0, offset], [0x2000, addr], [512, length], 512, 1 << 20)
    assert "op 1" in str(info.value) and "/dev/ng0n1" in str(info.value)


def test_max_transfer_bytes_takes_the_tightest_limit() -> None:
    assert max_transfer_bytes(512, 127, 512, 4096) == 126 * 4096  # segments bind (one page of slack)
    assert max_transfer_bytes(128, 1000, 4096, 4096) == 128 * 1024  # max_hw_sectors_kb binds
    assert max_transfer_bytes(None, None, 512, 4096) == 65536 * 512  # only NLB's 16 bits
    assert max_transfer_bytes(1, None, 4096, 4096) == 4096  # never below one block


def test_variable_length_commands_decode_back() -> None:
    cmds = build_rw_commands(
        NVME_CMD_WRITE, 3, array("Q", [7, 1 << 40]), array("Q", [1, 256]), array("Q", [0xA000, 0xB000]), 4096
    )
    assert len(cmds) == 2 * NVME_URING_CMD_SIZE
    first = decode_command(cmds[:NVME_URING_CMD_SIZE])
    second = decode_command(cmds[NVME_URING_CMD_SIZE:])
    assert (first["opcode"], first["nsid"], first["cdw10"], first["cdw12"], first["data_len"]) == (1, 3, 7, 0, 4096)
    assert first["addr"] == 0xA000
    assert (second["cdw10"], second["cdw11"]) == (0, 1 << 8)  # the 64-bit SLBA split low/high
    assert second["cdw12"] == 255 and second["data_len"] == 256 * 4096
    with pytest.raises(ValueError, match=r"1\.\.65536"):
        build_rw_commands(NVME_CMD_WRITE, 1, array("Q", [0]), array("Q", [0]), array("Q", [0]), 512)


def test_fua_sets_cdw12_bit_30_beside_the_block_count() -> None:
    """write_durable(sync="dsync") on a namespace: Force Unit Access makes each Write durable."""
    slbas, nlbs, addrs = array("Q", [0, 8]), array("Q", [8, 256]), array("Q", [0xA000, 0xB000])
    plain = build_rw_commands(NVME_CMD_WRITE, 1, slbas, nlbs, addrs, 512)
    fua = build_rw_commands(NVME_CMD_WRITE, 1, slbas, nlbs, addrs, 512, fua=True)
    for i, count in enumerate((8, 256)):
        rec = slice(i * NVME_URING_CMD_SIZE, (i + 1) * NVME_URING_CMD_SIZE)
        assert decode_command(plain[rec])["cdw12"] == count - 1
        assert decode_command(fua[rec])["cdw12"] == (1 << 30) | (count - 1)


# --- CQE results -> per-op results ------------------------------------------------------------


def test_fold_results_one_to_one() -> None:
    out, bad = fold_results([0, -errno.EINVAL, 0x4080, 0], None, [4096, 4096, 512, 8192])
    assert out == [4096, -errno.EINVAL, -errno.EIO, 8192]
    assert bad == 2


def test_fold_results_split_ops_report_their_first_failure() -> None:
    owner = [0, 0, 0, 1, 1]
    out, bad = fold_results([0, 0, 0, 0, 0], owner, [12288, 8192])
    assert (out, bad) == ([12288, 8192], None)
    out, bad = fold_results([0, 0x80, -errno.EIO, 0, -errno.EFAULT], owner, [12288, 8192])
    assert out == [-errno.EIO, -errno.EFAULT]
    assert bad == 1  # command index of the first NVMe status


class _FakeBatch:
    finished = True


class _FakeRing:
    """What PassthroughPending needs of a ring: ``wait`` returning raw CQE results."""

    flags = 0
    closed = False

    def __init__(self, raw: list[int]) -> None:
        self.raw = raw

    def wait(self, batch: Any) -> list[int]:
        return self.raw


def test_pending_maps_status_to_eio_and_raises_the_decoded_status() -> None:
    plan = split_into_commands("read", "/dev/ng0n1", [0, 4096], [0x1000, 0x2000], [4096, 4096], 4096, 1 << 20)
    ring: Any = _FakeRing([0, 0x80])  # LBA Out of Range on the second command
    pending = PassthroughPending(ring, _FakeBatch(), "nvme read", "/dev/ng0n1", plan, [4096, 4096])  # type: ignore[arg-type]
    with pytest.raises(NvmeStatusError) as info:
        pending.wait()
    assert info.value.status_name == "LBA Out of Range" and info.value.lba == 1 and info.value.index == 1
    assert pending.results == [4096, -errno.EIO]
    with pytest.raises(NvmeStatusError):  # asking again gives the same answer
        pending.wait()


def test_pending_flush_tail_results() -> None:
    ring: Any = _FakeRing([0])
    flush = PassthroughPending(ring, _FakeBatch(), "nvme flush", "/dev/ng0n1", None, [], tail=1)  # type: ignore[arg-type]
    assert flush.wait() == [0]
    plan = split_into_commands("write", "/dev/ng0n1", [0], [0x1000], [4096], 4096, 1 << 20)
    ring = _FakeRing([0, 0x06])  # write fine, Flush: Internal Error
    ws = PassthroughPending(ring, _FakeBatch(), "nvme write", "/dev/ng0n1", plan, [4096], tail=1)  # type: ignore[arg-type]
    with pytest.raises(NvmeStatusError, match="Internal Error"):
        ws.wait()
    assert ws.results == [4096, -errno.EIO]
    ring = _FakeRing([-errno.EINVAL, -errno.ECANCELED])  # write refused: the linked flush is cancelled
    ws = PassthroughPending(ring, _FakeBatch(), "nvme write", "/dev/ng0n1", plan, [4096], tail=1)  # type: ignore[arg-type]
    assert ws.wait() == [-errno.EINVAL, -errno.ECANCELED]


# --- hook decisions ---------------------------------------------------------------------------


def _config(**overrides: Any) -> StackConfig:
    return load_config(None, env={}, overrides=overrides).config


def _target(path: str, kind: str, *, direct: bool = True, device: BlockDevice | None = None, **options: Any) -> Target:
    return Target(path=path, kind=kind, direct=direct, writable=True, device=device, options=options)  # type: ignore[arg-type]


def test_char_device_needs_passthrough_and_says_why_not() -> None:
    caps = make_fake_capabilities(nvme=False)
    with pytest.raises(PlanError, match="required but impossible: nvme_passthrough is not enabled"):
        pt_plugin.uringstack_select_backend(target=_target("/dev/ng0n1", "nvme_char"), caps=caps, config=_config())
    with pytest.raises(PlanError, match="only passthrough can serve it"):
        pt_plugin.decide_backend(_target("/dev/ng0n1", "nvme_char", passthrough="off"), caps, _config())


def test_block_device_uses_passthrough_only_when_asked() -> None:
    caps = make_fake_capabilities(nvme=True)
    dev = caps.devices[0]
    assert pt_plugin.uringstack_select_backend(
        target=_target(dev.path, "block", device=dev), caps=caps, config=_config()
    ) is None  # fmt: skip
    with pytest.raises(ValueError, match="allowed are"):
        pt_plugin.decide_backend(_target(dev.path, "block", device=dev, passthrough="yes"), caps, _config())


def test_auto_falls_back_and_on_fails_when_the_char_device_cannot_be_opened(tmp_path: Path) -> None:
    # The fake namespace's /dev/ngXnY is a path that does not exist on this machine.
    missing = str(tmp_path / "ng9n1")
    dev = BlockDevice(
        name="nvme9n1", path="/dev/nvme9n1", nvme=True, generic_char=missing, generic_char_accessible=True, nsid=1
    )
    caps = make_fake_capabilities(nvme=True, devices=[dev])
    char, why = pt_plugin.decide_backend(_target(dev.path, "block", device=dev, passthrough="auto"), caps, _config())
    assert char is None and "no such device node" in why and "block I/O instead" in why
    with pytest.raises(PlanError, match="no such device node"):
        pt_plugin.decide_backend(_target(dev.path, "block", device=dev, passthrough="on"), caps, _config())


def test_not_nvme_auto_passes_on_fails() -> None:
    disk = BlockDevice(name="vda", path="/dev/vda", model="virtio")
    caps = make_fake_capabilities(nvme=True, devices=[disk])
    char, why = pt_plugin.decide_backend(_target("/dev/vda", "block", device=disk, passthrough="auto"), caps, _config())
    assert char is None and "not an NVMe namespace" in why
    with pytest.raises(PlanError, match="not an NVMe namespace"):
        pt_plugin.decide_backend(_target("/dev/vda", "block", device=disk, passthrough=True), caps, _config())
    off = _config(**{"nvme_passthrough.mode": "off"})
    char, why = pt_plugin.decide_backend(_target("/dev/vda", "block", device=disk, passthrough="auto"), caps, off)
    assert char is None and "off" in why


def test_read_only_access_is_the_probes_fact_and_the_plan_opens_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # `uringstack plan` is a dry run: a device open there is a side effect (and slow
    # on some controllers).  The probe already opened each /dev/ngXnY once, read-only.
    def no_open(path: str, writable: bool) -> int:
        raise AssertionError(f"the plan opened {path} (writable={writable})")

    monkeypatch.setattr(pt_plugin, "open_char_device", no_open)
    caps = make_fake_capabilities(nvme=True)  # /dev/ng0n1 does not exist here: an open would fail
    plan = make_plan(caps, _config(), make_plugin_manager(autoload=True))
    targets = {t.target: t for t in plan.targets}
    assert targets["/dev/ng0n1"].backend == "nvme_passthrough", targets["/dev/ng0n1"]
    # What the probe could not open is refused with the probe's words, still without an open.
    dev = caps.devices[0].model_copy(update={"generic_char_accessible": False, "generic_char_error": "EACCES: nope"})
    target = Target(path="/dev/nvme0n1", kind="block", direct=True, writable=False, device=dev,
                    options={"passthrough": "auto"})  # fmt: skip
    char, why = pt_plugin.decide_backend(target, caps, _config())
    assert char is None and "EACCES: nope" in why


def test_a_device_the_probe_did_not_list_is_refused_with_why() -> None:
    caps = make_fake_capabilities(nvme=True)
    char, why = pt_plugin.decide_backend(_target("/dev/nvme5n1", "block", passthrough="auto"), caps, _config())
    assert char is None and "lists no device /dev/nvme5n1" in why
    with pytest.raises(PlanError, match="lists no namespace with the generic char device /dev/ng5n1"):
        pt_plugin.decide_backend(_target("/dev/ng5n1", "nvme_char"), caps, _config())
