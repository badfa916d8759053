"""The process-wide stack behind uringstack.open()/FileIO without stack=."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading

from uringstack.fileobj import default_stack as ds
from uringstack.stack import Stack


def test_built_once_for_all_threads() -> None:
    got: list[Stack] = []
    threads = [threading.Thread(target=lambda: got.append(ds.default_stack())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert len(got) == 8 and all(s is got[0] for s in got)


def test_files_left_open_are_flushed_and_the_stack_closed_at_exit(tmp_path: pathlib.Path) -> None:
    """A buffered writer never closed still reaches the file at exit, as the built-in's does."""
    script = f"""
import uringstack
f = uringstack.open({str(tmp_path / 'text')!r}, "w")
f.write("kept" * 100_000)
f.write("tail")  # stays in the buffers until exit
g = uringstack.open({str(tmp_path / 'bin')!r}, "wb")
g.write(b"x" * 3_000_000)
g.write(b"y")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert (tmp_path / "text").read_text() == "kept" * 100_000 + "tail"
    assert (tmp_path / "bin").read_bytes() == b"x" * 3_000_000 + b"y"
