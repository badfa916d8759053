"""The README's Python examples run as written (session 28).

Users copy them first. ``uringstack.aio.open`` after a bare ``import
uringstack`` raised ``AttributeError`` (the subpackage was never imported),
and nothing ran the examples to notice.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import textwrap

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# Where the examples name places a test may not write, and the file they assume exists.
_PLACES = {"/var/lib/myapp/wal": "wal-dir"}


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(_blocks()) >= 3


def test_every_readme_example_runs_in_order(tmp_path: pathlib.Path) -> None:
    """In one interpreter, one block after the other (a later block uses what an
    earlier one imported and wrote), top-level ``async with`` allowed."""
    (tmp_path / "log.txt").write_text("a line\n")
    sources = []
    for block in _blocks():
        for place, here in _PLACES.items():
            block = block.replace(place, str(tmp_path / here))
        sources.append(block)
    runner = textwrap.dedent(
        """
        import ast, asyncio, inspect, sys
        namespace = {"__name__": "__readme__"}
        for index, source in enumerate(BLOCKS):
            code = compile(source, f"README block {index}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                asyncio.run(result)
        print("ran", len(BLOCKS))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", f"BLOCKS = {sources!r}\n{runner}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ran {len(sources)}"
