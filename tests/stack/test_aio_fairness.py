"""An awaited read that completes inside its submission still yields to the loop."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from uringstack.stack import open_stack


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_a_task_reading_a_hot_file_does_not_starve_the_others(tmp_path: pathlib.Path, backend: str) -> None:
    path = tmp_path / "hot"
    path.write_bytes(b"h" * (64 * 4096))
    path.read_bytes()  # in the page cache: io_uring completes these reads inside the submission
    with open_stack(overrides={"core.cores": [0], "core.backend": backend}) as stack, stack.open(path) as f:
        done = [0]
        seen_by_other: list[int] = []

        async def reader() -> None:
            for i in range(200):
                await f.read(4096, (i % 64) * 4096)
                done[0] += 1

        async def other() -> None:
            seen_by_other.append(done[0])

        async def main() -> None:
            await asyncio.gather(reader(), other())

        asyncio.run(main())
    assert done[0] == 200
    # Before the fix the reader held the loop for all 200 reads: the other task saw 200.
    assert seen_by_other and seen_by_other[0] < 10, seen_by_other
