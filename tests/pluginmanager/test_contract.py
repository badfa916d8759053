"""The typed plugin contract: exception hierarchy and the buffer-provider registry."""

from __future__ import annotations

from typing import Any

import pytest

from uringstack.config import ConfigError
from uringstack.errors import UringStackError
from uringstack.pluginmanager import PluginError, PluginLoadError
from uringstack.types import PlanError


@pytest.mark.parametrize("cls", [ConfigError, PlanError, PluginError, PluginLoadError])
def test_contract_errors_derive_from_uringstack_error(cls: type[Exception]) -> None:
    # errors.py promises one base for every non-I/O error; `except UringStackError`
    # in an application must catch a bad config, an impossible plan and a broken plugin.
    assert issubclass(cls, UringStackError)


class _Pool:
    def __init__(self, ring: object) -> None:
        self.ring = ring
        self.buffer_size = 4096


class _Ring:
    class params:  # stands in for RingParams
        role = "storage"


def test_buffer_registry_finds_the_pool_of_a_ring() -> None:
    from uringstack.ring.buffers import BufferRegistry

    # Any: stand-ins for a Ring and a BufferPool, which need a kernel ring.
    storage: Any = _Ring()
    other: Any = _Ring()
    reg = BufferRegistry()
    pool: Any = _Pool(storage)
    reg.register("fixedbuf", pool)
    assert reg.for_ring(storage) is pool
    assert reg.for_ring(other) is None
    assert reg.for_ring(None) is None
    with pytest.raises(ValueError, match="already has buffers registered by plugin 'fixedbuf'"):
        reg.register("acme", _Pool(storage))
    with pytest.raises(ValueError, match="already registered a buffer provider"):
        reg.register("fixedbuf", _Pool(other))
    assert reg.unregister("fixedbuf") is pool
    assert reg.for_ring(storage) is None
