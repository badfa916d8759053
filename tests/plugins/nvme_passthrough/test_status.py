"""NVMe status decoding and the exception it becomes."""

from __future__ import annotations

import errno

import pytest

from uringstack.errors import UringIOError
from uringstack.plugins.nvme_passthrough.status import (
    NvmeStatusError,
    decode_status,
    status_name,
)


@pytest.mark.parametrize(
    ("raw", "sct", "sc", "name"),
    [
        (0x0000, 0, 0x00, "Successful Completion"),
        (0x0002, 0, 0x02, "Invalid Field in Command"),
        (0x4002, 0, 0x02, "Invalid Field in Command"),
        (0x0080, 0, 0x80, "LBA Out of Range"),
        (0x4080, 0, 0x80, "LBA Out of Range"),
        (0x0001, 0, 0x01, "Invalid Command Opcode"),
        (0x000B, 0, 0x0B, "Invalid Namespace or Format"),
        (0x0020, 0, 0x20, "Namespace is Write Protected"),
        (0x0182, 1, 0x82, "Attempted Write to Read Only Range"),
        (0x0280, 2, 0x80, "Write Fault"),
        (0x0281, 2, 0x81, "Unrecovered Read Error"),
        (0x0285, 2, 0x85, "Compare Failure"),
        (0x0287, 2, 0x87, "Deallocated or Unwritten Logical Block"),
        (0x0371, 3, 0x71, "Command Aborted By Host"),
    ],
)
def test_known_codes(raw: int, sct: int, sc: int, name: str) -> None:
    st = decode_status(raw)
    assert (st.sct, st.sc, st.name) == (sct, sc, name)
    assert status_name(sct, sc) == name


def test_bits() -> None:
    st = decode_status(0x4000 | 0x2000 | (2 << 11) | 0x0281)
    assert st.dnr and st.more and st.crd == 2 and not st.retryable
    assert st.name == "Unrecovered Read Error"
    text = st.describe()
    assert "DNR" in text and "More" in text and "CRD=2" in text and "SC 0x81" in text
    assert decode_status(0).ok and not decode_status(0x80).ok
    assert decode_status(0x80).retryable


def test_unknown_codes_are_described_not_invented() -> None:
    assert decode_status(0x0077).name == "unknown Generic Command Status 0x77"
    assert decode_status(0x0790).name == "Vendor Specific status 0x90"
    assert "status code type 5" in decode_status(0x0501).name
    with pytest.raises(ValueError):
        decode_status(-5)


def test_exception() -> None:
    err = NvmeStatusError(0x4080, "nvme read", "/dev/ng0n1", lba=2097152, index=3)
    assert isinstance(err, UringIOError) and isinstance(err, OSError)
    assert err.errno == errno.EIO
    assert err.filename == "/dev/ng0n1"
    assert err.status_name == "LBA Out of Range"
    assert err.nvme_status.raw == 0x4080 and err.lba == 2097152 and err.index == 3
    msg = str(err)
    assert "LBA Out of Range" in msg and "0x4080" in msg and "SC 0x80" in msg
    assert "LBA 2097152" in msg and "op 3 of the batch" in msg
