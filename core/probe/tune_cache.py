"""Where measurements are kept, and which of them hold on this machine now.

One file per tuned target under ``$XDG_CACHE_HOME/uringstack/tune/`` (default
``~/.cache``), each a :class:`~uringstack.probe.tuning.TuneDocument` with one
record.  :func:`load_state` reads them (or the file named by
``[core] tune_results``) and keeps only records whose key matches this
machine; every other file is listed with the reason it was ignored.  It
never raises: a broken cache must not break ``open_stack()``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from uringstack.probe.tune_key import MachineFacts, key_of
from uringstack.probe.tuning import FORMAT_VERSION, SCHEMA, AppliedRecord, TuneDocument, TuneRecord, TuneState
from uringstack.ring.interrupts import with_descriptor


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/uringstack`` (``~/.cache`` when unset or relative, as the XDG spec says):
    where uringstack keeps what it measured (tune results, :mod:`uringstack.probe.punts`)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path(os.path.expanduser("~")) / ".cache"
    return root / "uringstack"


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/uringstack/tune``: the tune results."""
    return cache_root(environ) / "tune"


def write_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write *text* to *path* atomically and durably: a concurrent reader never sees half a
    file, and after a crash *path* holds the old text or the new, never an empty file.

    The temporary file (unique to this call, in *path*'s directory) is written and
    fsynced before the rename, and the directory fsynced after it: a rename that
    reached the disk before the data would leave an empty file (a tuning run's
    minutes of measurement lost).  On failure the temporary file is removed and
    *path* is untouched.  *mode*: the new file's permission bits (the replaced file's, so
    a rewrite keeps them); ``None``: mkstemp's 0600."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # (mkdir's own words named only the first path part in the way, "[Errno 17] File exists")
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of its directory", str(path.parent)) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with_descriptor(os.fspath(path.parent), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, os.fsync)


def entry_path(record: TuneRecord, directory: Path | None = None) -> Path:
    """The cache file of *record*: named after its target kind, device and a hash of the target."""
    dev = record.key.device
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", dev.name or f"dev{dev.devnum}")
    digest = hashlib.sha256(f"{record.kind}\0{record.target}".encode()).hexdigest()[:12]
    return (directory or cache_dir()) / f"{record.kind}-{label}-{digest}.json"


def write_entry(record: TuneRecord, directory: Path | None = None) -> Path:
    """Store *record* atomically (temp file + rename: a concurrent reader never sees half a file)."""
    path = entry_path(record, directory)
    write_atomic(path, TuneDocument.of([record]).model_dump_json(by_alias=True, indent=2))
    return path


def _read_regular(path: Path) -> bytes:
    """The bytes of *path* if it is a regular file; else ``OSError`` (a FIFO named ``*.json``
    in the cache directory made every plan and ``open_stack()`` wait forever in its open)."""
    return with_descriptor(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, _read_if_regular)


def _read_if_regular(fd: int) -> bytes:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    with os.fdopen(fd, "rb", closefd=False) as f:
        return f.read()


def read_document(path: Path) -> TuneDocument:
    """Parse a cache file or a ``tune --json`` document.

    Raises :class:`ValueError` with a one-line reason: unreadable, not JSON of
    the expected shape, or written by a newer format version.
    """
    import json

    try:
        raw = json.loads(_read_regular(path))
    except OSError as exc:
        raise ValueError(f"unreadable ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # (nesting too deep is a RecursionError, not a ValueError)
        raise ValueError(f"corrupt (not JSON: {type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ValueError("corrupt (not a JSON object)")
    version = raw.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(f"written by a newer uringstack (format {version}, this one reads up to {FORMAT_VERSION})")
    if raw.get("schema") != SCHEMA or "records" not in raw:
        # (a probe report, a plan, any other JSON object was read as a document of no records:
        # "no measurement", with nothing saying the file was not one, until session 32)
        raise ValueError(f'not a tune document (its "schema" is {raw.get("schema")!r}, not {SCHEMA!r})')
    try:
        doc = TuneDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"corrupt ({where}: {first['msg']})") from None
    newer = [r.format_version for r in doc.records if r.format_version > FORMAT_VERSION]
    if newer:
        raise ValueError(f"written by a newer uringstack (record format {max(newer)})")
    return doc


def _check(record: TuneRecord, facts: MachineFacts, shipped: bool) -> tuple[str, str]:
    """``("", disk)`` when *record* holds here (*disk*: its target's whole disk here); else ``(why not, "")``."""
    if record.best is None:
        return "no successful measurement in it", ""
    try:
        here = key_of(record.target, facts)
    except OSError as exc:
        return f"foreign: {record.target} does not exist here ({exc.strerror})", ""
    except ValueError as exc:  # e.g. a NUL byte: no such path on any machine
        return f"foreign: {record.target} cannot be looked up here ({exc})", ""
    wrong = record.key.mismatches(here, same_device_class=shipped)
    if wrong:
        kind = "foreign" if any(w.startswith("device") for w in wrong) else "stale"
        return f"{kind}: " + "; ".join(wrong), ""
    return "", here.device.name


def _apply(docs: Iterable[tuple[Path, str]], facts: MachineFacts, shipped: bool, state: TuneState) -> None:
    for path, source in docs:
        try:
            _apply_one(path, source, facts, shipped, state)
        except Exception as exc:  # (one bad file must not hide the others: each gets its reason)
            state.ignored.append(f"{path}: unusable: {type(exc).__name__}: {exc}")


def _apply_one(path: Path, source: str, facts: MachineFacts, shipped: bool, state: TuneState) -> None:
    try:
        doc = read_document(path)
    except ValueError as exc:
        state.ignored.append(f"{path}: {exc}")
        return
    for record in doc.records:
        why, disk = _check(record, facts, shipped)
        if why:
            state.ignored.append(f"{path} ({record.target}): {why}")
        else:
            state.records.append(AppliedRecord(source=f"{source}:{path}", record=record, device=disk))


def tune_results_missing(tune_results: str) -> str | None:
    """Why ``core.tune_results`` names no file a stack opened here could read, or None.

    A relative path is taken from the current directory, as the stack does."""
    if tune_results and not Path(tune_results).is_file():
        return f"core.tune_results: {tune_results} is not a file"
    return None


def load_state(
    tune_results: str = "",
    *,
    directory: Path | None = None,
    facts: MachineFacts | None = None,
) -> TuneState:
    """The measurements that hold here: from *tune_results* when given, else the cache.

    Never raises: every problem becomes a line of ``state.ignored``.
    """
    facts = facts or MachineFacts.here()
    state = TuneState()
    try:
        if tune_results:
            path = Path(tune_results)
            state.searched = f"core.tune_results = {tune_results}"
            missing = tune_results_missing(tune_results)
            if missing:
                state.ignored.append(missing)
                return state
            _apply([(path, "core.tune_results")], facts, True, state)
            return state
        directory = directory or cache_dir()
        state.searched = f"cache {directory}"
        files = sorted(directory.glob("*.json")) if directory.is_dir() else []
        _apply(((p, "cache") for p in files), facts, False, state)
    except Exception as exc:  # a cache problem must never break open_stack()
        state.ignored.append(f"tune cache unusable: {type(exc).__name__}: {exc}")
    return state
