"""NVMe I/O commands for ``IORING_OP_URING_CMD``, built as ``struct nvme_uring_cmd``.

The layout is the kernel's UAPI (``include/uapi/linux/nvme_ioctl.h``, the same
struct fio's ``engines/nvme.h`` carries as a fallback)::

    offset  size  field
         0     1  opcode
         1     1  flags
         2     2  rsvd1
         4     4  nsid
         8     4  cdw2
        12     4  cdw3
        16     8  metadata        (user address)
        24     8  addr            (user address of the data buffer)
        32     4  metadata_len
        36     4  data_len        (bytes)
        40     4  cdw10           (Read/Write: starting LBA, low 32 bits)
        44     4  cdw11           (Read/Write: starting LBA, high 32 bits)
        48     4  cdw12           (Read/Write: bits 15:0 = number of blocks - 1)
        52     4  cdw13
        56     4  cdw14
        60     4  cdw15
        64     4  timeout_ms
        68     4  rsvd2
                  = 72 bytes, little-endian (x86-64 / arm64: the kernel reads it natively)

The batch builders write N such blocks into one ``bytearray`` with strided
memoryview assignments, so building 10,000 commands costs a handful of C-level
copies rather than 10,000 ``struct.pack`` calls.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence

# --- struct nvme_uring_cmd ----------------------------------------------------

# "<" = no padding: the kernel struct has none either (every field is naturally aligned).
NVME_URING_CMD_FORMAT = "<BBHIIIQQIIIIIIIIII"
NVME_URING_CMD_SIZE: int = struct.calcsize(NVME_URING_CMD_FORMAT)

# Field name -> (byte offset, size in bytes), in declaration order.
NVME_URING_CMD_FIELDS: dict[str, tuple[int, int]] = {}


def _layout() -> None:
    names = (
        "opcode", "flags", "rsvd1", "nsid", "cdw2", "cdw3", "metadata", "addr",
        "metadata_len", "data_len", "cdw10", "cdw11", "cdw12", "cdw13", "cdw14",
        "cdw15", "timeout_ms", "rsvd2",
    )  # fmt: skip
    offset = 0
    for name, code in zip(names, NVME_URING_CMD_FORMAT[1:], strict=True):
        size = struct.calcsize("<" + code)
        NVME_URING_CMD_FIELDS[name] = (offset, size)
        offset += size
    assert offset == NVME_URING_CMD_SIZE == 72


_layout()

if sys.byteorder != "little":  # pragma: no cover - uringstack targets x86-64/arm64 Linux
    raise ImportError("nvme_passthrough builds commands in little-endian layout only")

# --- ioctl number encoding (include/uapi/asm-generic/ioctl.h) -------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def ioc(direction: int, type_char: str, nr: int, size: int) -> int:
    """The kernel's ``_IOC(dir, type, nr, size)`` macro (asm-generic layout: x86, arm64)."""
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (ord(type_char) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def io(type_char: str, nr: int) -> int:
    """``_IO(type, nr)``."""
    return ioc(_IOC_NONE, type_char, nr, 0)


def iowr(type_char: str, nr: int, size: int) -> int:
    """``_IOWR(type, nr, size)``."""
    return ioc(_IOC_READ | _IOC_WRITE, type_char, nr, size)


NVME_URING_CMD_IO: int = iowr("N", 0x80, NVME_URING_CMD_SIZE)
"""``sqe->cmd_op`` for an NVMe I/O command sent with ``IORING_OP_URING_CMD``."""

# --- NVM command set opcodes ----------------------------------------------------
NVME_CMD_FLUSH = 0x00
NVME_CMD_WRITE = 0x01
NVME_CMD_READ = 0x02

# cdw12 bits 15:0 hold NLB (0's based), so one command moves at most 65536 blocks.
MAX_BLOCKS_PER_COMMAND = 1 << 16
# The 64-bit SLBA is split over cdw10 (low) and cdw11 (high).
MAX_LBA = (1 << 64) - 1

# Indices of fields in the record viewed as uint8/uint32/uint64 arrays.
_REC_U32 = NVME_URING_CMD_SIZE // 4
_REC_U64 = NVME_URING_CMD_SIZE // 8
_U32_NSID = NVME_URING_CMD_FIELDS["nsid"][0] // 4
_U32_DATA_LEN = NVME_URING_CMD_FIELDS["data_len"][0] // 4
_U32_CDW12 = NVME_URING_CMD_FIELDS["cdw12"][0] // 4
NVME_RW_FUA = 1 << 30
"""Force Unit Access, CDW12 bit 30 of Read/Write (NVMe base spec, I/O command set)."""
_U64_ADDR = NVME_URING_CMD_FIELDS["addr"][0] // 8
# cdw10/cdw11 are adjacent and 8-byte aligned, so as one little-endian u64 they are the SLBA.
_U64_SLBA = NVME_URING_CMD_FIELDS["cdw10"][0] // 8
assert NVME_URING_CMD_FIELDS["cdw11"][0] == NVME_URING_CMD_FIELDS["cdw10"][0] + 4
assert NVME_URING_CMD_FIELDS["cdw10"][0] % 8 == 0


def lba_shift(block_size: int) -> int:
    """log2 of a logical block size; the size must be a power of two >= 512."""
    if block_size < 512 or block_size & (block_size - 1):
        raise ValueError(f"logical block size {block_size} is not a power of two >= 512")
    return block_size.bit_length() - 1


def offset_to_lba(offset_bytes: int, length_bytes: int, block_size: int) -> tuple[int, int]:
    """Byte range -> ``(slba, nlb)`` with *nlb* the block count (not yet 0's based).

    Raises ``ValueError`` when the range is not a whole number of blocks.
    """
    if offset_bytes % block_size or length_bytes % block_size or length_bytes <= 0:
        raise ValueError(
            f"byte range offset={offset_bytes} length={length_bytes} is not a positive whole "
            f"number of {block_size}-byte logical blocks"
        )
    return offset_bytes // block_size, length_bytes // block_size


def _check_blocks(nblocks: int) -> None:
    if not 1 <= nblocks <= MAX_BLOCKS_PER_COMMAND:
        raise ValueError(f"one NVMe command moves 1..{MAX_BLOCKS_PER_COMMAND} blocks (NLB is 16 bits), not {nblocks}")


def pack_command(
    opcode: int,
    nsid: int,
    *,
    addr: int = 0,
    data_len: int = 0,
    cdw10: int = 0,
    cdw11: int = 0,
    cdw12: int = 0,
    cdw13: int = 0,
    cdw14: int = 0,
    cdw15: int = 0,
    cdw2: int = 0,
    cdw3: int = 0,
    metadata: int = 0,
    metadata_len: int = 0,
    flags: int = 0,
    timeout_ms: int = 0,
) -> bytes:
    """One ``struct nvme_uring_cmd`` as 72 bytes (for single or unusual commands)."""
    return struct.pack(
        NVME_URING_CMD_FORMAT,
        opcode, flags, 0, nsid, cdw2, cdw3, metadata, addr, metadata_len, data_len,
        cdw10, cdw11, cdw12, cdw13, cdw14, cdw15, timeout_ms, 0,
    )  # fmt: skip


def rw_command(opcode: int, nsid: int, slba: int, nblocks: int, addr: int, block_size: int) -> bytes:
    """One Read or Write command for *nblocks* blocks at *slba* into/from *addr*."""
    _check_blocks(nblocks)
    if not 0 <= slba <= MAX_LBA:
        raise ValueError(f"LBA {slba} does not fit in 64 bits")
    return pack_command(
        opcode,
        nsid,
        addr=addr,
        data_len=nblocks * block_size,
        cdw10=slba & 0xFFFFFFFF,
        cdw11=slba >> 32,
        cdw12=nblocks - 1,  # NLB is 0's based
    )


def flush_command(nsid: int) -> bytes:
    """A Flush command: commit the namespace's volatile write cache to media."""
    return pack_command(NVME_CMD_FLUSH, nsid)


def build_rw_batch(
    opcode: int,
    nsid: int,
    lbas: Sequence[int] | array[int],
    nblocks: int,
    block_size: int,
    base_addr: int,
    *,
    stride_bytes: int | None = None,
) -> bytearray:
    """N Read or Write commands in one contiguous buffer of ``N * 72`` bytes.

    Command *i* transfers *nblocks* blocks at ``lbas[i]`` to or from
    ``base_addr + i * stride_bytes`` (default stride: the transfer size, so
    the data of command *i* is slice *i* of one buffer).
    """
    _check_blocks(nblocks)
    n = len(lbas)
    stride = nblocks * block_size if stride_bytes is None else stride_bytes
    # array('Q', ...) refuses negatives and values >= 2**64 (OverflowError).
    slbas = lbas if isinstance(lbas, array) and lbas.typecode == "Q" else array("Q", lbas)
    nlbs = array("Q", [nblocks]) * n
    addrs = array("Q", range(base_addr, base_addr + n * stride, stride)) if n else array("Q")
    return build_rw_commands(opcode, nsid, slbas, nlbs, addrs, block_size)


def decode_command(block: bytes | bytearray | memoryview) -> dict[str, int]:
    """Parse 72 bytes back into field name -> value (for tests and diagnostics)."""
    values = struct.unpack(NVME_URING_CMD_FORMAT, bytes(block[:NVME_URING_CMD_SIZE]))
    return dict(zip(NVME_URING_CMD_FIELDS, values, strict=True))


def build_rw_commands(
    opcode: int,
    nsid: int,
    slbas: array[int],
    nlbs: array[int],
    addrs: array[int],
    block_size: int,
    *,
    fua: bool = False,
) -> bytearray:
    """N Read or Write commands whose block counts and buffers differ per command.

    *fua* sets Force Unit Access (CDW12 bit 30): the controller completes each
    write only once its data is on non-volatile media (a durable write
    without a separate Flush).

    Command *i* moves ``nlbs[i]`` blocks at ``slbas[i]`` to or from
    ``addrs[i]``.  All three are ``array('Q')`` of equal length (what
    :func:`uringstack.plugins.nvme_passthrough.backend.split_into_commands`
    returns).  Like :func:`build_rw_batch`, filled with strided copies.
    """
    n = len(slbas)
    if len(nlbs) != n or len(addrs) != n:
        raise ValueError(f"{n} LBAs, {len(nlbs)} block counts and {len(addrs)} addresses")
    if n and not (min(nlbs) >= 1 and max(nlbs) <= MAX_BLOCKS_PER_COMMAND):
        raise ValueError(f"one NVMe command moves 1..{MAX_BLOCKS_PER_COMMAND} blocks (NLB is 16 bits)")
    out = bytearray(n * NVME_URING_CMD_SIZE)
    if n == 0:
        return out
    u8 = memoryview(out)
    u32 = u8.cast("I")
    u64 = u8.cast("Q")
    u8[0::NVME_URING_CMD_SIZE] = bytes([opcode]) * n
    u32[_U32_NSID::_REC_U32] = array("I", [nsid]) * n
    u32[_U32_DATA_LEN::_REC_U32] = array("I", [k * block_size for k in nlbs])
    fua_bit = NVME_RW_FUA if fua else 0
    u32[_U32_CDW12::_REC_U32] = array("I", [(k - 1) | fua_bit for k in nlbs])  # NLB is 0's based
    u64[_U64_SLBA::_REC_U64] = memoryview(slbas)
    u64[_U64_ADDR::_REC_U64] = memoryview(addrs)
    u8.release()
    u32.release()
    u64.release()
    return out


def slba_fields(cmds: bytearray) -> memoryview:
    """A writable view of the SLBA (cdw10/cdw11) of every command in *cmds*, one u64 per command.

    For reusing built commands at new LBAs: ``slba_fields(cmds)[:] = array("Q", lbas)``
    rewrites only those 8 bytes of each 72-byte record.  While the view lives,
    *cmds* cannot be resized.
    """
    if len(cmds) % NVME_URING_CMD_SIZE:
        raise ValueError(f"{len(cmds)} bytes is not a whole number of {NVME_URING_CMD_SIZE}-byte commands")
    return memoryview(cmds).cast("Q")[_U64_SLBA::_REC_U64]
