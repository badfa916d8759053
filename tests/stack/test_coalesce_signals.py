"""A raising signal inside the asyncio coalescer's submission leaves its batch waited for by close.

``await handle.read(n, off)``, ``read_many_async`` and ``write_many_async`` queue
their ops on the ring's coalescer, whose flush submits them as one batch
(``Ring.submit_columns``) and then records it as the flush's, which each
handle's tracker waits for on close.  A signal handler that raises (Ctrl-C)
inside the submission after the ring took the batch in, or in the flush before
it recorded the batch, must leave the batch tracked: else ``close()`` returns
while the kernel still reads or writes the handle's descriptor (the next
``open`` reuses the number), and the awaits are failed although their ops are
in flight.  It must also leave the awaits to be resolved by their completions.

Each test sends a real signal (tests/signal_points.py) at each point of the
coalescer's and the ring's submission code in turn while the batch hangs in the
kernel (the handle's descriptor is made a copy of an empty pipe, or for a write
of a full one), then closes the handle and only afterwards lets the batch
complete: ``close()`` must not have returned while the ring still held it, and
every await must end (its result, or the signal's exception where the signal
landed before its op reached the kernel).

The delivery of a flush's completions (the ring's collection, ``Batch.results``,
the coalescer's ``deliver``, ``_resolve``, the drain list) is swept too: every
await ends within seconds with the bytes of its own offset, also when the
delivery cut short is run again after another flush was submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine
from types import CodeType
from typing import Any

import pytest

from tests.signal_points import Interrupt, code_of, signal_at, sweep
from tests.stack.test_submit_signals import CPU, _drained, _empty, _fill, _signalled_then_closed, small_file
from tests.waiting import wait_until
from uringstack.config import load_config
from uringstack.hookspecs import hookimpl
from uringstack.pluginmanager import make_plugin_manager
from uringstack.ring import SUBMITTED, Ring
from uringstack.stack import Stack, open_stack
from uringstack.stack.handle import FileHandle
from uringstack.types import WorkerView

_CODE = code_of(
    Ring.submit_columns,
    Ring._submit_unfinished_locked,
    files=("ring/coalesce.py", "ring/wakeups.py", "ring/interrupts.py"),
)

# One worker on CPU, plain io_uring: no SQPOLL thread, no registered buffers.
# Cached reads go through the ring's batches too (no copy on the loop's thread): the
# batches are what these tests interrupt.
_PLAIN_URING = {
    "core.backend": "uring",
    "core.cores": [CPU],
    "sqpoll.mode": "off",
    "fixedbuf.mode": "off",
    "core.aio_inline_read_budget": 0,
}


def _logging_loop() -> tuple[asyncio.AbstractEventLoop, list[dict[str, Any]]]:
    """A new event loop whose exception handler logs instead of printing: a flush or a
    delivery runs as a loop callback, and the loop reports what it raises (the signal's
    exception) there."""
    loop = asyncio.new_event_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: logged.append(context))
    return loop, logged


# Each form: (whether it writes, the awaited call).  A read takes 8 bytes from the empty
# pipe (per op); a write is 8 bytes to the full one.  "+hook": under a plugin's completion
# hook (HookPlugin below), so the flush installs two done-callbacks, retried one by one.
FORMS: dict[str, tuple[bool, Callable[[FileHandle], Coroutine[Any, Any, Any]]]] = {
    "read": (False, lambda h: h.read(8, 0)),
    "read+hook": (False, lambda h: h.read(8, 0)),
    "read_many_async": (False, lambda h: h.read_many_async([0, 0], [bytearray(8), bytearray(8)])),
    "write_many_async": (True, lambda h: h.write_many_async([0], [b"y" * 8])),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_signal_anywhere_in_a_coalesced_submission_leaves_the_batch_waited_for_by_close(
    tmp_path: os.PathLike[str], pipe: tuple[int, int], form: str
) -> None:
    path = small_file(tmp_path)
    r, w = pipe
    write, call = FORMS[form]
    # A flush runs as a loop callback: the loop logs what it raises (a KeyboardInterrupt
    # would propagate out of the loop instead; the tracking is the same).
    loop, _ = _logging_loop()
    pm = make_plugin_manager()
    if form.endswith("+hook"):
        pm.register(HookPlugin(), "hooked")
    # (fixedbuf off: a registered file would not follow the copy below)
    overrides = {**_PLAIN_URING, "core.close_timeout_s": 3.0}
    try:
        with open_stack(load_config(env={}, plugin_manager=pm, overrides=overrides).config, plugin_manager=pm) as s:
            ring = s.workers[0].rings["storage"]

            def once(at: int) -> str | None:
                h = s.open(path)
                assert h.ring is ring and h.fixed_index is None
                # The coalescer submits with the handle's descriptor: make it a copy of the
                # pipe (close() releases the copy).
                os.dup2(w if write else r, h.fd)
                if write:
                    _fill(w)
                tasks: list[asyncio.Task[Any]] = []

                def start() -> None:
                    tasks.append(loop.create_task(call(h)))
                    # the task queues, the flush submits (or the signal interrupts it)
                    loop.run_until_complete(asyncio.sleep(0.02))

                def complete() -> None:
                    if write:
                        _empty(r)
                    else:
                        os.write(w, b"z" * 16)

                try:
                    where, held = _signalled_then_closed(h, start, _CODE, at, complete, lambda: ring.inflight)
                except TimeoutError as e:  # (a pending tracked but never submitted nor failed)
                    raise AssertionError(f"a signal at point {at}: close() waited for nothing: {e}") from e
                # every await ends: resolved by its completion (or failed before its op was submitted)
                done, _ = loop.run_until_complete(asyncio.wait(tasks, timeout=5.0))
                _drained(ring)
                _empty(r)
                assert not held, f"a signal {where}: close() returned while the ring still held the batch"
                assert done == set(tasks), f"a signal {where}: the await never ended"
                for task in tasks:
                    with contextlib.suppress(Interrupt):
                        task.result()
                return where

            sweep(once)
    finally:
        loop.close()


class HookPlugin:
    """A plugin with a completion hook: the stack then gives each flush's batch two
    done-callbacks, the hook's and the coalescer's own."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def uringstack_completion_batch(self, worker: WorkerView, op: str, results: list[int]) -> None:
        self.seen.append(op)


@pytest.mark.timeout(180)
def test_a_signal_at_the_entry_of_the_completion_hook_still_resolves_the_awaits(tmp_path: os.PathLike[str]) -> None:
    """A signal at any point of the ring's code once it took the flush's batch in (its
    collection, the stack's completion hook's entry among them): the awaits of the flush
    (two reads of a hot file) all end, with their bytes or the signal's exception, within
    seconds.  (When the hook and the coalescer's callback were one chained callable, a
    signal at its entry skipped both: the awaits never ended.)"""
    pm = make_plugin_manager()
    pm.register(HookPlugin(), "hooked")
    loaded = load_config(env={}, plugin_manager=pm, overrides=_PLAIN_URING)
    loop, _ = _logging_loop()  # (the flush's Interrupt is logged, not printed)
    try:
        with open_stack(loaded.config, plugin_manager=pm) as s, s.open(small_file(tmp_path)) as h:
            ring = s.workers[0].rings["storage"]
            hook = s.workers[0].completion_hook
            assert hook is not None
            hook_code = hook("read", ring).__code__
            # The ring's collection (Batch.results among it) and the coalescer's delivery.
            in_ring = code_of(files=("ring/__init__.py", "ring/coalesce.py", "ring/wakeups.py"))

            def chosen(code: CodeType) -> bool:
                return code is hook_code or in_ring(code)

            def once(at: int) -> str | None:
                before = SUBMITTED.last
                tasks = [loop.create_task(h.read(8, 0)) for _ in range(2)]
                with signal_at(chosen, at, armed=lambda: SUBMITTED.last is not before) as sent:
                    done, _ = loop.run_until_complete(asyncio.wait(tasks, timeout=5.0))
                assert done == set(tasks), f"a signal {sent.where}: an await never ended"
                for task in tasks:
                    with contextlib.suppress(Interrupt):
                        assert task.result() == b"x" * 8, sent.where
                _drained(ring)
                return sent.where

            assert sweep(once) > 3
    finally:
        loop.close()


def _block(k: int) -> bytes:
    """The 8 bytes at offset 8 * k of the file below: each block its own."""
    return k.to_bytes(8, "little")


@pytest.mark.timeout(600)
def test_a_signal_anywhere_in_a_coalesced_delivery_still_resolves_every_await_with_its_bytes(
    tmp_path: os.PathLike[str],
) -> None:
    """A real signal at each point of the coalescer's code and the ring's once a flush's
    batch is in: its collection, ``Batch.results``, the delivery (``deliver``: the values
    taken out of the arena, ``_resolve`` between two futures and inside its direct
    wake-up, the drain list, the spare arena's hand-off), and the next flush the woken
    tasks' reads make.  Every await ends within seconds with the bytes of its own offset
    (or the signal's exception, when it landed in its task): a delivery cut short is run
    again and resolves the rest, never leaving an await pending (it was marked delivered
    before it resolved anything: the awaits hung), nor giving one the bytes of an arena
    a later flush reused."""
    n = 4  # tasks, each reading two blocks in turn (the second read: a flush of its own)
    path = os.path.join(tmp_path, "blocks")
    with open(path, "wb") as f:
        f.write(b"".join(_block(k) for k in range(2 * n)))
    loop, _ = _logging_loop()  # (an Interrupt out of a loop callback is logged, not printed)
    # (the coalescer's done-callback's entry among them: since session 40 a Repeatable, which
    # the ring runs again; before, a signal there left the flush's awaits pending for good)
    chosen = code_of(files=("ring/__init__.py", "ring/coalesce.py", "ring/wakeups.py", "ring/interrupts.py"))

    try:
        loaded = load_config(env={}, overrides=_PLAIN_URING)
        with open_stack(loaded.config, plugin_manager=loaded.plugin_manager) as s, s.open(path) as h:
            ring = s.workers[0].rings["storage"]

            async def two_reads(k: int) -> tuple[bytes, bytes]:
                first = await h.read(8, 8 * k)
                return first, await h.read(8, 8 * (k + n))

            def once(at: int) -> str | None:
                before = SUBMITTED.last
                tasks = [loop.create_task(two_reads(k)) for k in range(n)]
                with signal_at(chosen, at, armed=lambda: SUBMITTED.last is not before) as sent:
                    done, _ = loop.run_until_complete(asyncio.wait(tasks, timeout=3.0))
                assert done == set(tasks), f"a signal {sent.where}: an await never ended"
                for k, task in enumerate(tasks):
                    with contextlib.suppress(Interrupt):
                        got = task.result()
                        assert got == (_block(k), _block(k + n)), f"a signal {sent.where}: wrong bytes {got}"
                _drained(ring)
                return sent.where

            points = sweep(once, most=1000)
            assert points > 20
    finally:
        loop.close()


def _held_read(s: Stack, path: str, r: int, loop: asyncio.AbstractEventLoop) -> tuple[FileHandle, asyncio.Task[bytes]]:
    """A handle on *path* whose descriptor is a copy of the empty pipe's read end *r* (its
    close() releases the copy), and a task whose 8-byte read of it is submitted and held
    by the pipe until something is written to it."""
    late = s.open(path)
    os.dup2(r, late.fd)
    task = loop.create_task(late.read(8, 0))
    loop.run_until_complete(asyncio.sleep(0.02))
    if task.done():
        late.close()
        raise AssertionError(f"the read was not held by the empty pipe: {task}")
    return late, task


@pytest.mark.timeout(60)
def test_a_cut_short_delivery_keeps_its_arena_from_the_next_flush(
    tmp_path: os.PathLike[str], pipe: tuple[int, int]
) -> None:
    """A flush's read completes late (from a pipe) and is delivered by the loop's reap of the
    ring's eventfd; a signal cuts that delivery short before it resolved its await, while a
    flush of another task's read is already scheduled (ahead of the drain that runs the
    delivery again).  That flush must not read into the cut-short flush's arena: when the
    arena went to the next flush as soon as its values were taken, the delivery run again
    copied out the other read's bytes."""
    r, w = pipe
    path = os.path.join(tmp_path, "blocks")
    with open(path, "wb") as f:
        f.write(b"".join(_block(k) for k in range(4)))
    loop, logged = _logging_loop()  # (the delivery's Interrupt)
    try:
        loaded = load_config(env={}, overrides=_PLAIN_URING)
        with open_stack(loaded.config, plugin_manager=loaded.plugin_manager) as s, s.open(path) as hot:
            late, first = _held_read(s, path, r, loop)
            try:
                os.write(w, b"from-the-pipe"[:8])  # completes it: the eventfd is readable
                in_coalescer = code_of(files=("ring/coalesce.py", "ring/wakeups.py"))
                armed: list[bool] = []
                # The other read's task steps before the eventfd's reader runs (its flush is
                # then scheduled ahead of the drain the cut-short delivery schedules).
                loop.call_soon(armed.append, True)
                second = loop.create_task(hot.read(8, 8))
                with signal_at(
                    lambda code: in_coalescer(code) and code.co_name == "resolve", 0, armed=lambda: bool(armed)
                ) as sent:
                    done, _ = loop.run_until_complete(asyncio.wait([first, second], timeout=3.0))
                assert sent.where is not None, "the signal was never sent"
                assert done == {first, second}, f"a signal {sent.where}: an await never ended"
                assert any(isinstance(c.get("exception"), Interrupt) for c in logged), logged
                assert second.result() == _block(1)
                assert first.result() == b"from-the-pipe"[:8], f"the arena was reused: {first.result()!r}"
            finally:
                late.close()
    finally:
        loop.close()


def _reap_until_one(ring: Ring) -> None:
    """Reap *ring* (from this thread) until a batch completed, for at most 2 s."""
    deadline = time.monotonic() + 2.0
    while not ring.reap():
        assert time.monotonic() < deadline, "the batch never completed"
        time.sleep(0.001)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("reaper", ["eventfd", "thread", "signalled-thread"])
def test_a_signal_anywhere_in_a_late_delivery_still_resolves_the_await(
    tmp_path: os.PathLike[str], pipe: tuple[int, int], reaper: str
) -> None:
    """A flush's read completes late (from a pipe) and is reaped either by the loop's reader
    of the ring's eventfd ("eventfd"), which consumes the eventfd's count first, or by
    another thread's reap ("thread"), which hands the delivery to the loop's thread.  A
    signal at any point of the loop's side from then on (the reader right after the
    count's read, ``Coalescer.reap``'s entry, a reap, the posted drain's entry, the
    delivery) must still leave the await ending with its bytes, with no further
    completion to wake the loop.  (When the reader did not reschedule a reap cut short, a
    signal at ``Coalescer.reap``'s entry left the await waiting for the next completion;
    when the other thread posted a function that held the delivery itself, a signal at
    that function's entry lost the delivery.)  "signalled-thread": the signal lands in the
    other thread's reap instead (this thread's, the loop not running meanwhile), at each
    point of its collection and of the flush's done-callback (a signal at that callback's
    entry lost the delivery for good until session 40), and the loop then runs unsignalled."""
    r, w = pipe
    path = small_file(tmp_path)
    loop, _ = _logging_loop()  # (the delivery's Interrupt is logged, not printed)
    chosen = code_of(
        files=("ring/__init__.py", "ring/coalesce.py", "ring/wakeups.py", "ring/aio.py", "ring/interrupts.py")
    )

    try:
        loaded = load_config(env={}, overrides=_PLAIN_URING)
        with open_stack(loaded.config, plugin_manager=loaded.plugin_manager) as s:
            ring = s.workers[0].rings["storage"]

            def once(at: int) -> str | None:
                late, task = _held_read(s, path, r, loop)
                try:
                    armed: list[bool] = []
                    loop.call_soon(armed.append, True)
                    os.write(w, b"from-the-pipe"[:8])  # completes it: the eventfd is readable
                    if reaper == "thread":
                        other = threading.Thread(target=_reap_until_one, args=(ring,))
                        other.start()
                        other.join()
                    if reaper == "signalled-thread":
                        wait_until(lambda: ring._cq_head[0] != ring._cq_tail[0], 2.0, "the read's completion")
                        with signal_at(chosen, at) as sent, contextlib.suppress(Interrupt):
                            ring.reap()
                        ring.reap()  # (a collection cut short is done again by the next)
                        done, _ = loop.run_until_complete(asyncio.wait([task], timeout=3.0))
                    else:
                        with signal_at(chosen, at, armed=lambda: bool(armed)) as sent:
                            done, _ = loop.run_until_complete(asyncio.wait([task], timeout=3.0))
                    assert done == {task}, f"a signal {sent.where}: the await never ended"
                    assert task.result() == b"from-the-pipe"[:8], f"a signal {sent.where}: {task.result()!r}"
                    return sent.where
                finally:
                    late.close()

            assert sweep(once) > 5
    finally:
        loop.close()
