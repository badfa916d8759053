"""struct nvme_uring_cmd construction: layout against the kernel header, LBA split, NLB."""

from __future__ import annotations

import re
import struct
from array import array
from pathlib import Path

import pytest

from uringstack.plugins.nvme_passthrough import commands as c
from uringstack.probe.devices import NVME_IOCTL_ID

HEADER = Path("/usr/include/linux/nvme_ioctl.h")

# Byte offsets of struct nvme_uring_cmd as the kernel UAPI defines them (written out
# by hand from include/uapi/linux/nvme_ioctl.h, not derived from the code under test).
EXPECTED_OFFSETS = {
    "opcode": (0, 1), "flags": (1, 1), "rsvd1": (2, 2), "nsid": (4, 4), "cdw2": (8, 4),
    "cdw3": (12, 4), "metadata": (16, 8), "addr": (24, 8), "metadata_len": (32, 4),
    "data_len": (36, 4), "cdw10": (40, 4), "cdw11": (44, 4), "cdw12": (48, 4),
    "cdw13": (52, 4), "cdw14": (56, 4), "cdw15": (60, 4), "timeout_ms": (64, 4),
    "rsvd2": (68, 4),
}  # fmt: skip


def test_layout_matches_kernel_struct() -> None:
    assert c.NVME_URING_CMD_SIZE == 72
    assert c.NVME_URING_CMD_FIELDS == EXPECTED_OFFSETS


@pytest.mark.skipif(not HEADER.exists(), reason="kernel UAPI headers (linux-libc-dev) not installed")
def test_field_order_matches_installed_header() -> None:
    text = HEADER.read_text()
    body = re.search(r"struct nvme_uring_cmd \{(.*?)\};", text, re.S)
    assert body is not None
    fields = re.findall(r"__u(8|16|32|64)\s+(\w+);", body.group(1))
    assert [name for _, name in fields] == list(EXPECTED_OFFSETS)
    assert [int(bits) // 8 for bits, _ in fields] == [s for _, s in EXPECTED_OFFSETS.values()]


def test_ioctl_numbers() -> None:
    # _IOWR('N', 0x80, 72): dir=3 << 30 | size 72 << 16 | 'N' << 8 | 0x80
    assert c.NVME_URING_CMD_IO == (3 << 30) | (72 << 16) | (0x4E << 8) | 0x80 == 0xC0484E80
    assert c.io("N", 0x40) == NVME_IOCTL_ID == 0x4E40  # the probe's constant, as the UAPI macro builds it
    with pytest.raises(ValueError, match="14 bits"):
        c.iowr("N", 1, 1 << 14)


def test_single_read_command_bytes() -> None:
    slba = (7 << 32) | 0x89ABCDEF
    raw = c.rw_command(c.NVME_CMD_READ, 3, slba, 8, 0x7F00_0000_1000, 4096)
    assert len(raw) == 72
    assert raw[0] == 0x02
    assert struct.unpack_from("<I", raw, 4)[0] == 3
    assert struct.unpack_from("<Q", raw, 24)[0] == 0x7F00_0000_1000
    assert struct.unpack_from("<I", raw, 36)[0] == 8 * 4096
    assert struct.unpack_from("<I", raw, 40)[0] == 0x89ABCDEF  # cdw10 = SLBA low
    assert struct.unpack_from("<I", raw, 44)[0] == 7  # cdw11 = SLBA high
    assert struct.unpack_from("<I", raw, 48)[0] == 7  # cdw12 = NLB - 1
    # Everything else stays zero (metadata, cdw2/3, cdw13-15, timeout).
    for name in ("flags", "rsvd1", "cdw2", "cdw3", "metadata", "metadata_len", "cdw13",
                 "cdw14", "cdw15", "timeout_ms", "rsvd2"):  # fmt: skip
        off, size = EXPECTED_OFFSETS[name]
        assert raw[off : off + size] == bytes(size), name


def test_flush_and_write_opcodes() -> None:
    flush = c.flush_command(9)
    assert flush[0] == 0x00 and struct.unpack_from("<I", flush, 4)[0] == 9
    assert flush[8:] == bytes(64)
    assert c.rw_command(c.NVME_CMD_WRITE, 1, 0, 1, 0, 512)[0] == 0x01
    assert c.decode_command(c.rw_command(c.NVME_CMD_WRITE, 1, 5, 1, 0, 512))["cdw12"] == 0


def test_nlb_limits() -> None:
    c.rw_command(c.NVME_CMD_READ, 1, 0, 65536, 0, 512)
    with pytest.raises(ValueError, match="NLB is 16 bits"):
        c.rw_command(c.NVME_CMD_READ, 1, 0, 65537, 0, 512)
    with pytest.raises(ValueError):
        c.rw_command(c.NVME_CMD_READ, 1, 0, 0, 0, 512)


def test_lba_arithmetic() -> None:
    assert c.lba_shift(512) == 9 and c.lba_shift(4096) == 12
    with pytest.raises(ValueError):
        c.lba_shift(520)
    assert c.offset_to_lba(8192, 16384, 4096) == (2, 4)
    assert c.offset_to_lba(512, 512, 512) == (1, 1)
    with pytest.raises(ValueError, match="whole number"):
        c.offset_to_lba(100, 4096, 4096)
    with pytest.raises(ValueError, match="whole number"):
        c.offset_to_lba(0, 1000, 512)


def test_batch_matches_single_commands() -> None:
    lbas = [0, 1, 2**32 - 1, 2**32, 2**40 + 5, 123456789]
    base = 0x10000
    batch = c.build_rw_batch(c.NVME_CMD_WRITE, 2, lbas, 4, 512, base)
    assert len(batch) == 72 * len(lbas)
    for i, lba in enumerate(lbas):
        expected = c.rw_command(c.NVME_CMD_WRITE, 2, lba, 4, base + i * 4 * 512, 512)
        assert bytes(batch[i * 72 : (i + 1) * 72]) == expected, i


def test_batch_stride_and_array_input() -> None:
    batch = c.build_rw_batch(c.NVME_CMD_READ, 1, array("Q", [10, 20]), 1, 4096, 0x1000, stride_bytes=8192)
    first, second = c.decode_command(batch[:72]), c.decode_command(batch[72:])
    assert (first["addr"], second["addr"]) == (0x1000, 0x1000 + 8192)
    assert (first["cdw10"], second["cdw10"]) == (10, 20)
    assert c.build_rw_batch(c.NVME_CMD_READ, 1, [], 1, 512, 0) == bytearray()


def test_batch_rejects_bad_lbas() -> None:
    with pytest.raises(OverflowError):
        c.build_rw_batch(c.NVME_CMD_READ, 1, [-1], 1, 512, 0)
    with pytest.raises(OverflowError):
        c.build_rw_batch(c.NVME_CMD_READ, 1, [2**64], 1, 512, 0)
