"""A raising signal anywhere in opening a namespace's char device leaks no descriptor and
closes none twice (the passthrough backend's side of tests/stack/test_open_signals.py).

The passthrough backend opens the char device itself (``open_char_device``), and with
``adopt_fd`` ignores the duplicate ``Stack.open`` made.  Until session 43 its descriptor
was held in a plain local: a signal right after the open leaked it.  Now it is stored in
``target.descriptors`` as it is made, and ``Stack.open`` hands it over or closes it.
Runs inside ../shared/nvme-vm with the rest of tests/nvme (scripts/test-nvme.sh).
"""

from __future__ import annotations

import os

import pytest

from tests.descriptors import sweep_descriptors
from tests.signal_points import code_of
from uringstack import open_stack, reaper
from uringstack.plugins.nvme_passthrough.backend import PassthroughBackend, PassthroughFileIO
from uringstack.plugins.nvme_passthrough.device import open_char_device
from uringstack.ring.interrupts import open_stored
from uringstack.stack import Stack, _close_unopened, _hand_over
from uringstack.stack.handle import FileHandle
from uringstack.stack.targets import close_opened

from .conftest import NG

pytestmark = pytest.mark.nvme


@pytest.mark.timeout(600)
@pytest.mark.parametrize("adopt", [False, True], ids=["path", "adopt_fd"])
def test_a_signal_anywhere_in_a_passthrough_open_closes_each_descriptor_once(passthrough: None, adopt: bool) -> None:
    chosen = code_of(
        Stack.open, Stack._open_target, FileHandle._close_when_dropped, reaper.watch, PassthroughBackend.open,
        PassthroughFileIO.__init__, open_char_device, open_stored, close_opened, _hand_over, _close_unopened,
    )  # fmt: skip
    with open_stack(overrides={"core.cores": [0]}) as stack:
        own = os.open(NG, os.O_RDONLY) if adopt else -1
        options = {"adopt_fd": own} if adopt else {}
        try:

            def caller_keeps_own(where: str | None) -> None:
                if adopt:
                    os.fstat(own)  # the caller's own descriptor is never the stack's to close

            run = lambda: stack.open(NG, writable=False, **options)  # noqa: E731
            assert sweep_descriptors(chosen, run, NG, after=caller_keeps_own) > 5
        finally:
            if adopt:
                os.close(own)
