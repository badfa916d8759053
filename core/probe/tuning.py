"""The data of a calibration: what was measured, under which key, and what it decided.

Plain pydantic models with no I/O, so the probe model, the plugins and the
cache can all import them.  A :class:`TuneDocument` is both a cache file and
the ``uringstack tune --json`` output (which ``[core] tune_results`` accepts).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
"""Version of the record format; a file with a higher one is ignored (written by a newer uringstack)."""

SCHEMA = "uringstack.tune/1"

MIN_GAIN = 0.03
"""A choice other than a dimension's first (its cheapest) must beat the first by this
fraction of IOPS to win: below that the difference is noise on a shared machine, and
the cheaper setting (no polling thread, no pinned memory) is kept."""

TargetKind = Literal["file", "directory", "block"]


class DeviceIdentity(BaseModel):
    """What identifies the device a measurement was taken on."""

    model_config = ConfigDict(frozen=True)

    name: str = ""
    """Kernel name of the whole-disk block device (``vda``, ``nvme0n1``); empty when none backs the target."""
    model: str = ""
    serial: str = ""
    wwn: str = ""
    devnum: str = ""
    """``major:minor`` of the block device (or of the file system when no block device backs it)."""
    size_bytes: int = 0
    fs: str = ""
    """File system type for file and directory targets; empty for a raw block device."""


class TuneKey(BaseModel):
    """Everything that makes a measurement valid: the device, the kernel, uringstack, the CPUs."""

    model_config = ConfigDict(frozen=True)

    device: DeviceIdentity
    kernel: str
    uringstack_version: str
    cpus: int

    def mismatches(self, here: TuneKey, *, same_device_class: bool = False) -> list[str]:
        """Why *self* (a stored key) does not hold *here*; empty when it does.

        With *same_device_class* (results shipped to identical machines) the
        serial number, WWN and device number are not compared: another
        machine's drive of the same model and size is expected.
        """
        out: list[str] = []
        mine, yours = self.device, here.device
        fields = ["model", "size_bytes", "fs"]
        if not same_device_class:
            fields += ["serial", "wwn"]
            if not (mine.serial or mine.wwn):
                fields.append("devnum")  # without a serial the device number is its identity
        for name in fields:
            a, b = getattr(mine, name), getattr(yours, name)
            if a != b:
                out.append(f"device {name} {a!r} (tuned) != {b!r} (here)")
        for name in ("kernel", "uringstack_version", "cpus"):
            a, b = getattr(self, name), getattr(here, name)
            if a != b:
                out.append(f"{name} {a} (tuned) != {b} (here)")
        return out


class Workload(BaseModel):
    """The access pattern measured."""

    name: Literal["randread"] = "randread"
    block_size: int = 4096
    queue_depth: int = 32
    direct: bool = True


class Measurement(BaseModel):
    """One candidate's short run."""

    settings: dict[str, str]
    """Dimension name -> chosen value (``{"batch": "4", "sqpoll": "off", "workers": "1", ...}``)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """The config overrides the candidate's stack was opened with."""
    status: Literal["ok", "failed", "skipped"] = "ok"
    """``skipped``: the budget ran out before this candidate's turn."""
    reason: str = ""
    iops: float = 0.0
    cpu_us_per_io: float = 0.0
    """Process CPU time (user + system, every thread including SQPOLL pollers) per I/O, in µs."""
    ops: int = 0
    seconds: float = 0.0
    setup_s: float = 0.0
    """Time to open the candidate's stack and handles (before the warm-up)."""
    teardown_s: float = 0.0
    """Time to close the stack after the window."""


class TuneRecord(BaseModel):
    """The calibration of one target: every measurement and the comparisons it made."""

    format_version: int = FORMAT_VERSION
    target: str
    """The target as named (absolute path): a file, a directory or a block device."""
    kind: TargetKind
    key: TuneKey
    tuned_at: str
    """UTC time, ISO 8601."""
    elapsed_s: float
    workload: Workload = Field(default_factory=Workload)
    measurements: list[Measurement] = Field(default_factory=list)
    compared: dict[str, list[int]] = Field(default_factory=dict)
    """Dimension -> indexes into ``measurements`` that differ only in that dimension."""
    best: int | None = None
    """Index of the best measurement (``None`` when none succeeded)."""
    noise: float = 0.0
    """Relative IOPS difference between two runs of the baseline: this run's noise.
    A choice must beat the first by ``max(MIN_GAIN, noise)``."""
    notes: list[str] = Field(default_factory=list)
    backend: Literal["uring", "fallback", ""] = ""
    """The backend every candidate's stack used for the target (``fallback`` when the config
    forced it or io_uring was unusable); a plan whose stack uses the other one ignores the
    record.  Empty in records written before session 32: taken to hold."""

    @model_validator(mode="after")
    def _indexes_hold(self) -> TuneRecord:
        """Refuse a record whose indexes point nowhere: JSON of the right shape with ``best=99``
        or ``compared.sqpoll=[1, 99]`` (a hand edit, a bad merge) made every plan and
        ``open_stack()`` fail with IndexError until session 32; the loader now ignores it
        with this reason, as any corrupt cache file."""
        n = len(self.measurements)
        if self.best is not None:
            if not 0 <= self.best < n:
                raise ValueError(f"best = {self.best} is not the index of one of its {n} measurements")
            if self.measurements[self.best].status != "ok":
                raise ValueError(f"best = {self.best} is a measurement that did not succeed")
        for dimension, indexes in self.compared.items():
            for i in indexes:
                if not 0 <= i < n:
                    raise ValueError(f"compared.{dimension} holds {i}, not the index of one of its {n} measurements")
                if dimension not in self.measurements[i].settings:
                    raise ValueError(f"compared.{dimension}: measurement {i} has no {dimension} setting")
        return self

    def best_measurement(self) -> Measurement | None:
        return None if self.best is None else self.measurements[self.best]

    def comparison(self, dimension: str) -> Comparison | None:
        """What the run measured for *dimension*, or ``None`` unless two of its values were measured."""
        idx = self.compared.get(dimension)
        if not idx:
            return None
        rows = [self.measurements[i] for i in idx]
        ok = [m for m in rows if m.status == "ok"]
        values = {m.settings[dimension]: m for m in ok}
        if len(values) < 2:
            return None  # the other choices failed or did not fit the budget: nothing was compared
        return Comparison(
            dimension=dimension,
            target=self.target,
            device=self.key.device.name,
            first=rows[0].settings[dimension],
            iops={v: m.iops for v, m in values.items()},
            cpu_us_per_io={v: m.cpu_us_per_io for v, m in values.items()},
            tuned_at=self.tuned_at,
            elapsed_s=self.elapsed_s,
            min_gain=max(MIN_GAIN, self.noise),
        )


class TuneDocument(BaseModel):
    """A cache file (one record) or ``uringstack tune --json`` output (one per target)."""

    schema_: str = Field(SCHEMA, alias="schema")
    format_version: int = FORMAT_VERSION
    records: list[TuneRecord] = Field(default_factory=list)

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, records: list[TuneRecord]) -> TuneDocument:
        """A document of the current format holding *records*."""
        return cls(schema=SCHEMA, records=records)


class Comparison(BaseModel):
    """Measured IOPS of each value of one dimension, the rest of the settings equal."""

    dimension: str
    target: str
    device: str = ""
    """Kernel name of the whole disk the target is on here (``nvme0n1``); empty when no block
    device backs it (tmpfs).  Per-device settings (IOPOLL) use only their device's comparisons."""
    first: str
    """The dimension's first (cheapest) value: another value must beat it by :data:`MIN_GAIN`."""
    iops: dict[str, float]
    cpu_us_per_io: dict[str, float]
    tuned_at: str
    elapsed_s: float
    min_gain: float = MIN_GAIN
    """How much another value must beat the first by: MIN_GAIN, or the run's noise if larger."""

    @property
    def best(self) -> str:
        """The winning value (the first value unless another beats it by ``min_gain``)."""
        base = self.iops.get(self.first, 0.0)
        top = max(self.iops, key=lambda v: self.iops[v])
        if top != self.first and self.iops[top] < base * (1 + self.min_gain):
            return self.first
        return top

    def describe(self, labels: dict[str, str]) -> str:
        """``measured: 118k IOPS with SQPOLL vs 121k without on /dev/vda (tuned 2026-…, 9 s)``.

        *labels* names each value (``{"on": "with SQPOLL", "off": "without"}``);
        the winner comes first.
        """
        order = sorted(self.iops, key=lambda v: (v != self.best, -self.iops[v]))
        parts = [
            f"{_k(self.iops[v])} IOPS {labels.get(v, f'{self.dimension}={v}')}"
            if i == 0
            else f"{_k(self.iops[v])} {labels.get(v, f'{self.dimension}={v}')}"
            for i, v in enumerate(order)
        ]
        stamp = self.tuned_at[:16].replace("T", " ")
        noisy = ""
        if self.min_gain > MIN_GAIN and self.best == self.first and len(order) > 1 and order[0] == self.first:
            if self.iops[order[1]] > self.iops[self.first]:
                noisy = f"; {order[1]} was faster by less than the run-to-run noise of {self.min_gain:.0%}"
        elif self.min_gain > MIN_GAIN:
            noisy = f"; noise {self.min_gain:.0%}"
        return f"measured: {' vs '.join(parts)} on {self.target} (tuned {stamp} UTC, {self.elapsed_s:.0f} s{noisy})"


def _k(iops: float) -> str:
    return f"{iops / 1000:.0f}k" if iops >= 10_000 else f"{iops / 1000:.1f}k"


class AppliedRecord(BaseModel):
    """A record that holds on this machine, and where it came from."""

    source: str
    record: TuneRecord
    device: str = ""
    """Kernel name of the whole disk behind the record's target on this machine (for a
    shipped record it may differ from the tuned machine's); empty: the record's own."""


class TuneState(BaseModel):
    """The measurements the plan may use (``caps.tuning``), and what was ignored and why.

    Plugins in ``auto`` call :meth:`comparisons` with their dimension name and
    decide from the result; with no comparison they fall back to their rule
    and say so (:meth:`no_measurement`).
    """

    records: list[AppliedRecord] = Field(default_factory=list)
    ignored: list[str] = Field(default_factory=list)
    """One line per cache entry or include that was not used, with the reason."""
    searched: str = ""
    """Where the measurements were looked for (the cache directory, the include)."""

    def comparisons(self, dimension: str, device: str | None = None) -> list[Comparison]:
        """Every valid record's comparison of *dimension* (one per tuned target).

        With *device* (a whole disk's kernel name, ``nvme0n1``) only the comparisons
        measured on targets on that disk: for settings chosen per device, like IOPOLL.
        """
        out = []
        for applied in self.records:
            c = applied.record.comparison(dimension)
            if c is None:
                continue
            if applied.device:
                c = c.model_copy(update={"device": applied.device})
            if device is None or c.device == device:
                out.append(c)
        return out

    def no_measurement(self, dimension: str | None = None) -> str:
        """Why no measurement applies, for a plugin's reason text; with *dimension*, a record
        that holds but compared no two values of it is named as such (it read "no
        measurement ... run `uringstack tune`" right after a tune, until session 32)."""
        if dimension is not None and self.records:
            targets = ", ".join(sorted({a.record.target for a in self.records}))
            return (
                f"no comparison of {dimension} in the measurements of {targets} (the run measured "
                f"fewer than two of its values: the budget skipped them, or they failed)"
            )
        if self.ignored:
            return f"no valid measurement ({'; '.join(self.ignored)})"
        return f"no measurement ({self.searched or 'not looked up'}; run `uringstack tune`)"


class TuneChoice(BaseModel):
    """One value of a dimension: its name, label and the config overrides that select it."""

    value: str
    label: str = ""
    """How the plan names it (``"with SQPOLL"``); defaults to ``dimension=value``."""
    overrides: dict[str, Any] = Field(default_factory=dict)


class TuneDimension(BaseModel):
    """A setting a plugin offers to measure (``uringstack_tune_candidates``).

    The first choice is the baseline and should be the cheapest (off): another
    choice is adopted only when it beats it by :data:`MIN_GAIN`.
    """

    name: str
    plugin: str
    choices: list[TuneChoice] = Field(min_length=2)
    summary: str = ""

    @classmethod
    def off_or_on(
        cls, plugin: str, summary: str, labels: dict[str, str], on: dict[str, Any] | None = None
    ) -> TuneDimension:
        """The usual dimension: ``[plugin] mode = "off"`` (the baseline) against on.

        *labels* name the two choices in the plan (``{"off": "without", "on":
        "with SQPOLL"}``); *on* are the overrides that select "on" (default
        ``{"<plugin>.mode": "on"}``)."""
        return cls(
            name=plugin,
            plugin=plugin,
            summary=summary,
            choices=[
                TuneChoice(value="off", label=labels["off"], overrides={f"{plugin}.mode": "off"}),
                TuneChoice(value="on", label=labels["on"], overrides=on or {f"{plugin}.mode": "on"}),
            ],
        )


class TuneTarget(BaseModel):
    """What ``uringstack tune`` measures: the path it reads and the workload.

    Handed to ``uringstack_tune_candidates`` so a plugin can offer choices that
    depend on the device (IOPOLL only where ``device.io_poll``) or the
    workload (buffer sizes).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    given: str
    """The target as named (absolute path)."""
    path: str
    """The file read: the file itself, a scratch file in the directory, or the device node."""
    kind: TargetKind
    device: Any = None
    """The probed :class:`~uringstack.probe.model.BlockDevice` behind the target, if any."""
    workload: Workload = Field(default_factory=Workload)
    size_bytes: int = 0


Comparison.model_rebuild()
TuneRecord.model_rebuild()
