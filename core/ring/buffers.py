"""Buffers the kernel can DMA into: page-aligned allocations and registered-buffer leases.

O_DIRECT and NVMe passthrough need buffers, offsets and lengths aligned to the
device's logical block size.  Anonymous ``mmap`` memory is page aligned
(4096 bytes, a multiple of every logical block size in practice), so
:func:`aligned_buffer` is the simple, safe way to get one.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from uringstack.errors import AlignmentError
from uringstack.ring.native import ffi
from uringstack.ring.pins import pin_buffer

if TYPE_CHECKING:
    from uringstack.ring import Ring
    from uringstack.ring.columns import BatchColumns

PAGE_SIZE = mmap.PAGESIZE
_RETIRED = -1  # a released lease's ring_id: no ring's id(), so it matches no registered table


def aligned_buffer(size: int, alignment: int = PAGE_SIZE) -> mmap.mmap:
    """A zero-filled, writable buffer of *size* bytes whose address is *alignment*-aligned."""
    if size <= 0:
        raise ValueError(f"buffer size must be positive, got {size}")
    if alignment <= 0 or alignment & (alignment - 1) or PAGE_SIZE % alignment:
        raise ValueError(f"alignment must be a power of two dividing the page size, got {alignment}")
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class LeasedBuffer(mmap.mmap):
    """A page-aligned buffer that ``FileHandle.lease_buffers`` hands out where no
    registered pool serves the handle, pinned once for the whole lease.

    ``_uringstack_pin`` (a writable ``ffi.from_buffer`` cdata of the buffer) is what the
    asyncio batch path submits, so a loop reusing its leases pays no
    ``ffi.from_buffer`` per op.  It holds a buffer export: the mmap cannot be
    closed or resized while leased.  ``release_buffers`` drops it; a lease
    dropped without release is freed by the cyclic garbage collector."""

    __slots__ = ("_uringstack_pin",)
    _uringstack_pin: Any


def leased_buffer(size: int, pin: bool = True) -> LeasedBuffer:
    """A zero-filled, page-aligned :class:`LeasedBuffer` of *size* bytes, pinned unless *pin* is False
    (one op cannot move it whole: the caller's batch path pins and splits it)."""
    if size <= 0:
        raise ValueError(f"buffer size must be positive, got {size}")
    buf = LeasedBuffer(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if pin:
        buf._uringstack_pin = ffi.from_buffer("char[]", buf, True)
    return buf


def address_of(pin: Any) -> int:
    """Integer address of a cdata obtained from ``ffi.from_buffer``."""
    return int(ffi.cast("uintptr_t", pin))


def released_lease_error() -> ValueError:
    """The error for I/O on a registered buffer that ``release_buffers`` gave back."""
    return ValueError(
        "a registered buffer used after release_buffers gave it back (its memory may be another "
        "lease's now): lease another"
    )


def lease_view(buf: RegisteredBuffer) -> memoryview:
    """*buf*'s memory, or :func:`released_lease_error` once it was released."""
    if buf.ring_id == _RETIRED:
        raise released_lease_error()
    return buf.view


def pin_buffers(buffers: Sequence[Any], *, writable: bool) -> tuple[list[Any], list[int], list[int]]:
    """``(keep, addresses, lengths)`` for a batch: what the batch must hold until
    completion, and where each buffer's memory is.  Registered-buffer leases are
    taken as they are (plain memory to a ring they are not registered with).
    A buffer it cannot pin raises with the pins made so far let go
    (:func:`release_pins`)."""
    keep: list[Any] = []
    addrs: list[int] = []
    lens: list[int] = []
    try:
        for buf in buffers:
            if isinstance(buf, RegisteredBuffer):
                if buf.ring_id == _RETIRED:
                    raise released_lease_error()
                keep.append(buf)
                addrs.append(buf.addr)
                lens.append(buf.size)
                continue
            p = pin_buffer(buf, writable)
            keep.append(p)
            addrs.append(address_of(p))
            lens.append(len(p))
    except BaseException:
        release_pins(keep)
        raise
    return keep, addrs, lens


def release_pins(keep: Sequence[Any]) -> None:
    """Let go of the buffer exports of :func:`pin_buffers`' pins now (leases are left alone).

    For a path that raises after pinning (a misaligned O_DIRECT buffer): pins
    left in the raising frame, which a caller keeping the exception holds in a
    reference cycle, crashed the interpreter when the garbage collector freed
    a ``memoryview`` of an ``mmap`` before cffi's pin of it (a cffi bug: a
    segfault in a collection, seen with cffi 2.0 and 2.1; NVMe probe, session
    28).  Released, a pin holds no export."""
    for pin in keep:
        if isinstance(pin, ffi.CData):
            ffi.release(pin)


@contextlib.contextmanager
def pins_released_on_error(keep: Sequence[Any]) -> Iterator[None]:
    """Run the block; if it raises, :func:`release_pins` *keep* before the error goes on."""
    try:
        yield
    except BaseException:
        release_pins(keep)
        raise


def fixed_slots(buffers: Sequence[Any], ring: Ring) -> list[int]:
    """Per buffer, its index in *ring*'s registered buffers, or -1 (not a lease registered
    with *ring*: a plain READ/WRITE at its address, correct, just not faster)."""
    ring_id = id(ring)
    return [b.index if isinstance(b, RegisteredBuffer) and b.ring_id == ring_id else -1 for b in buffers]


def fixed_opcodes_pay(direct: bool) -> bool:
    """Whether ops on registered buffers go out as READ_FIXED/WRITE_FIXED on a file opened
    with O_DIRECT or not (*direct*); where not, a lease is read or written with a plain
    READ/WRITE at its address (the same memory, tracked in flight the same way).

    A registration saves pinning the caller's pages per op, which only O_DIRECT does
    (the device moves the data to or from them).  Through the page cache the kernel
    copies, nothing is pinned, and the copy into a registered buffer measured slower
    than into the same memory given as an address: liburing, 4 KiB random reads of a
    hot 256 MiB file at QD32 on this 2-vCPU VM (kernel 6.18), 4 rounds of the four
    variants alternated: 0.99-1.10 µs of CPU per READ_FIXED against 0.72-0.89 µs per
    READ, with or without a fixed file; buffered writes equal within the noise
    (3.1-3.8 µs both, 3 rounds)."""
    return direct


def put_opcodes(cols: BatchColumns, slots: list[int], plain: int, fixed: int, direct: bool) -> None:
    """The ``opcodes`` of ops on buffers with these :func:`fixed_slots` on a file opened with
    O_DIRECT or not (*direct*): *fixed* (READ_FIXED/WRITE_FIXED, with its ``buf_index``)
    where a slot is >= 0 and :func:`fixed_opcodes_pay`, else *plain*."""
    if fixed_opcodes_pay(direct) and max(slots) >= 0:
        cols.set("opcodes", [fixed if i >= 0 else plain for i in slots])
        cols.set("buf_index", [max(i, 0) for i in slots])
    else:
        cols.fill("opcodes", plain)


def check_alignment(
    op: str, filename: str, addr: int, length: int, offset: int, block: int, pins: Sequence[Any] = ()
) -> None:
    """Raise :class:`AlignmentError` naming what is misaligned, before anything is submitted.

    *pins*: the caller's pins of the buffers, let go before the error is
    raised (:func:`release_pins`: a pin left in the raising frame can crash
    the interpreter)."""
    bad = []
    if addr % block:
        bad.append(f"buffer address {addr:#x} is not a multiple of {block}")
    if length % block:
        bad.append(f"length {length} is not a multiple of {block}")
    if offset % block:
        bad.append(f"offset {offset} is not a multiple of {block}")
    if bad:
        release_pins(pins)
        raise AlignmentError(
            f"{op} on {filename} (O_DIRECT, logical block size {block}): "
            + "; ".join(bad)
            + ". Use uringstack.aligned_buffer() or a registered-buffer lease."
        )


class RegisteredBuffer:
    """A slice of memory registered with one ring (a fixed buffer).

    ``view`` is its memory as a writable :class:`memoryview`: pass
    ``lease.view`` where a buffer is wanted (``memoryview(lease)`` itself
    works from Python 3.12, which added the buffer protocol for Python
    classes); ``bytes(lease)``, ``lease[a:b]`` and ``lease[a:b] = data``
    work on every version.  Handles take leases as they are.

    Plugins (fixedbuf) create these; the I/O path turns reads and writes on
    them into READ_FIXED/WRITE_FIXED on O_DIRECT files (:func:`fixed_opcodes_pay`).
    ``ring_id`` is ``id()`` of the ring the memory is registered with: a lease
    used on another ring falls back to a plain READ/WRITE, which is correct,
    just not faster.
    """

    __slots__ = ("addr", "batch", "index", "parent", "ring_id", "size", "view")

    def __init__(
        self, view: memoryview, index: int, addr: int, ring_id: int, parent: RegisteredBuffer | None = None
    ) -> None:
        self.view = view
        self.parent = parent
        self.index = index
        self.addr = addr
        self.ring_id = ring_id
        self.size = len(view)
        # The last batch that used this buffer; a pool must not hand the buffer
        # out again before that batch finished (the kernel may still write it).
        self.batch: Any = None

    def sub(self, start: int, length: int) -> RegisteredBuffer:
        """The registered range ``[start, start + length)`` of this buffer (still a fixed buffer)."""
        if start < 0 or length <= 0 or start + length > self.size:
            raise ValueError(f"range {start}+{length} outside a {self.size}-byte registered buffer")
        root = self.parent or self
        return RegisteredBuffer(self.view[start : start + length], self.index, self.addr + start, self.ring_id, root)

    @property
    def released(self) -> bool:
        """True once :meth:`retire` ran: the lease was given back, its memory is the pool's."""
        return self.ring_id == _RETIRED

    def retire(self) -> None:
        """Make this lease unusable (``release_buffers`` calls it): I/O on it is refused
        (:func:`pin_buffers`; it matches no ring's registered buffers), and its ``view``
        is released (unless the caller holds an export of it), since the memory goes
        to the pool's next lease."""
        self.ring_id = _RETIRED
        self.index = -1
        with contextlib.suppress(BufferError):
            self.view.release()

    def in_flight(self) -> bool:
        """True while the last batch submitted with this buffer has not completed.

        A part of a registered buffer (a lease of ``lease_buffers``, a :meth:`sub`)
        asks the buffer it is part of, which is what batches mark: so it is also
        True while another part of that buffer is in flight (the safe answer)."""
        owner = self.parent or self
        return owner.batch is not None and not owner.batch.finished

    def __len__(self) -> int:
        return self.size

    # Bytes-like access.  Python 3.11 cannot give a pure-Python class the buffer
    # protocol, so ``memoryview(lease)`` needs 3.12's __buffer__; on every
    # version ``lease.view`` is the lease's memory as a writable memoryview
    # (what to pass to APIs that want a buffer), and bytes(), slicing and
    # slice assignment work on the lease itself.
    def __bytes__(self) -> bytes:
        return self.view.tobytes()

    def __getitem__(self, key: slice) -> memoryview:
        """``lease[a:b]``: a memoryview of that part of the lease's memory."""
        if not isinstance(key, slice):
            raise TypeError("index a registered buffer with a slice, or use lease.view")
        return self.view[key]

    def __setitem__(self, key: slice, data: Any) -> None:
        """``lease[a:b] = data``: copy *data* into the lease's memory."""
        if not isinstance(key, slice):
            raise TypeError("index a registered buffer with a slice, or use lease.view")
        self.view[key] = data

    def __buffer__(self, flags: int) -> memoryview:
        """The buffer protocol (Python 3.12+): ``memoryview(lease)``, ``f.write(lease)``."""
        return self.view

    def __release_buffer__(self, view: memoryview) -> None:
        """Nothing to release: the pool owns the memory (Python 3.12+ buffer protocol)."""


class BufferProvider(Protocol):
    """What a buffer-pool plugin registers in a worker's :class:`BufferRegistry`.

    :meth:`FileHandle.lease_buffers` leases from it for handles on ``ring``
    (the ring the buffers are registered with).
    """

    buffer_size: int
    count: int
    ring: Ring

    def owns(self, buf: RegisteredBuffer) -> bool:
        """True when *buf* is one of this pool's buffers (leased or not)."""
        ...

    def lease(self) -> RegisteredBuffer:
        """A free buffer; raise :class:`BufferError` when none is free."""
        ...

    def release(self, buf: RegisteredBuffer) -> None:
        """Give *buf* back; deferred by the pool while it is still in flight."""
        ...


class BufferRegistry:
    """The registered-buffer providers of one worker, by plugin name (``worker.buffers``).

    A plugin that registers buffers with a ring in ``uringstack_ring_created``
    calls :meth:`register`; the core's handles find the pool for their ring
    with :meth:`for_ring`, so no module needs to know another's resource key.
    The plugin removes its provider in ``uringstack_stack_teardown`` with
    :meth:`unregister` before it frees the memory.
    """

    def __init__(self) -> None:
        self._providers: dict[str, BufferProvider] = {}

    def register(self, plugin: str, provider: BufferProvider) -> None:
        """Make *provider* serve leases for its ring; one provider per plugin and ring."""
        if plugin in self._providers:
            raise ValueError(f"plugin {plugin!r} already registered a buffer provider on this worker")
        for other, existing in self._providers.items():
            if existing.ring is provider.ring:
                raise ValueError(
                    f"plugin {plugin!r}: the {provider.ring.params.role} ring already has buffers "
                    f"registered by plugin {other!r} (a ring has one registered-buffer table)"
                )
        self._providers[plugin] = provider

    def unregister(self, plugin: str) -> BufferProvider | None:
        """Remove and return *plugin*'s provider (``None`` if it had none)."""
        return self._providers.pop(plugin, None)

    def get(self, plugin: str) -> BufferProvider | None:
        """*plugin*'s provider, or ``None``."""
        return self._providers.get(plugin)

    def for_ring(self, ring: Ring | None) -> BufferProvider | None:
        """The provider whose buffers are registered with *ring*, or ``None``."""
        if ring is None:
            return None
        return next((p for p in self._providers.values() if p.ring is ring), None)

    def names(self) -> list[str]:
        """The plugins that registered a provider, in registration order."""
        return list(self._providers)

    def __len__(self) -> int:
        return len(self._providers)
