"""A child process that stresses one ring from many sides at once (run by
test_stress_signals.py).

Usage: ``python tests/ring/stress_child.py MODE SEED SECONDS`` with MODE ``ring``
(``Ring`` itself: single ops, batches, reads of pipes that complete late or are
cancelled, ``wait_any``), ``stack`` (a stack with one worker: blocking handle calls,
awaits of coalesced reads, batches, writes and ``fdatasync``; ``STRESS_BACKEND`` picks
the backend) or ``fileobj`` (``uringstack.open`` files, buffered, raw and O_DIRECT, and
``uringstack.aio.open``, each opened, read and closed per op, on a one-worker stack;
fixedbuf registers each file; ``STRESS_BACKEND`` as for ``stack``). Worker threads and,
in most seeds, an event loop in a thread of its own use the ring while the main thread
makes blocking calls under SIGALRM timers whose handler raises (as Ctrl-C or an
alarm-based timeout would), at random points; buffers are ``memoryview``s of ``mmap``
memory. Then the ring (or stack) is closed under the threads (what they meet then is not
counted: a file object's descriptor closed under a thread's call gives EBADF, as a
built-in file closed by another thread does).

``STRESS_NO_ALARMS`` turns the alarms off, ``STRESS_TRACE`` adds tracebacks to the
report.

Exits 0 after printing ``ok`` when every read returned its block's bytes, the event loop
kept making progress after the alarms, the ring still served a read, and every thread
ended after the close; else prints what went wrong and exits 1. A hang ends the child
through ``faulthandler`` (every thread's stack printed, exit 1) and a crash kills it:
both fail the test. Session 40 found with it an await whose wake-up a signal in another
thread's collection lost for good, a segfault in a garbage collection of a pinned
``memoryview`` (CPython gh-77894), and a descriptor closed twice after a signal in a
plugin's ``file_opened``.
"""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import mmap
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from uringstack.errors import RingClosedError, UringIOError

BLOCKS = 256
ANY_POS = -1 & 0xFFFFFFFFFFFFFFFF  # "current position": a pipe has no offsets
HANG_S = 90  # past this the child prints every thread's stack and exits 1


class Alarm(BaseException):
    """What the SIGALRM handler raises in the main thread's calls (a BaseException, as Ctrl-C's KeyboardInterrupt)."""


class Stress:
    """What the threads share: the failures seen, the ops done, whether to stop."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.stop = threading.Event()
        self.closing = threading.Event()  # set right before the close under the threads
        self._lock = threading.Lock()

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def check_block(self, buf: Any, k: int, what: str) -> None:
        want = k.to_bytes(8, "little")
        if bytes(buf[:8]) != want or bytes(buf[4088:4096]) != want:
            self.errors.append(f"{what}: block {k} read as {bytes(buf[:8])!r}")


def view4k() -> memoryview:
    return memoryview(mmap.mmap(-1, 4096))


def data_file(directory: str) -> str:
    path = os.path.join(directory, f"stress-{os.getpid()}")
    with open(path, "wb") as f:
        for k in range(BLOCKS):
            f.write(k.to_bytes(8, "little") * 512)
    return path


def _closed_after(timer: threading.Timer | None, *fds: int) -> None:
    """Close *fds* once *timer* (which may write to one) ran or was cancelled: a close
    before it would let its write reach whatever file took the number next."""
    if timer is not None:
        timer.cancel()
        timer.join()
    for fd in fds:
        os.close(fd)


def ring_ops(stress: Stress, ring: Any, fd: int) -> list[Callable[[random.Random], None]]:
    """The ops of MODE ring, on *ring* and the data file's descriptor *fd*."""
    from uringstack.ring.aio import wait_batch
    from uringstack.ring.buffers import address_of
    from uringstack.ring.flags import Op
    from uringstack.ring.pins import pin_buffer

    def cancelled(res: int) -> bool:
        return ring.closed and res == -errno.ECANCELED

    def rw_one(rnd: random.Random) -> None:
        buf = view4k()
        pin = pin_buffer(buf, True)
        k = rnd.randrange(BLOCKS)
        res = ring.rw_one(Op.READ, fd, pin, 4096, k * 4096, 0, 0, (buf, pin))
        if res != 4096:
            if not cancelled(res):
                stress.errors.append(f"rw_one of block {k}: {res}")
        else:
            stress.check_block(buf, k, "rw_one")
        stress.count("rw_one")

    def submitted(rnd: random.Random, wait: bool) -> tuple[Any, list[memoryview], list[int]]:
        bufs = [view4k() for _ in range(rnd.randrange(1, 9))]
        pins = [pin_buffer(b, True) for b in bufs]
        ks = [rnd.randrange(BLOCKS) for _ in bufs]
        batch = ring.submit(
            Op.READ, fd, addrs=list(map(address_of, pins)), lens=4096, offsets=[k * 4096 for k in ks],
            keep=[bufs, pins], wait=wait,
        )  # fmt: skip
        return batch, bufs, ks

    def checked(results: list[int], bufs: list[memoryview], ks: list[int], what: str) -> None:
        for buf, k, res in zip(bufs, ks, results, strict=True):
            if res != 4096:
                if not cancelled(res):
                    stress.errors.append(f"{what} of block {k}: {res}")
            else:
                stress.check_block(buf, k, what)

    def batch(rnd: random.Random) -> None:
        b, bufs, ks = submitted(rnd, rnd.random() < 0.5)
        checked(ring.wait(b), bufs, ks, "batch")
        stress.count("batch")

    def pipe_read(
        then: Callable[[Any, int], object], delay: float, waited: Callable[[Any], list[int]], want: list[list[int]]
    ) -> None:
        """A 1-byte read of an empty pipe; *then* (given the batch and the write end) after *delay*."""
        r, w = os.pipe()
        timer: threading.Timer | None = None
        try:
            buf = bytearray(1)
            pin = pin_buffer(buf, True)
            b = ring.submit(Op.READ, r, addrs=address_of(pin), lens=1, offsets=ANY_POS, keep=[buf, pin])
            timer = threading.Timer(delay, then, (b, w))
            timer.start()
            res = waited(b)
            if res not in want and not cancelled(res[0]):
                stress.errors.append(f"a pipe read: {res}")
        finally:
            _closed_after(timer, r, w)

    def fed(b: Any, w: int) -> None:
        os.write(w, b"y")

    def late_pipe(rnd: random.Random) -> None:  # a wait past HOLD_MS: unlocked, leader and gate
        pipe_read(fed, rnd.choice([0.0, 0.001, 0.003, 0.02]), ring.wait, [[1]])
        stress.count("late_pipe")

    def cancelled_pipe(rnd: random.Random) -> None:
        cancel = lambda b, w: ring.cancel_ops(b)  # noqa: E731
        pipe_read(cancel, rnd.choice([0.0, 0.001, 0.003, 0.02]), ring.wait, [[-errno.ECANCELED], [-errno.EINTR]])
        stress.count("cancelled_pipe")

    def any_then_wait(b: Any) -> list[int]:
        while not b.finished:
            ring.wait_any()
        results: list[int] = ring.wait(b)
        return results

    def wait_any(rnd: random.Random) -> None:
        pipe_read(fed, 0.005, any_then_wait, [[1]])
        stress.count("wait_any")

    async def awaited(rnd: random.Random) -> None:
        b, bufs, ks = submitted(rnd, False)
        checked(await wait_batch(ring, b), bufs, ks, "wait_batch")
        stress.count("await")

    ops = [rw_one, rw_one, batch, batch, late_pipe, cancelled_pipe, wait_any]
    ops.append(awaited)  # type: ignore[arg-type]  # (the loop's; the last)
    return ops


def stack_ops(stress: Stress, h: Any, hw: Any) -> list[Callable[[random.Random], None]]:
    """The ops of MODE stack, on a read-only handle *h* of the data file and a writable *hw*."""

    def read_into(rnd: random.Random) -> None:
        buf, k = view4k(), rnd.randrange(BLOCKS)
        if h.read_into(buf, k * 4096) != 4096:
            stress.errors.append(f"read_into of block {k}: short")
        stress.check_block(buf, k, "read_into")
        stress.count("read_into")

    def read_many(rnd: random.Random) -> None:
        bufs = [view4k() for _ in range(rnd.randrange(1, 9))]
        ks = [rnd.randrange(BLOCKS) for _ in bufs]
        offsets = [k * 4096 for k in ks]
        results = h.read_many(offsets, bufs) if rnd.random() < 0.5 else h.start_read_many(offsets, bufs).wait()
        for buf, k, res in zip(bufs, ks, results, strict=True):
            if res != 4096:
                stress.errors.append(f"read_many of block {k}: {res}")
            stress.check_block(buf, k, "read_many")
        stress.count("read_many")

    def write(rnd: random.Random) -> None:
        k = rnd.randrange(64)
        hw.write_from(k.to_bytes(8, "little") * 512, k * 4096)
        if rnd.random() < 0.2:
            hw.fdatasync()
        stress.count("write")

    async def awaited(rnd: random.Random) -> None:
        c = rnd.random()
        if c < 0.5:
            k = rnd.randrange(BLOCKS)
            stress.check_block(await h.read(4096, k * 4096), k, "await read")
        elif c < 0.85:
            bufs = [view4k() for _ in range(rnd.randrange(1, 5))]
            ks = [rnd.randrange(BLOCKS) for _ in bufs]
            for buf, k, res in zip(bufs, ks, await h.read_many_async([k * 4096 for k in ks], bufs), strict=True):
                if res != 4096:
                    stress.errors.append(f"read_many_async of block {k}: {res}")
                stress.check_block(buf, k, "read_many_async")
        else:
            k = rnd.randrange(64, 128)
            await hw.write(k.to_bytes(8, "little") * 512, k * 4096)
            await hw.fdatasync_async()
        stress.count("await")

    ops = [read_into, read_many, read_many, write]
    ops.append(awaited)  # type: ignore[arg-type]
    return ops


def fileobj_ops(stress: Stress, stack: Any, path: str) -> list[Callable[[random.Random], None]]:
    """The ops of MODE fileobj: file objects of *stack* on the data file at *path*, opened per op
    (buffered, unbuffered, O_DIRECT, text-free), read at random blocks, then closed."""
    import uringstack
    import uringstack.aio

    # Resolved here, before the threads and the alarms: uringstack imports these on first use,
    # and CPython's import machinery is not safe against a raising signal (one that lands
    # while the main thread holds the import lock leaves every later import in every thread
    # waiting: seen once in the VM, 5.10).
    open_file, open_async = uringstack.open, uringstack.aio.open
    with open_file(path, "rb", stack=stack) as f:
        f.read(1)

    def opened(rnd: random.Random) -> Any:
        kind = rnd.randrange(3)
        if kind == 0:
            return open_file(path, "rb", stack=stack)
        if kind == 1:
            return open_file(path, "rb", buffering=0, stack=stack)
        return open_file(path, "rb", direct=True, stack=stack)

    def reads(rnd: random.Random) -> None:
        with opened(rnd) as f:
            for _ in range(rnd.randrange(1, 6)):
                k = rnd.randrange(BLOCKS)
                f.seek(k * 4096)
                buf = view4k()
                if rnd.random() < 0.5:
                    n = f.readinto(buf)
                else:
                    data = f.read(4096)
                    n = len(data)
                    buf[:n] = data
                if n != 4096:
                    stress.errors.append(f"a file object's read of block {k}: {n} bytes")
                stress.check_block(buf, k, "file object")
        stress.count("reads")

    def sequential(rnd: random.Random) -> None:
        with opened(rnd) as f:
            k = rnd.randrange(BLOCKS - 16)
            f.seek(k * 4096)
            data = f.read(16 * 4096)
        for i in range(16):
            stress.check_block(data[i * 4096 : (i + 1) * 4096], k + i, "a sequential read")
        stress.count("sequential")

    async def awaited(rnd: random.Random) -> None:
        async with open_async(path, "rb", stack=stack) as f:
            k = rnd.randrange(BLOCKS)
            await f.seek(k * 4096)
            stress.check_block(await f.read(4096), k, "uringstack.aio")
        stress.count("await")

    ops = [reads, reads, sequential]
    ops.append(awaited)  # type: ignore[arg-type]
    return ops


def worker(stress: Stress, i: int, ops: list[Callable[[random.Random], None]], closed: Callable[[], bool]) -> None:
    rnd = random.Random(stress.seed * 1000 + i)
    while not stress.stop.is_set():
        op = rnd.choice(ops)
        try:
            op(rnd)
        except (RingClosedError, ValueError, UringIOError) as e:
            if not (closed() or stress.closing.is_set()):
                stress.errors.append(f"thread {i}, {op.__name__}: {e!r}")
            return
        except Exception as e:
            if not (stress.closing.is_set() and _closed_under(e)):
                stress.errors.append(f"thread {i}, {op.__name__}: {e!r}{_trace()}")
            return


def _closed_under(e: BaseException) -> bool:
    """A file object's descriptor closed by the stack's close while this thread used it: as a
    built-in file closed by another thread (docs/api.md: close while in use), not a failure here."""
    return isinstance(e, OSError) and e.errno == errno.EBADF


def _trace() -> str:
    """The current exception's traceback, when STRESS_TRACE is set (for a failure's diagnosis)."""
    if not os.environ.get("STRESS_TRACE"):
        return ""
    import traceback

    return "\n" + traceback.format_exc()


def event_loop(stress: Stress, awaited: Callable[[random.Random], Any], tasks: int, closed: Callable[[], bool]) -> None:
    async def task(j: int) -> None:
        rnd = random.Random(stress.seed * 77 + j)
        while not stress.stop.is_set():
            await awaited(rnd)

    async def main() -> None:
        await asyncio.gather(*(task(j) for j in range(tasks)))

    try:
        asyncio.run(main())
    except (RingClosedError, ValueError, UringIOError) as e:
        if not (closed() or stress.closing.is_set()):
            stress.errors.append(f"the event loop: {e!r}")
    except Exception as e:
        if not (stress.closing.is_set() and _closed_under(e)):
            stress.errors.append(f"the event loop: {e!r}")


def main() -> int:
    mode, seed, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    faulthandler.enable(all_threads=True)
    faulthandler.dump_traceback_later(seconds + HANG_S, exit=True)
    rnd0 = random.Random(seed)
    stress = Stress(seed)
    directory = os.environ.get("STRESS_DIR") or os.getcwd()
    path = data_file(directory)
    if mode == "ring":
        from uringstack.ring import Ring

        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        ring = Ring(entries=64)
        ring.wait_tick = rnd0.choice([0.01, 0.05, 0.5])
        ring.wait_timeout = 30.0
        every = ring_ops(stress, ring, fd)
        closed: Callable[[], bool] = lambda: ring.closed  # noqa: E731
        close: Callable[[], None] = ring.close
        main_ops = every[:4]
    elif mode == "fileobj":
        import uringstack

        overrides: dict[str, object] = {"core.cores": [0]}
        if os.environ.get("STRESS_BACKEND"):
            overrides["core.backend"] = os.environ["STRESS_BACKEND"]
        stack = uringstack.open_stack(overrides=overrides)
        every = fileobj_ops(stress, stack, path)
        closed = lambda: stack.closed  # noqa: E731
        close = stack.close
        main_ops = every[:3]
    else:
        import uringstack

        overrides = {"core.cores": [0]}
        if os.environ.get("STRESS_BACKEND"):
            overrides["core.backend"] = os.environ["STRESS_BACKEND"]
        stack = uringstack.open_stack(overrides=overrides)
        h = stack.open(path, direct=rnd0.random() < 0.5, writable=False)
        hw = stack.open(path + ".w", direct=False, create=True)
        every = stack_ops(stress, h, hw)
        closed = lambda: stack.closed or h.closed  # noqa: E731
        close = stack.close
        main_ops = every[:3]
    if mode != "fileobj":  # (file objects open it by name)
        os.unlink(path)
    threads = [
        threading.Thread(target=worker, args=(stress, i, every[:-1], closed), daemon=True)
        for i in range(rnd0.randrange(2, 6))
    ]
    use_loop = rnd0.random() < 0.8
    if use_loop:
        tasks = rnd0.randrange(1, 9)
        threads.append(threading.Thread(target=event_loop, args=(stress, every[-1], tasks, closed), daemon=True))
    for t in threads:
        t.start()

    def alarm(signum: int, frame: object) -> None:
        raise Alarm

    signal.signal(signal.SIGALRM, alarm)
    rnd = random.Random(seed + 99)
    alarms = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stress.errors:
        try:
            try:
                if not os.environ.get("STRESS_NO_ALARMS"):
                    signal.setitimer(signal.ITIMER_REAL, rnd.uniform(0.00005, 0.003))
                rnd.choice(main_ops)(rnd)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Alarm:
            alarms += 1
        except Exception as e:
            stress.errors.append(f"the main thread: {e!r}{_trace()}")
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        main_ops[0](rnd)  # the ring still serves a read after the alarms
    except Exception as e:
        stress.errors.append(f"a read after the alarms: {e!r}")
    if use_loop:
        before = stress.counts.get("await", 0)
        deadline = time.monotonic() + 20
        while stress.counts.get("await", 0) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        if stress.counts.get("await", 0) == before:
            stress.errors.append("the event loop made no progress in 20 s after the alarms (a lost wake-up?)")
            faulthandler.dump_traceback(all_threads=True)
    if rnd0.random() < 0.5:
        stress.stop.set()  # else closed under the threads' calls
    stress.closing.set()
    try:
        close()
    except Exception as e:
        stress.errors.append(f"close: {e!r}")
    stress.stop.set()
    for t in threads:
        t.join(30)
        if t.is_alive():
            stress.errors.append(f"{t.name} still running 30 s after close")
            faulthandler.dump_traceback(all_threads=True)
    if mode == "fileobj":
        os.unlink(path)
    print(f"{mode} seed {seed}: {len(threads)} threads, event loop {use_loop}, {alarms} alarms, ops {stress.counts}")
    if stress.errors:
        print("FAILED:", *stress.errors[:20], sep="\n  ")
        return 1
    faulthandler.cancel_dump_traceback_later()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
