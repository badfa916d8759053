"""``WalConfig``: the knobs of one log, validated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .recovery import RecoveryMode
from .segment import BLOCK_BYTES, DATA_START

MiB = 1 << 20


class WalConfig(BaseModel):
    """Configuration of a :class:`~uringstack.wal.log.Wal` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment_size_bytes: int = Field(
        default=64 * MiB, ge=4 * BLOCK_BYTES, description="size of each preallocated segment file"
    )
    max_batch_bytes: int = Field(
        default=1 * MiB, ge=BLOCK_BYTES,
        description="most record bytes gathered into one write+flush; also the largest record",
    )  # fmt: skip
    max_delay_us: int = Field(
        default=0, ge=0, le=1_000_000,
        description="how long the flusher waits for more appends before flushing; 0 = flush as "
        "soon as the previous flush is done (appends arriving meanwhile still group)",
    )  # fmt: skip
    direct_io: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="O_DIRECT segment writes; auto falls back where O_DIRECT is refused",
    )
    backend: Literal["auto", "uring", "fallback", "posix"] = Field(
        default="auto",
        description="core.backend of the stack the log builds: auto, uring or fallback "
        "(posix: the old name of fallback); auto picks fallback on a disk where durable io_uring "
        "writes are punted to io-wq",
    )
    sync: Literal["dsync", "fdatasync"] = Field(
        default="dsync", description="RWF_DSYNC writes, or writes followed by a (linked) fdatasync"
    )
    async_flush: Literal["thread", "loop"] = Field(
        default="thread",
        description="who writes a batch that asyncio appenders wait on: the flusher thread (the "
        "event loop never blocks), or the event loop itself when nobody is flushing (no thread "
        "hand-offs, more records/s for a loop of appender tasks, but the loop is blocked for each "
        "durable write, as long as the disk takes); needs max_delay_us = 0",
    )
    recovery: RecoveryMode = RecoveryMode.TOLERATE_TAIL

    @model_validator(mode="after")
    def _fits(self) -> WalConfig:
        if self.async_flush == "loop" and self.max_delay_us:
            raise ValueError(
                "async_flush = 'loop' writes a batch as soon as its loop's appends of one tick are in, "
                f"which max_delay_us = {self.max_delay_us} would make wait: set max_delay_us = 0 or "
                "async_flush = 'thread'"
            )
        if self.segment_size_bytes % BLOCK_BYTES:
            raise ValueError(f"segment_size_bytes must be a multiple of {BLOCK_BYTES}")
        if self.max_write_bytes > self.segment_size_bytes - DATA_START:
            raise ValueError(
                "max_batch_bytes (plus one block for the rewritten tail) must fit in a segment: "
                f"{self.max_batch_bytes} vs segment_size_bytes {self.segment_size_bytes}"
            )
        return self

    @property
    def max_write_bytes(self) -> int:
        """Largest single write: the rewritten partial tail block plus one full batch."""
        span = BLOCK_BYTES - 1 + self.max_batch_bytes
        return (span + BLOCK_BYTES - 1) // BLOCK_BYTES * BLOCK_BYTES
