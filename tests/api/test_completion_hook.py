"""uringstack_completion_batch sees every completed batch, sync and asyncio alike."""

from __future__ import annotations

import asyncio
import pathlib

from uringstack.config import load_config
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.stack import Worker, open_stack


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int]]] = []

    @hookimpl
    def uringstack_completion_batch(self, worker: Worker, op: str, results: list[int]) -> None:
        self.seen.append((op, list(results)))


def test_completion_hook_sees_sync_and_async_batches(tmp_path: pathlib.Path) -> None:
    pm = make_plugin_manager()
    recorder = Recorder()
    pm.register(recorder, "recorder")
    loaded = load_config(plugin_manager=pm, overrides={"core.cores": [0], "sqpoll.mode": "off"})
    (tmp_path / "f").write_bytes(b"a" * 8192)
    with open_stack(loaded.config, plugin_manager=pm) as stack, stack.open(tmp_path / "f") as h:
        h.read_many([0, 4096], [bytearray(4096), bytearray(4096)])
        h.write_from(b"b" * 100, 0)

        async def main() -> bytes:
            return await h.read(100, 0)

        assert asyncio.run(main()) == b"b" * 100
    assert recorder.seen == [("read", [4096, 4096]), ("write", [100]), ("read", [100])]
