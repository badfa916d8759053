"""Losing the newest segment file is detected (issue: review item "newest segment deleted").

A log may legitimately end with a full segment, so the newest file's absence
cannot be seen from the files that remain unless something durable says a
newer one exists: each segment is *sealed* (block 0, after the header) with
the first LSN of its successor once that successor is durably named, before
anything is written into it.  These tests kill a real writer process, then
delete files, and check that ``Wal.open`` names the missing file; a successor
that never got past its header (a crash right after the roll) stays legal.
"""

from __future__ import annotations

import errno
import os
import pathlib
import select
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from uringstack.cli.wal import wal as wal_group
from uringstack.ring.io_backend import FileIO, SyncMethod
from uringstack.wal import Wal, WalConfig, WalCorruptionError, WalFailedError
from uringstack.wal.faults import FaultyIO, SegmentFaults, segment_faults
from uringstack.wal.recovery import scan
from uringstack.wal.segment import SEAL_OFFSET, list_segments, read_seal, segment_name, unseal

# host_only: recovery's reading of the files a killed writer left, where no io_uring behaviour
# varies by kernel (the NVMe VM's kernel matrix deselects it)
pytestmark = pytest.mark.host_only

CHILD = pathlib.Path(__file__).with_name("crash_child.py")
# the child's geometry: 128 KiB segments, records of 4..3004 bytes
CFG = WalConfig(segment_size_bytes=128 * 1024, max_batch_bytes=16 * 1024, backend="fallback")


def _killed_writer(d: pathlib.Path, min_segments: int = 3, newest_acked: bool = False) -> dict[int, int]:
    """Run crash_child.py until the log has *min_segments* segments, SIGKILL it; return its acks.

    With *newest_acked* it runs on until a record in the newest segment was
    acknowledged: only then is its predecessor certainly sealed (the roll
    writes the successor's header, then the seal, then records), so deleting
    it loses an acknowledged record that recovery must report.  Killed between
    header and seal, the newest file holds nothing and its loss is legal (and
    undetectable): without this wait the deletion tests failed about 1 run in 7."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(d), "fallback", "dsync", "2", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = b""
    try:
        while True:
            if not select.select([proc.stdout], [], [], 60)[0]:
                pytest.fail("the writer child printed nothing for 60 s")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                pytest.fail(f"the writer child exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
            out += chunk
            segs = list_segments(d) if d.exists() else []
            if len(segs) >= min_segments and (not newest_acked or _max_acked(out) >= segs[-1][0]):
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
    lines = (out + rest).split(b"\n")[:-1]
    acked = {}
    for line in lines[1:] if lines and lines[0] == b"ready" else lines:
        lsn, crc = map(int, line.split())
        acked[lsn] = crc
    return acked


def _max_acked(out: bytes) -> int:
    """The highest LSN among the complete ``LSN CRC`` lines of the child's output so far."""
    lines = out.split(b"\n")[:-1]
    return max((int(line.split()[0]) for line in lines if line != b"ready"), default=0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how_many", [1, 2])
def test_deleting_the_newest_segments_of_a_killed_writer_is_an_error(wal_dir: pathlib.Path, how_many: int) -> None:
    acked = _killed_writer(wal_dir, min_segments=4, newest_acked=True)
    segs = list_segments(wal_dir)
    assert max(acked) >= segs[-1][0]  # the newest segment holds an acknowledged record
    for _, path in segs[-how_many:]:
        os.unlink(path)
    missing = segs[-how_many][1]  # the first gone: the one the remaining newest segment points to
    for mode in ("tolerate_tail", "absolute"):
        with pytest.raises(WalCorruptionError) as ei:
            Wal.open(wal_dir, CFG, recovery=mode)
        msg = str(ei.value)
        assert missing.name in msg and "missing" in msg and segs[-how_many - 1][1].name in msg, msg
        assert ei.value.path == str(missing)
    verify = CliRunner().invoke(wal_group, ["verify", str(wal_dir)])
    assert verify.exit_code == 1 and missing.name in verify.output, verify.output
    assert list_segments(wal_dir) == segs[:-how_many]  # refusing to open changed nothing
    # point_in_time accepts the loss, reports it, and leaves a log the strictest mode accepts
    kept_end = segs[-how_many][0] - 1
    with Wal.open(wal_dir, CFG, recovery="point_in_time") as wal:
        assert wal.recovered.damage is not None and wal.recovered.damage.path == missing
        assert wal.durable_lsn == kept_end
        assert {lsn for lsn, _ in wal.read_from(1)} >= {lsn for lsn in acked if lsn <= kept_end}
        assert wal.append(b"after") == kept_end + 1
    with Wal.open(wal_dir, CFG, recovery="absolute") as wal:
        assert wal.durable_lsn == kept_end + 1


@pytest.mark.timeout(120)
def test_a_killed_writer_leaves_a_log_that_opens_in_absolute_mode(wal_dir: pathlib.Path) -> None:
    """The seals themselves never make an intact crashed log look damaged."""
    acked = _killed_writer(wal_dir, min_segments=3)
    with Wal.open(wal_dir, CFG, recovery="absolute") as wal:
        got = dict(wal.read_from(1))
    assert set(acked) <= set(got)
    assert scan(wal_dir).damage is None


class _FailInSecondSegment(FaultyIO):
    """Every write into any segment but the first fails: nothing reaches the successor."""

    def __init__(self) -> None:
        super().__init__()
        self.first: FileIO | None = None

    def write_durable(self, io: FileIO, offset: int, buf: memoryview, sync: SyncMethod) -> list[int]:
        if self.first is None:
            self.first = io
        if io is not self.first:
            return [-errno.EIO] + ([-errno.ECANCELED] if sync == "fdatasync" else [])
        return super().write_durable(io, offset, buf, sync)


def test_a_successor_never_written_past_its_header_is_legal(wal_dir: pathlib.Path) -> None:
    """A crash between the roll and the first write into the new segment: it holds only
    its header while its predecessor is already sealed.  That is not damage."""
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    faults = _FailInSecondSegment()
    acked: list[bytes] = []
    wal = Wal.open(wal_dir, cfg, wrap_io=faults)
    try:
        with pytest.raises(WalFailedError):
            for _ in range(200):
                payload = os.urandom(1000)
                wal.append(payload)
                acked.append(payload)
    finally:
        wal.close()
    segs = list_segments(wal_dir)
    assert len(segs) == 2, segs
    assert scan(wal_dir).damage is None
    with Wal.open(wal_dir, cfg, recovery="absolute") as wal:
        assert [p for _, p in wal.read_from(1)][: len(acked)] == acked
        wal.append(b"next")
    # and losing that empty successor is still the loss of the newest segment
    os.unlink(segs[-1][1])
    with pytest.raises(WalCorruptionError, match=segment_name(segs[-1][0])):
        Wal.open(wal_dir, cfg)


def test_the_seal_is_synced_after_the_successor_is_named(wal_dir: pathlib.Path) -> None:
    """Durability order at a roll: new segment renamed, directory fsynced, then the
    predecessor's seal written and fdatasynced (a seal first would point at nothing
    after a crash; an unsynced seal could be lost while records in the successor are not)."""
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    with segment_faults(SegmentFaults()) as rec, Wal.open(wal_dir, cfg) as wal:
        while len(wal.segments()) < 3:
            wal.append(os.urandom(1000))
    log = rec.log
    renames = [i for i, (op, _) in enumerate(log) if op == "rename"]
    assert len(renames) == 3
    names = [log[i][1].split("->")[1] for i in renames]
    for k, i in enumerate(renames[1:], start=1):
        assert log[i + 1] == ("fsync", "<dir>"), log[i : i + 2]
        prev = names[k - 1]
        assert log[i + 2 : i + 5] == [("open", prev), ("pwrite", prev), ("fdatasync", prev)], log[i : i + 6]


def test_an_empty_newest_segment_is_replaced_never_unlinked_first(wal_dir: pathlib.Path) -> None:
    """Reopening with another geometry replaces an empty newest segment (same name, new header).
    If making the replacement fails (here ENOSPC; a crash is the same), the old empty segment
    must still be there: its sealed predecessor points at it."""
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    wal = Wal.open(wal_dir, cfg, wrap_io=_FailInSecondSegment())
    with pytest.raises(WalFailedError):
        for _ in range(200):
            wal.append(os.urandom(1000))
    wal.close()
    segs = list_segments(wal_dir)
    other = WalConfig(segment_size_bytes=128 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    with segment_faults(SegmentFaults({("fallocate", 0): errno.ENOSPC})), pytest.raises(OSError):
        Wal.open(wal_dir, other)
    assert list_segments(wal_dir) == segs
    with Wal.open(wal_dir, other, recovery="absolute") as wal:
        lsn = wal.append(b"x")
    assert list_segments(wal_dir) == segs and lsn == segs[-1][0]
    with Wal.open(wal_dir, other, recovery="absolute") as wal:
        assert wal.durable_lsn == lsn


def test_damage_in_a_sealed_segment_is_never_a_torn_tail(wal_dir: pathlib.Path) -> None:
    """A segment is sealed only after its last write completed, so a bad last record in it
    was acknowledged: corruption, even when its successor holds nothing yet (which alone
    would make the damage look like an interrupted last write and have it cut off)."""
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    wal = Wal.open(wal_dir, cfg, wrap_io=_FailInSecondSegment())
    with pytest.raises(WalFailedError):
        for _ in range(200):
            wal.append(os.urandom(1000))
    wal.close()
    (_, sealed), _ = list_segments(wal_dir)
    s = scan(wal_dir)
    last_off = s.segments[0].end_offset - 1000  # inside the last record's payload
    with open(sealed, "r+b") as f:  # flip the byte's bits: writing 0xff changed nothing 1 time in 256
        f.seek(last_off)
        b = f.read(1)
        f.seek(last_off)
        f.write(bytes([b[0] ^ 0xFF]))
    for mode in ("tolerate_tail", "absolute"):
        with pytest.raises(WalCorruptionError, match="corruption"):
            Wal.open(wal_dir, cfg, recovery=mode)


class _FailFirstSeal(SegmentFaults):
    """The first seal write of a roll fails (EIO): the log fails with the new segment named
    and its predecessor unsealed, the state a crash between the two leaves as well."""

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if offset == SEAL_OFFSET and not self.fail.get(("sealed", 0)):
            self.fail[("sealed", 0)] = errno.EIO  # once
            raise OSError(errno.EIO, "injected EIO on the seal")
        return super().pwrite(fd, data, offset)


@pytest.mark.parametrize("how", ["seal-write-failed", "unsealed-on-disk"])
def test_a_segment_left_unsealed_is_sealed_before_appends_resume(wal_dir: pathlib.Path, how: str) -> None:
    """A crash or a failed seal write between a roll's rename and its seal leaves an unsealed
    predecessor.  Reopening must seal it: otherwise, once appends went on past it, deleting
    the newest files down to it read as a log that ended there (150 acknowledged records
    gone, no error, in every mode)."""
    cfg = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
    acked: list[int] = []
    if how == "seal-write-failed":
        with segment_faults(_FailFirstSeal()), Wal.open(wal_dir, cfg) as wal, pytest.raises(WalFailedError):
            for _ in range(200):
                acked.append(wal.append(b"a" * 1000))
    else:
        with Wal.open(wal_dir, cfg) as wal:
            while len(wal.segments()) < 2:
                acked.append(wal.append(b"a" * 1000))
        unseal(list_segments(wal_dir)[0][1])
    first = list_segments(wal_dir)[0][1]
    assert read_seal(first) is None
    with Wal.open(wal_dir, cfg) as wal:
        while len(wal.segments()) < 4:
            acked.append(wal.append(b"b" * 1000))
    segs = list_segments(wal_dir)
    assert [read_seal(p) for _, p in segs[:-1]] == [lsn for lsn, _ in segs[1:]]
    for _, p in segs[1:]:
        os.unlink(p)
    for mode in ("tolerate_tail", "absolute"):
        with pytest.raises(WalCorruptionError, match=f"sealed saying the log continues at LSN {segs[1][0]}"):
            Wal.open(wal_dir, cfg, recovery=mode)
    with Wal.open(wal_dir, cfg, recovery="point_in_time") as wal:
        assert wal.recovered.damage is not None and wal.recovered.damage.path == segs[1][1]
        assert max(acked) > wal.durable_lsn
