"""Resolving asyncio futures by running each awaiting task's wake-up in place.

``fut.set_result`` schedules every done-callback with ``loop.call_soon``: a
Handle, a trip through the loop's ready queue and ``Handle._run`` per await.
Whoever resolves many futures at once on the loop's thread, outside any task
(the asyncio coalescer's delivery, the write-ahead log's acknowledgement of a
flush), runs each awaiting task's wake-up itself instead: :func:`resolve`.

A thread that resolves a future on its loop (``loop.call_soon_threadsafe``) passes
:func:`set_result_unless_done` (C, from ``_futures.c``) as the callback: the task may
be cancelled before the callback runs, and ``fut.set_result`` would then raise
``InvalidStateError`` in the loop's exception handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uringstack.ring._futures import set_result_unless_done as set_result_unless_done
from uringstack.ring.interrupts import despite_signals

# asyncio.Future's own methods, unbound: a call of one on an exact ``asyncio.Future``
# skips the method lookup, which CPython 3.11 does not specialize on the C Future
# (its instances have a ``__dict__`` slot): about 150 instructions per call, two per await.
_set_result = asyncio.Future.set_result
_remove_done_callback = asyncio.Future.remove_done_callback


def makes_plain_futures(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether *loop* makes exact ``asyncio.Future`` objects (asyncio's own loops do), whose
    methods :func:`resolve` may call unbound and whose done-callbacks it may take off."""
    return type(loop).create_future is asyncio.BaseEventLoop.create_future


def resolve(futures: list[asyncio.Future[Any]], values: list[Any], direct: bool, plain: bool = False) -> None:
    """Set each future's value; with *direct*, run its awaiting task's wake-up here.

    ``fut.set_result`` schedules every done-callback with ``loop.call_soon``: a
    Handle, a trip through the loop's ready queue and ``Handle._run`` per await
    (about 0.6 us of the ~6 us a cached 4 KiB ``await read`` costs).  A future
    awaited by a task has one callback, the task's wake-up; *direct* (only on the
    loop thread, outside any task and any lock a woken task may take: the
    coalescer's drain() and flush, the log's acknowledgement callback) takes it
    off, sets the result, and runs it in the task's context at once, which is what
    the loop would have done one turn later.  A future with other callbacks (or
    none: its task was cancelled, or nobody awaits it yet) is resolved the plain
    way.  If a wake-up raises (a KeyboardInterrupt out of the task's step), the
    futures after it are still resolved before the error propagates.  Safe to run
    again after a raising signal cut it short anywhere (:func:`_rewake` runs a wake-up
    it had taken off): a run again resolves only the futures not yet done.  *plain*: every
    future is an exact ``asyncio.Future`` (its methods are called unbound).

    (The coalescer: copying each arena read's bytes just before its wake-up, instead of all of them
    first, was measured and dropped: ~650 fewer instructions per await, but ~180
    more L1 instruction and ~100 more L1 data cache misses per await in cachegrind's
    simulation, the copy's code and data evicted by every wake-up in between.)"""
    if not direct:
        for fut, value in zip(futures, values, strict=True):
            if not fut.done():  # else the awaiting task was cancelled
                fut.set_result(value)
        return
    set_result = _set_result if plain else _call_set_result
    remove = _remove_done_callback if plain else _call_remove_done_callback
    for i, fut in enumerate(futures):
        cbs = fut._callbacks  # (None once done: setting a result or cancelling takes the callbacks off)
        if cbs is None or len(cbs) != 1:
            if not fut.done():
                set_result(fut, values[i])
            continue
        cb, ctx = cbs[0]
        try:
            remove(fut, cb)
            set_result(fut, values[i])
            ctx.run(cb, fut)
        except BaseException:
            # The wake-up raised (the task's own error, run once), or a signal landed
            # between taking it off and running it: then it runs later, once.
            despite_signals(_rewake, fut, cb, ctx, values[i])
            resolve(futures[i + 1 :], values[i + 1 :], False)
            raise


def _rewake(fut: asyncio.Future[Any], cb: Callable[..., Any], ctx: Any, value: Any) -> None:
    """After :func:`resolve` took the one done-callback *cb* off *fut* to run it in place and
    was cut short: make sure it runs, once (safe to repeat).

    Before *fut* had its result: *cb* goes back on (unless it still is) and the result is
    set, which schedules it.  After: when *cb* is a task's wake-up and the task still
    waits for *fut* (its step did not run: a task clears its waiter when a step begins),
    a guarded wake-up is scheduled (:func:`_wake_if_waiting`: a repeat of this step
    schedules another, which finds the task gone on).  Any other callback counts as run
    (no await of the stack gives its future one: their coroutines run in tasks)."""
    if not fut.done():
        if not any(c is cb for c, _ in fut._callbacks or ()):
            fut.add_done_callback(cb, context=ctx)
        fut.set_result(value)
        return
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task) and getattr(task, "_fut_waiter", None) is fut:
        fut.get_loop().call_soon(_wake_if_waiting, task, cb, fut, context=ctx)


def _wake_if_waiting(task: asyncio.Task[Any], cb: Callable[..., Any], fut: asyncio.Future[Any]) -> None:
    if getattr(task, "_fut_waiter", None) is fut:  # (else a wake-up scheduled before this one ran the step)
        cb(fut)


def _call_set_result(fut: asyncio.Future[Any], value: Any) -> None:
    fut.set_result(value)


def _call_remove_done_callback(fut: asyncio.Future[Any], cb: Callable[..., Any]) -> None:
    fut.remove_done_callback(cb)
