"""uringstack_completion_batch sees every completed batch, sync and asyncio alike."""

from __future__ import annotations

import asyncio
import pathlib

from uringstack.config import StackConfig, load_config
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.ring import Ring
from uringstack.stack import Stack, Worker, open_stack
from uringstack.stack.uring_backend import UringFileIO
from uringstack.types import FeatureConfig, FeatureMode, FeatureVerdict


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


class RingRecorder:
    """A plugin with a config section whose mode can be off, counting per ring."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int], object]] = []

    @hookimpl
    def uringstack_check_support(self, caps: object, config: StackConfig) -> FeatureVerdict:
        mode = config.section("ringrec", RingRecConfig).mode
        return FeatureVerdict(plugin="ringrec", mode=mode, enabled=mode != "off", reason="test")

    @hookimpl
    def uringstack_config_sections(self) -> tuple[str, type[RingRecConfig]]:
        return "ringrec", RingRecConfig

    @hookimpl
    def uringstack_completion_batch(self, worker: Worker, op: str, results: list[int], ring: Ring | None) -> None:
        self.seen.append((op, list(results), ring))


class RingRecConfig(FeatureConfig):
    mode: FeatureMode = "auto"


def _stack_with(recorder: RingRecorder, mode: str) -> Stack:
    pm = make_plugin_manager()
    pm.register(recorder, "ringrec")
    loaded = load_config(
        env={}, plugin_manager=pm,
        overrides={"core.cores": [0], "sqpoll.mode": "off", "ringrec.mode": mode},
    )  # fmt: skip
    return open_stack(loaded.config, plugin_manager=pm)


def test_sync_ops_and_the_ring_reach_the_hook(tmp_path: pathlib.Path) -> None:
    recorder = RingRecorder()
    with _stack_with(recorder, "auto") as stack, stack.open(tmp_path / "f", create=True) as h:
        storage = stack.workers[0].rings["storage"]
        h.write_from(b"x" * 10, 0)
        h.fsync()
        h.fdatasync()
        h.write_durable(b"y" * 10, 10)

        async def main() -> None:
            await h.fdatasync_async()

        asyncio.run(main())
    ops = [op for op, _, _ in recorder.seen]
    assert ops == ["write", "fsync", "fdatasync", "write_durable", "fdatasync"]
    assert recorder.seen[3][1] == [10, 0]  # the write, then its linked flush
    # a waited buffered write the kernel would punt to io-wq is done inline: no ring ran it
    assert isinstance(h.io, UringFileIO)
    write_ring = None if h.io.writes_inline() else storage
    assert [ring for _, _, ring in recorder.seen] == [write_ring] + [storage] * 4


def test_a_plugin_switched_off_pays_nothing(tmp_path: pathlib.Path) -> None:
    recorder = RingRecorder()
    with _stack_with(recorder, "off") as stack, stack.open(tmp_path / "f", create=True) as h:
        assert stack.workers[0].completion_hook is None  # no callback on any batch
        h.write_from(b"x" * 10, 0)
        h.fdatasync()
    assert recorder.seen == []


def test_a_short_read_at_eof_is_a_second_batch(tmp_path: pathlib.Path) -> None:
    # Documented: one call per submitted batch; the handle's retry of the rest is its own batch.
    (tmp_path / "f").write_bytes(b"z" * 100)
    recorder = RingRecorder()
    with _stack_with(recorder, "auto") as stack, stack.open(tmp_path / "f") as h:
        assert h.read_into(bytearray(4096), 0) == 100
    assert [(op, res) for op, res, _ in recorder.seen] == [("read", [100]), ("read", [0])]


def test_the_fallback_backend_reaches_the_hook(tmp_path: pathlib.Path) -> None:
    """The thread pool reports its batches like a ring does, with ``ring=None``."""
    recorder = RingRecorder()
    pm = make_plugin_manager()
    pm.register(recorder, "ringrec")
    loaded = load_config(env={}, plugin_manager=pm, overrides={"core.cores": [0], "core.backend": "fallback"})
    with open_stack(loaded.config, plugin_manager=pm) as stack, stack.open(tmp_path / "f", create=True) as h:
        assert h.backend == "fallback"
        h.write_from(b"x" * 10, 0)
        h.read_many([0, 5], [bytearray(5), bytearray(5)])
        h.fsync()
        h.write_durable(b"y" * 10, 10)
        pending = h.start_write_many([20], [b"z" * 4])
        pending.wait()

        async def main() -> None:
            await h.fdatasync_async()

        asyncio.run(main())
    # the hook runs on the pool thread that finished the batch: close() waited for all of them
    by_op = sorted((op, results) for op, results, _ in recorder.seen)
    assert by_op == sorted([
        ("write", [10]), ("read", [5, 5]), ("fsync", [0]), ("write_durable", [10, 0]),
        ("write", [4]), ("fdatasync", [0]),
    ])  # fmt: skip
    assert all(ring is None for _, _, ring in recorder.seen)
