"""Known kernel defects, and which apply to this kernel.

Trying a setup flag live says "the kernel accepts it", not "it is safe": a
kernel can accept a pattern and crash on it.  :data:`KNOWN_DEFECTS` lists the
defects we know, each with the kernels it affects (upstream versions and
Debian package versions), the evidence, and what uringstack does about it:
most rule out a submission pattern (``rules_out``, which plugins ask about and
``[core] accept_kernel_defects`` can override); a few rule out nothing
because every handle works around them (``worked_around`` says how), and are
listed so that a report says what the kernel cannot do safely on its own.  A
kernel the table does not match is judged by what the probe tries live.

Versions: ``uname -r`` of a distribution kernel names its ABI, not its code
(Debian 12's ``6.1.0-57-amd64`` is the package ``6.1.192-3``), so where
``/proc/version`` carries a Debian package version that is what the Debian
ranges are matched against; otherwise the release's leading ``X.Y[.Z]`` is
matched against the upstream ranges.  A Debian kernel whose package version
cannot be read (a malformed or missing version after "Debian" in the build
tag, an unreadable ``/proc/version``) is matched against the upstream ranges
too, never treated as defect-free, and :func:`version_note` says so.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from uringstack.ring.kernel import parse_upstream as parse_upstream

# The submission patterns a defect can rule out (what plugins ask about).
POLLED_PASSTHROUGH = "polled_passthrough"
PASSTHROUGH = "passthrough"
POLLED_FILE_READS = "polled_file_reads"
PATTERNS: dict[str, str] = {
    POLLED_PASSTHROUGH: "polled NVMe passthrough: IORING_OP_URING_CMD on an IORING_SETUP_IOPOLL ring",
    PASSTHROUGH: "NVMe passthrough: IORING_OP_URING_CMD Read/Write commands on /dev/ngXnY",
    POLLED_FILE_READS: "O_DIRECT reads of files on a file system through an IORING_SETUP_IOPOLL ring",
}
# What using a ruled-out pattern can do on an affected kernel (for the refusal message).
EFFECTS: dict[str, str] = {
    POLLED_PASSTHROUGH: "can crash the kernel",
    PASSTHROUGH: "can silently lose writes",
    POLLED_FILE_READS: "can report 0 bytes read for data before the end of the file",
}

LOST_WRITES_ID = "nvme-uring-cmd-lost-writes"
IOWQ_SIGNAL_CANCEL_ID = "iowq-signal-cancel"

_PROC_VERSION = Path("/proc/version")


# --- versions ------------------------------------------------------------------------


def _order(c: str) -> int:
    # dpkg's character order: '~' sorts before everything, even the end of the string;
    # letters before non-letters.
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's comparison of one version part (upstream or revision)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


_DEB_VERSION = re.compile(r"^(?:\d+:)?[0-9][A-Za-z0-9.+~]*(?:-[A-Za-z0-9.+~]+)?$")


def compare_debian(a: str, b: str) -> int:
    """Compare two Debian package versions as dpkg does: <0, 0 or >0.

    Raises ValueError for a string that is not a Debian version.
    """
    for v in (a, b):
        if not _DEB_VERSION.match(v):
            raise ValueError(f"{v!r} is not a Debian package version")

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def _compare_upstream(a: str, b: str) -> int:
    va, vb = parse_upstream(a), parse_upstream(b)
    return (va > vb) - (va < vb)


_DEBIAN_IN_PROC = re.compile(r"\bDebian (\d+\.\d+(?:\.\d+)?[^\s()]*)")


def debian_version_from_proc(text: str) -> str | None:
    """The Debian kernel package version in a ``/proc/version`` line (``6.1.192-3``), or None.

    The text is returned as found; whether it is a Debian version dpkg would
    accept is :func:`debian_version_problem`'s question."""
    # The compiler's version ("gcc-12 (Debian 12.2.0-14)") comes first; the kernel
    # package's is in the build tag after "#N SMP ...", the last one on the line.
    found = _DEBIAN_IN_PROC.findall(text.partition("#")[2])
    return found[-1] if found else None


_DEBIAN_WORD = re.compile(r"\bDebian\b")


def debian_build_tag(text: str) -> bool:
    """True when the build tag of a ``/proc/version`` line (after ``#N``) names a Debian kernel."""
    return bool(_DEBIAN_WORD.search(text.partition("#")[2]))


@dataclass(frozen=True)
class VersionRange:
    """``low <= v < high`` (either bound may be absent), in one version scheme."""

    scheme: str  # "upstream" or "debian"
    low: str | None
    high: str | None

    def contains(self, version: str) -> bool:
        if self.scheme == "debian":
            return (self.low is None or compare_debian(version, self.low) >= 0) and (
                self.high is None or compare_debian(version, self.high) < 0
            )
        v = parse_upstream(version)
        return (self.low is None or v >= parse_upstream(self.low)) and (
            self.high is None or v < parse_upstream(self.high)
        )

    def __str__(self) -> str:
        parts = [f">={self.low}"] if self.low else []
        parts += [f"<{self.high}"] if self.high else []
        return ",".join(parts)


def parse_range(scheme: str, text: str) -> VersionRange:
    """Parse ``">=6.0,<6.5"`` (bounds: ``>=`` inclusive, ``<`` exclusive) in *scheme*.

    Raises ValueError naming the range when it cannot be parsed, so a bad
    table entry fails a test instead of surprising a user at run time.
    """
    if scheme not in ("upstream", "debian"):
        raise ValueError(f"range {text!r}: unknown version scheme {scheme!r}")
    low = high = None
    for part in (p.strip() for p in text.split(",")):
        if part.startswith(">=") and low is None:
            low = part[2:].strip()
        elif part.startswith("<") and not part.startswith("<=") and high is None:
            high = part[1:].strip()
        else:
            raise ValueError(f"range {text!r}: {part!r} is not '>=VERSION' or '<VERSION' (each once)")
    if low is None and high is None:
        raise ValueError(f"range {text!r} has no bound")
    check = compare_debian if scheme == "debian" else _compare_upstream
    try:
        for bound in (low, high):
            if bound is not None:
                check(bound, bound)
        if low is not None and high is not None and check(low, high) >= 0:
            raise ValueError(f"range {text!r} is empty")
    except ValueError as exc:
        raise ValueError(f"{scheme} range {text!r}: {exc}") from None
    return VersionRange(scheme, low, high)


# --- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelDefect:
    """One known kernel defect: which kernels, what uringstack does about it, and why we believe it.

    Exactly one of ``rules_out`` (a key of :data:`PATTERNS`) and ``worked_around``
    (how every handle copes, so nothing is ruled out and nothing can be accepted)
    is set."""

    id: str
    title: str
    rules_out: str
    upstream: tuple[str, ...]
    debian: tuple[str, ...]
    evidence: tuple[str, ...]
    worked_around: str = ""

    def upstream_ranges(self) -> list[VersionRange]:
        return [parse_range("upstream", r) for r in self.upstream]

    def debian_ranges(self) -> list[VersionRange]:
        return [parse_range("debian", r) for r in self.debian]


KNOWN_DEFECTS: tuple[KernelDefect, ...] = (
    KernelDefect(
        id="nvme-uring-cmd-iopoll-gpf",
        title=(
            "general protection fault in bio_poll from nvme_ns_chr_uring_cmd_iopoll: a passthrough "
            "command that is not polled (a Flush, or any command without data) completes by "
            "interrupt and io_uring_cmd_complete_in_task() stores task_work_cb in the union that "
            "the iopoll callback then reads as its bio cookie"
        ),
        rules_out=POLLED_PASSTHROUGH,
        # Polled passthrough came in 585079b6e425 (v6.0); 9408d8a37e6c (v6.5) polls the
        # request only when IORING_URING_CMD_POLLED is set. No 6.1.y backport.
        upstream=(">=6.0,<6.5",),
        # Debian: every 6.1 package (bookworm) and the 6.0 ones; 6.5+ carry the fix.
        debian=(">=6.0,<6.5~",),
        evidence=(
            "upstream fix 9408d8a37e6c 'nvme: improved uring polling' (v6.5-rc1), not backported",
            "defect introduced by 585079b6e425 'nvme: wire up async polling for io passthrough commands' (v6.0-rc1)",
            "reproduced in ../shared/nvme-vm on Debian 6.1.192-3 (6.1.0-57-amd64): see docs/nvme.md",
        ),
    ),
    KernelDefect(
        id=LOST_WRITES_ID,
        title=(
            "NVMe passthrough Writes lost under queue pressure: with more IORING_OP_URING_CMD "
            "commands in flight than the namespace's hardware queue has tags, runs of Write "
            "commands complete with result 0 but their data never reaches the namespace "
            "(the LBAs keep their old contents); the lost runs end where the SQ slots still hold "
            "their commands, as when a command re-issued after -EAGAIN reads its SQE after the "
            "application reused the slot"
        ),
        rules_out=PASSTHROUGH,
        # Measured on 6.12 only (see evidence); the upstream commit is not identified, so
        # the whole 6.12 line is ruled out until a fixed version is measured.
        upstream=(">=6.12,<6.13",),
        debian=(">=6.12,<6.13~",),
        evidence=(
            "reproduced in ../shared/nvme-vm (QEMU NVMe, tag depth 1023) on Debian 6.12.118-1 "
            "(trixie-security, 6.12.118+deb13-amd64) and 6.12.117-1 (trixie): a 10,000-Write "
            "batch lost 1 to 4,375 Writes in 12 of 18 batches, all with result 0; O_DIRECT reads of "
            "/dev/nvme0n1 see the same old data, so the loss is on the device, not in the reads",
            "not seen on Debian 6.1 (bookworm) with the same QEMU and the same batches (0 of 6), nor "
            "on 6.12 with IOSQE_ASYNC or at most 1,000 Writes per batch (1023 tags): see docs/nvme.md and "
            "scripts/kernel-defect-repro.py --lost-writes",
        ),
    ),
    KernelDefect(
        id="iopoll-file-read-eof-zero",
        title=(
            "an O_DIRECT read on an IOPOLL ring that crosses the end of a file and completes without "
            "device I/O (the bytes before the end lie in a hole: ext4 zero-fills them without a bio) "
            "returns 0 instead of the bytes up to the end of the file; a caller takes it for the end "
            "of the file and silently misses them.  The storage ring and preadv(2) return the right "
            "count for the same read"
        ),
        rules_out=POLLED_FILE_READS,
        # Measured on Debian 5.10 and 6.1 (affected) and 6.12 (not); the upstream fix is not
        # identified, so everything from IOPOLL's start (5.1) to the first kernel measured
        # right is ruled out, as for the lost writes above.
        upstream=("<6.12",),
        debian=("<6.12~",),
        evidence=(
            "reproduced in ../shared/nvme-vm (ext4 on the QEMU namespace, poll queues) on Debian 5.10.262-1 "
            "(5.10.0-46-amd64) and 6.1.192-3 (6.1.0-57-amd64): a 4 MiB read at 8 MiB of a 9,666,967-byte "
            "file made by ftruncate returned 0 (want 1,278,359), a 100 KiB read at 9,617,408 returned 0 "
            "(want 49,559); reads inside the file and over written data were right; not on Debian "
            "6.12.118-1 (6.12.118+deb13-amd64): scripts/kernel-defect-repro.py --eof-hole",
            "found by tests/fileobj/test_differential.py (seed 8) on 5.10: readline stopped 49,559 bytes "
            "before the end of a file truncated up past its data",
        ),
    ),
    KernelDefect(
        id=IOWQ_SIGNAL_CANCEL_ID,
        title=(
            "ops cancelled without running when a signal is pending: an op handed to io-wq (fdatasync, "
            "a read of uncached data, most buffered writes) needs a worker that the submitting thread "
            "creates, and a signal pending in that thread fails the creation (-ERESTARTNOINTR); the "
            "retries run from the thread's signal delivery with the signal still pending, and after the "
            "third (WORKER_INIT_LIMIT) the kernel completes every op queued for the worker with "
            "-ECANCELED.  Any signal can do it: Ctrl-C, SIGCHLD, a profiler's timer, a SIGTERM"
        ),
        rules_out="",
        # The bound came with "io_uring/io-wq: limit retrying worker initialisation" (July
        # 2024, in the stable lines too; before it the retries never stopped, so nothing was
        # cancelled); 6.14's "io-wq: backoff when retrying worker creation" spaces them out.
        # The stable versions that took the bound are not identified, so the ranges start
        # where io-wq's retry path exists and are wider than the kernels measured.
        upstream=(">=5.10,<6.14",),
        debian=(">=5.10~,<6.14~",),
        evidence=(
            "measured through FileHandle with fresh threads each signalled without pause, 900 ops a kernel: "
            "264 cancelled on Debian 5.10.262-1, 359 on 6.1.192-3, 12 on 6.12.118-1 (TCG); 0 of 200 on "
            "6.18.44; traced on 6.1 with kprobes: create_io_thread failed 4 times in one signal delivery, "
            "then create_worker_cont called io_acct_cancel_pending_work (docs/api.md)",
            "same symptom: neondatabase/neon issue 11446 (ECANCELED with SIGTERM); their PR 11819 names "
            "the 6.14 fix 'io-wq: backoff when retrying worker creation'",
            "tests/ring/test_iowq_signal_cancel.py runs the storm on every kernel of the VM matrix",
        ),
        worked_around=(
            "every handle runs such an op again (it never ran), up to 3 times, each submitted with the "
            "thread's signals blocked so its worker can be created; a flush that ran and failed is never "
            "issued again; a raw uringstack.ring.Ring reports the kernel's -ECANCELED (docs/api.md)"
        ),
    ),
)

DEFECTS_BY_ID: dict[str, KernelDefect] = {d.id: d for d in KNOWN_DEFECTS}


class DefectFinding(BaseModel):
    """A known defect that applies to the probed kernel (part of the capability report)."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    rules_out: str
    """The pattern it rules out (a key of :data:`PATTERNS`); ``""`` when it is worked around."""
    matched: str
    """Why it applies: which version fell in which range."""
    evidence: list[str]
    worked_around: str = ""
    """How every handle copes with it, when it rules nothing out; ``""`` otherwise."""


@dataclass(frozen=True)
class KernelVersion:
    """The running kernel's release (``uname -r``) and, for Debian, its package version.

    ``debian_tag`` is true when ``/proc/version``'s build tag names a Debian
    kernel (even if no package version could be read from it); ``proc_error``
    says why ``/proc/version`` could not be read, if it could not."""

    release: str
    debian: str | None = None
    debian_tag: bool = False
    proc_error: str = ""


def debian_version_problem(kernel: KernelVersion) -> str | None:
    """Why *kernel*'s Debian package version cannot be used, or None (understood, or not asked for)."""
    if kernel.debian is not None:
        if _DEB_VERSION.match(kernel.debian):
            return None
        return f"the Debian kernel package version {kernel.debian!r} in /proc/version is not understood"
    if kernel.debian_tag:
        return "/proc/version names a Debian kernel but carries no package version that could be read"
    if kernel.proc_error:
        return f"/proc/version could not be read ({kernel.proc_error}), so a Debian package version is unknown"
    return None


def version_note(kernel: KernelVersion) -> str:
    """What the defect matching could not read about *kernel*, and what it used instead ("" if nothing)."""
    problem = debian_version_problem(kernel)
    try:
        major, minor, patch = parse_upstream(kernel.release)
    except ValueError:
        why = f"the release {kernel.release!r} has no leading X.Y[.Z]"
        if problem is not None:
            why = f"{problem}, and {why} either"
        return f"{why}: no known defect can be matched; features are judged by what the probe tried"
    if problem is None:
        return ""
    return (
        f"{problem}: known defects were matched against the upstream version {major}.{minor}.{patch} "
        f"of the release {kernel.release} instead (the Debian ranges were not used)"
    )


def matching_defects(kernel: KernelVersion, table: tuple[KernelDefect, ...] = KNOWN_DEFECTS) -> list[DefectFinding]:
    """The entries of *table* that apply to *kernel*; a release without ``X.Y[.Z]`` matches nothing.

    A Debian kernel is judged by its package version only: its ``uname -r``
    (``6.1.0-57``) says nothing about the stable patches it carries.  When
    that version cannot be read (:func:`debian_version_problem`), the
    upstream ranges are matched against the release instead: a defect whose
    range holds the release's upstream version still applies, and its
    ``matched`` says which version was used and why.
    """
    problem = debian_version_problem(kernel)
    found: list[DefectFinding] = []
    for d in table:
        matched = None
        if kernel.debian is not None and problem is None:
            hit = next((r for r in d.debian_ranges() if r.contains(kernel.debian)), None)
            if hit is not None:
                matched = f"Debian kernel package {kernel.debian} is in {hit}"
        else:
            try:
                parse_upstream(kernel.release)
            except ValueError:
                continue
            hit = next((r for r in d.upstream_ranges() if r.contains(kernel.release)), None)
            if hit is not None:
                matched = f"kernel {kernel.release} is in upstream {hit}"
                if problem is not None:
                    matched += f" ({problem}, so the upstream range was used)"
        if matched is not None:
            found.append(DefectFinding(id=d.id, title=d.title, rules_out=d.rules_out, matched=matched,
                                       evidence=list(d.evidence), worked_around=d.worked_around))  # fmt: skip
    return found


def running_kernel(proc_version: Path = _PROC_VERSION) -> KernelVersion:
    """This machine's kernel: ``uname -r`` plus the Debian version from ``/proc/version``."""
    try:
        text = proc_version.read_text()
    except OSError as exc:
        return KernelVersion(release=platform.release(), proc_error=f"{type(exc).__name__}: {exc.strerror or exc}")
    return KernelVersion(
        release=platform.release(), debian=debian_version_from_proc(text), debian_tag=debian_build_tag(text)
    )


def ruling_out(
    findings: list[DefectFinding], pattern: str, accepted: list[str] | tuple[str, ...] = ()
) -> DefectFinding | None:
    """The first finding that rules out *pattern* and that the user did not accept, or None."""
    return next((f for f in findings if f.rules_out == pattern and f.id not in accepted), None)


def refusal(finding: DefectFinding, what: str) -> str:
    """One sentence: why *what* is refused, and the exact override that would allow it."""
    return (
        f"{what} is ruled out on this kernel by known defect {finding.id} ({finding.matched}: "
        f"{PATTERNS.get(finding.rules_out, finding.rules_out)} "
        f"{EFFECTS.get(finding.rules_out, 'can crash the kernel')}); "
        f'to use it anyway set [core] accept_kernel_defects = ["{finding.id}"]'
    )


def check_known_ids(ids: list[str]) -> list[str]:
    """*ids* unchanged when every one names an entry that rules a pattern out; ValueError
    naming the unknown ones, or the worked-around ones (accepting those would do nothing)."""
    acceptable = sorted(i for i, d in DEFECTS_BY_ID.items() if d.rules_out)
    unknown = [i for i in ids if i not in DEFECTS_BY_ID]
    if unknown:
        raise ValueError(
            f"unknown kernel defect id(s) {', '.join(map(repr, unknown))}; known: " + ", ".join(acceptable)
        )
    handled = [i for i in ids if not DEFECTS_BY_ID[i].rules_out]
    if handled:
        raise ValueError(
            f"kernel defect id(s) {', '.join(map(repr, handled))} rule out nothing (every handle works "
            "around them), so there is nothing to accept; ids that can be accepted: " + ", ".join(acceptable)
        )
    return ids
