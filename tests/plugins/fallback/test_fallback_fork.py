"""A fallback batch's ``wait()`` in a fork() child (session 31).

The pool's threads do not exist in the child, so a future still pending at the
fork is never set there: ``wait()`` blocked for good (found by a probe: the
child hung until killed). An io_uring batch raises ``ForkedChildError`` there;
a fallback batch now does the same, at once."""

from __future__ import annotations

import os
import pathlib
import signal

from uringstack.stack import open_stack


def test_a_batch_waited_for_in_a_fork_child_raises_instead_of_hanging(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1 << 20) * 16)
    with open_stack(overrides={"core.backend": "fallback", "fallback.threads": 1}) as stack, stack.open(path) as h:
        bufs = [bytearray(1 << 20) for _ in range(16)]
        pending = h.start_read_many([i << 20 for i in range(16)], bufs)  # one thread: most still queued
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status, never return into pytest
            code = 3
            try:
                signal.alarm(10)  # (the old behaviour: blocked here until killed)
                pending.wait()
                code = 1
            except Exception as exc:
                code = 0 if type(exc).__name__ == "ForkedChildError" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status), f"the child was killed by signal {os.WTERMSIG(status)} (it hung in wait())"
        assert os.WEXITSTATUS(status) == 0, os.WEXITSTATUS(status)
        assert pending.wait() == [1 << 20] * 16  # the parent's batch is untouched
