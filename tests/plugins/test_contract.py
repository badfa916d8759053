"""The typed plugin contract: exception hierarchy and the buffer-provider registry."""

from __future__ import annotations

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
