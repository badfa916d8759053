"""Every kind of damage to a log, under every recovery mode, as one table.

The table below is the specification: each row is a way to damage a
multi-segment log, each column a recovery mode, each cell what ``Wal.open``
must do.  docs/wal.md carries the same table (section "Damage and what each
mode does"); ``test_doc_table_matches`` fails when the two disagree.  Print
the table for the doc with ``python tests/wal/test_damage_table.py``.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from uringstack.cli.wal import wal as wal_group
from uringstack.wal import Wal, WalConfig, WalCorruptionError
from uringstack.wal.recovery import walk
from uringstack.wal.segment import DATA_START, list_segments, segment_name

CFG = WalConfig(segment_size_bytes=64 * 1024, max_batch_bytes=8 * 1024, backend="fallback")
RECORDS = 240  # 900-byte payloads: 4 segments, the last about 40 records long
MODES = ("tolerate_tail", "absolute", "point_in_time")

# What Wal.open does, in the doc's words.
OUTCOMES = {
    "ok": "all records",
    "cut": "cut: ends before the damaged record",
    "drop": "ends before the damage, reported",
    "error": "WalCorruptionError",
    "undetected": "NOT DETECTED: ends early",
}


@dataclass
class Layout:
    """The undamaged log: payloads and, per segment, (first LSN, path, record offsets)."""

    data: list[bytes]
    segments: list[tuple[int, pathlib.Path, list[int]]]

    def lsn_at(self, seg: int, offset: int) -> int:
        """LSN of the first record of segment *seg* that ends after *offset*."""
        first, _, offs = self.segments[seg]
        for i, off in enumerate(offs):
            if off + 16 + 900 > offset:
                return first + i
        return first + len(offs)

    def last_record(self) -> tuple[pathlib.Path, int]:
        _, path, offs = self.segments[-1]
        return path, offs[-1]


def _build(d: pathlib.Path) -> Layout:
    data = [os.urandom(900) for _ in range(RECORDS)]
    with Wal.open(d, CFG) as wal:
        wal.append_many(data[:1])
        for x in data[1:]:
            wal.append(x)
    segs = []
    for first, path in list_segments(d):
        buf = path.read_bytes()
        segs.append((first, path, [off for off, _, _ in walk(buf, first)]))
    assert len(segs) == 4 and DATA_START + len(segs[-1][2]) * 920 > 30_000
    return Layout(data, segs)


def _flip(path: pathlib.Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x04]))


def _zero(path: pathlib.Path, offset: int, n: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(n))


# Each damage returns the first LSN it loses (RECORDS + 1: none).
def truncate_last_4096(d: pathlib.Path, lay: Layout) -> int:
    os.truncate(lay.segments[-1][1], 4096)
    return lay.segments[-1][0]


def truncate_last_30000(d: pathlib.Path, lay: Layout) -> int:
    os.truncate(lay.segments[-1][1], 30_000)
    return lay.lsn_at(3, 30_000)


def truncate_older_20000(d: pathlib.Path, lay: Layout) -> int:
    os.truncate(lay.segments[1][1], 20_000)
    return lay.lsn_at(1, 20_000)


def zero_range_old(d: pathlib.Path, lay: Layout) -> int:
    _zero(lay.segments[0][1], DATA_START + 3000, 512)
    return lay.lsn_at(0, DATA_START + 3000)


def zero_end_of_last_record(d: pathlib.Path, lay: Layout) -> int:
    path, off = lay.last_record()
    _zero(path, off + 16 + 900 - 100, 100)
    return RECORDS


def flip_bit_old(d: pathlib.Path, lay: Layout) -> int:
    _flip(lay.segments[0][1], DATA_START + 5 * 920 + 300)
    return lay.lsn_at(0, DATA_START + 5 * 920 + 300)


def flip_bit_last_record(d: pathlib.Path, lay: Layout) -> int:
    path, off = lay.last_record()
    _flip(path, off + 400)
    return RECORDS


def flip_bit_segment_header(d: pathlib.Path, lay: Layout) -> int:
    _flip(lay.segments[1][1], 20)
    return lay.segments[1][0]


def rename_segment(d: pathlib.Path, lay: Layout) -> int:
    first, path, _ = lay.segments[-1]
    os.rename(path, d / segment_name(first + 3))
    return first


def delete_older_segment(d: pathlib.Path, lay: Layout) -> int:
    os.unlink(lay.segments[1][1])
    return lay.segments[1][0]


def delete_last_segment(d: pathlib.Path, lay: Layout) -> int:
    os.unlink(lay.segments[-1][1])
    return lay.segments[-1][0]


def junk_files(d: pathlib.Path, lay: Layout) -> int:
    (d / "notes.txt").write_text("not a segment")
    (d / "spare.tmp").write_bytes(bytes(4096))
    (d / "00000000000000000007.wal.discarded").write_bytes(b"old")
    return RECORDS + 1


def junk_segment_name(d: pathlib.Path, lay: Layout) -> int:
    (d / segment_name(99_999)).write_bytes(b"garbage" * 10)
    return RECORDS + 1


def directory_segment_name(d: pathlib.Path, lay: Layout) -> int:
    # (open() of it raised IsADirectoryError in every mode; a FIFO hung there)
    (d / segment_name(99_999)).mkdir()
    return RECORDS + 1


# case -> (damage, outcome per mode in MODES order)
TABLE: dict[str, tuple[Callable[[pathlib.Path, Layout], int], tuple[str, str, str]]] = {
    "truncate the last segment to 4096 bytes": (truncate_last_4096, ("error", "error", "drop")),
    "truncate the last segment to 30000 bytes": (truncate_last_30000, ("error", "error", "drop")),
    "truncate an older segment": (truncate_older_20000, ("error", "error", "drop")),
    "zero 512 bytes in an older segment": (zero_range_old, ("error", "error", "drop")),
    "zero the end of the last record": (zero_end_of_last_record, ("cut", "error", "cut")),
    "flip a bit in an older segment": (flip_bit_old, ("error", "error", "drop")),
    "flip a bit in the last record": (flip_bit_last_record, ("cut", "error", "cut")),
    "flip a bit in a segment header": (flip_bit_segment_header, ("error", "error", "drop")),
    "rename a segment": (rename_segment, ("error", "error", "drop")),
    "delete an older segment": (delete_older_segment, ("error", "error", "drop")),
    "delete the last segment": (delete_last_segment, ("error", "error", "drop")),
    "junk files (notes.txt, spare.tmp, *.discarded)": (junk_files, ("ok", "ok", "ok")),
    "junk file named like a segment": (junk_segment_name, ("error", "error", "drop")),
    "a directory named like a segment": (directory_segment_name, ("error", "error", "drop")),
}


def render() -> str:
    """The markdown table docs/wal.md carries."""
    lines = ["| damage | " + " | ".join(f"`{m}`" for m in MODES) + " |", "|---|---|---|---|"]
    for case, (_, outcomes) in TABLE.items():
        lines.append(f"| {case} | " + " | ".join(OUTCOMES[o] for o in outcomes) + " |")
    return "\n".join(lines)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(TABLE))
def test_damage(wal_dir: pathlib.Path, case: str, mode: str) -> None:
    damage, outcomes = TABLE[case]
    expected = outcomes[MODES.index(mode)]
    lay = _build(wal_dir)
    lost_from = damage(wal_dir, lay)
    verify = CliRunner().invoke(wal_group, ["verify", "--mode", mode, str(wal_dir)])
    assert verify.exit_code == (1 if expected == "error" else 0), verify.output
    if expected == "error":
        with pytest.raises(WalCorruptionError):
            Wal.open(wal_dir, CFG, recovery=mode)
        return
    with Wal.open(wal_dir, CFG, recovery=mode) as wal:
        got = [p for _, p in wal.read_from(1)]
        damage_found = wal.recovered.damage
        assert wal.append(b"after") == len(got) + 1
    assert got == lay.data[: lost_from - 1], (len(got), lost_from)
    if expected in ("ok", "undetected"):
        assert damage_found is None
    else:
        assert damage_found is not None and damage_found.torn_tail is (expected == "cut"), damage_found
    # whatever was accepted is now a clean log, even for the strictest mode
    with Wal.open(wal_dir, CFG, recovery="absolute") as wal:
        assert [p for _, p in wal.read_from(1)] == [*got, b"after"]


def test_doc_table_matches() -> None:
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "wal.md").read_text()
    m = re.search(r"<!-- damage-table: [^>]*-->\n\n(.*?)\n\n", doc, re.S)
    assert m, "docs/wal.md lacks the damage table marker"
    assert m.group(1).strip() == render(), (
        "docs/wal.md's damage table differs from tests/wal/test_damage_table.py's TABLE; "
        "regenerate it with: python tests/wal/test_damage_table.py"
    )


if __name__ == "__main__":
    sys.stdout.write(render() + "\n")
