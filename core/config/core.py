"""The ``[core]`` table: :class:`CoreConfig` and its validators."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from uringstack.types import FeatureMode

from .values import parse_cpu_list, parse_name_list, power_of_two_entries


def _bound_s(default: float, description: str) -> Any:
    """A ring wait bound in seconds: finite, > 0, at most a day."""
    return Field(default=default, gt=0, le=86400, allow_inf_nan=False, description=description)


class CoreConfig(BaseModel):
    """The ``[core]`` table: settings of the stack itself, not of any plugin."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "uring", "fallback"] = Field(
        default="auto",
        description=(
            "Which I/O backend serves files: 'auto' uses io_uring where the probe says it is "
            "usable and the portable fallback elsewhere; 'uring' requires io_uring (an error "
            "where it is blocked); 'fallback' never uses io_uring."
        ),
    )
    cores: Annotated[Literal["auto"] | list[int], NoDecode] = Field(
        default="auto",
        description=(
            "CPU ids that get a pinned worker: 'auto' (every CPU this process may use) or a "
            "list such as [0, 2] or, in the environment, '0,2-3'."
        ),
        json_schema_extra={"allowed": "'auto' or a list of CPU ids such as [0, 1] or '0-3'"},
    )
    ring_entries: int = Field(
        default=256,
        description="Submission queue entries per ring: a power of two from 2 to 32768.",
        json_schema_extra={"allowed": "a power of two from 2 to 32768"},
    )
    max_in_flight: int | None = Field(
        default=None,
        description=(
            "Most I/O operations one ring keeps in flight, its queue depth (none: as many as "
            "its completion queue holds, twice ring_entries less 2). A batch larger than it "
            "streams through: each operation goes to the kernel as a completion makes room."
        ),
        json_schema_extra={"allowed": "none, or a whole number from 1 to 2 * ring_entries - 2"},
    )
    disabled_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Plugins (by entry-point name) that are not loaded at all; their config tables "
            "are ignored. In the environment: 'sqpoll,iopoll'."
        ),
    )
    direct: bool = Field(default=False, description="Default for Stack.open(direct=...): open files with O_DIRECT.")
    single_issuer: FeatureMode = Field(
        default="auto",
        description=(
            "IORING_SETUP_SINGLE_ISSUER on the worker rings: 'auto' and 'off' never set it "
            "(handles submit from any thread); 'on' sets it, and each handle's I/O must then run "
            "on its worker thread (a PlanError where the kernel refuses the flag)."
        ),
    )
    aio_inline_read_budget: int = Field(
        default=16 * 1024,
        ge=0,
        le=64 * 1024 * 1024,
        description=(
            "Bytes of page-cache hits one handle's asyncio `await read(n, off)` and "
            "read_many_async (and so uringstack.aio) copy on the event loop's thread "
            "(preadv2 RWF_NOWAIT, never waiting for the device) before one read goes through "
            "the ring and yields to the loop. 0: every asyncio read goes through the ring and "
            "yields. Larger: more reads per second, longer waits for the loop's other tasks "
            "(docs/config.md)."
        ),
    )
    # calibration (docs/tune.md)
    tune: Literal["off", "on-start"] = Field(
        default="off",
        description=(
            "'off': open_stack never measures; 'on-start': when no valid `uringstack tune` "
            "result exists, open_stack first calibrates the current directory's file system "
            "(about 3 s) and caches the result."
        ),
    )
    tune_results: str = Field(
        default="",
        description=(
            "A `uringstack tune --json` file to use instead of this machine's cache (results "
            "shipped to identical machines); empty: the cache."
        ),
    )

    allow_writes_in_use: bool = Field(
        default=False,
        description=(
            "Let Stack.open give a writable handle on a block device, or an NVMe namespace's "
            "generic char device, that is mounted, held (by md, dm, ...), swapped on or claimed "
            "exclusively. Writes there bypass whatever uses the device and would corrupt it, so "
            "such an open is refused (DeviceInUseError, NamespaceInUseError) unless this is "
            "true. Read-only opens (writable=False) are always allowed."
        ),
    )

    accept_kernel_defects: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Ids of known kernel defects (uringstack probe lists those of this kernel) whose "
            'ruled-out pattern may be used anyway, e.g. ["nvme-uring-cmd-iopoll-gpf"]. '
            "Only for a kernel you know to carry the fix. In the environment: 'id1,id2'."
        ),
    )

    # bounds of the blocking waits on every ring the stack builds (docs/config.md)
    wait_timeout_s: float = _bound_s(
        60.0,
        "Seconds a blocking wait on a ring (every synchronous handle call, pending.wait()) "
        "waits for ops the kernel still holds, e.g. on a hung device, before it fails with "
        "ETIMEDOUT naming the ring; the ops stay in flight and keep their buffers.",
    )
    wait_tick_s: float = Field(
        default=0.5,
        validate_default=True,  # (so _check_tick holds the default tick against a short timeout)
        ge=0.001,
        le=60,
        allow_inf_nan=False,
        description=(
            "Seconds between the checks a blocked wait makes: a completion that can no longer "
            "arrive (a lost completion) fails at the next tick, and wait_timeout_s is checked "
            "then. Also the longest a submission made with wait=True waits in the kernel. "
            "At most wait_timeout_s."
        ),
    )

    close_timeout_s: float = _bound_s(
        10.0,
        "Seconds closing a handle waits for its I/O (then TimeoutError, the descriptor kept "
        "open) and closing a ring (stack.close(), Ring.close, unregistering buffers) waits for "
        "the ops it cancelled to complete before it fails with ETIMEDOUT naming the ring and "
        "how many ops were lost; their buffers are then kept for the life of the process.",
    )

    @field_validator("wait_tick_s")
    @classmethod
    def _check_tick(cls, value: float, info: ValidationInfo) -> float:
        # A tick past the deadline would make the deadline fire up to a tick late.  Checked
        # for the default tick too: wait_timeout_s = 0.1 alone left the 0.5 s default tick
        # (validated only when given) and passed until session 27.
        timeout = info.data.get("wait_timeout_s")
        if timeout is not None and value > timeout:
            raise ValueError(
                f"must not exceed core.wait_timeout_s ({timeout:g}; the tick is 0.5 unless set: a "
                "wait_timeout_s below it needs a wait_tick_s too)"
            )
        return value

    @field_validator("cores", mode="before")
    @classmethod
    def _parse_cores(cls, value: object) -> object:
        return parse_cpu_list(value)

    @field_validator("cores")
    @classmethod
    def _check_cores(cls, value: Literal["auto"] | list[int]) -> Literal["auto"] | list[int]:
        if value == "auto":
            return value
        if not value:
            raise ValueError("must name at least one CPU (or be 'auto')")
        if any(cpu < 0 for cpu in value):
            raise ValueError("CPU ids are not negative")
        if len(set(value)) != len(value):
            raise ValueError("lists a CPU twice")
        return value

    @field_validator("ring_entries")
    @classmethod
    def _check_ring_entries(cls, value: int) -> int:
        return power_of_two_entries(value)

    @field_validator("max_in_flight")
    @classmethod
    def _check_max_in_flight(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if value < 1:
            raise ValueError(f"must be 1 or more (got {value}), or none for what the completion queue holds")
        # the CQ the core makes is twice the SQ, less the 2 entries a ring keeps for itself
        entries = info.data.get("ring_entries")
        if entries is not None and value > 2 * entries - 2:
            raise ValueError(
                f"{value} is more than a ring of core.ring_entries = {entries} holds in flight "
                f"({2 * entries - 2}: its completion queue of {2 * entries} less 2); raise ring_entries"
            )
        return value

    @field_validator("disabled_plugins", mode="before")
    @classmethod
    def _parse_disabled(cls, value: object) -> object:
        return parse_name_list(value)

    @field_validator("accept_kernel_defects", mode="before")
    @classmethod
    def _parse_defects(cls, value: object) -> object:
        return parse_name_list(value)

    @field_validator("accept_kernel_defects")
    @classmethod
    def _check_defects(cls, value: list[str]) -> list[str]:
        # An id the table does not know would silently accept nothing: a typo must not pass.
        from uringstack.probe.defects import check_known_ids

        return check_known_ids(value)
