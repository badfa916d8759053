"""The root model: :class:`StackConfig` and :func:`build_config_model`.

The root model is built with :func:`pydantic.create_model` *after* the
plugins are loaded, so one validation names ``sqpoll.idle_ms`` precisely and
one JSON schema covers the whole file.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from uringstack.types import PluginError, PluginSection

from .core import CoreConfig

ENV_PREFIX = "URINGSTACK_"
NESTED_DELIMITER = "__"
CORE_SECTION = "core"

_SECTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

M = TypeVar("M", bound=BaseModel)


class StackConfig(BaseSettings):
    """The validated configuration: ``core`` plus one attribute per plugin section.

    The class a loaded config really has is built by :func:`build_config_model`
    from the loaded plugins, so plugin sections are typed fields; plugins
    reach their own section with :meth:`section`, which is typed::

        cfg = config.section("sqpoll", SqpollConfig)   # -> SqpollConfig

    Instantiating ``StackConfig`` (or a built model) directly uses only the
    arguments given (no environment, no file): that is what tests want.
    Use :func:`load_config` for the layered sources.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
    )

    core: CoreConfig = Field(default_factory=lambda: CoreConfig(), description="Settings of the stack itself.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the arguments: no environment, dotenv or secrets directory of its own.

        :func:`load_config` reads the file and the environment itself (it
        needs ``core.disabled_plugins`` before this class even exists),
        merges them with the arguments and validates the result strictly;
        the sections it passes in are already validated.
        """
        return (init_settings,)

    def section(self, name: str, model: type[M]) -> M:
        """This config's section *name*, checked to be an instance of *model*.

        Raises :class:`KeyError` when no loaded plugin contributes *name*
        (e.g. the plugin is disabled) and :class:`TypeError` when the section
        has a different model.
        """
        value = self.sections().get(name)
        if value is None:
            raise KeyError(f"no config section {name!r} (known: {', '.join(self.sections())})")
        if not isinstance(value, model):
            raise TypeError(f"config section {name!r} is a {type(value).__name__}, not {model.__name__}")
        return value

    def sections(self) -> dict[str, BaseModel]:
        """Every section by name, ``core`` first."""
        return {name: value for name in type(self).model_fields if isinstance(value := getattr(self, name), BaseModel)}


def build_config_model(sections: list[PluginSection]) -> type[StackConfig]:
    """The root model for *sections*: ``core`` plus one typed field per plugin section.

    Raises :class:`PluginError` for a section name that is reserved, not a
    lower-case identifier, used by two plugins, or whose model cannot be built
    from defaults (every key needs one, so an empty file is valid).
    """
    fields: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for section in sections:
        name, model, plugin = section.name, section.model, section.plugin
        if name == CORE_SECTION or name in owners:
            other = "the core" if name == CORE_SECTION else f"plugin {owners[name]!r}"
            raise PluginError(f"plugin {plugin!r}: config section {name!r} is already used by {other}")
        if not _SECTION_NAME.match(name) or name.startswith("model_") or "__" in name or hasattr(StackConfig, name):
            # ("__" separates section and key in URINGSTACK_<SECTION>__<KEY>: such a section's
            # variables were read as another section's and refused)
            raise PluginError(
                f"plugin {plugin!r}: config section name {name!r} must be a lower-case "
                f"identifier not starting with 'model_', without '__', and not a StackConfig attribute"
            )
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"plugin {plugin!r}: section {name!r} model must be a pydantic model")
        try:
            # pydantic does not validate defaults: checked here, or a default its own field
            # refuses (ge=1 with 0, "lots" for a float) reached the plugin's hooks
            model.model_validate(model().model_dump(warnings=False))
        except ValidationError as exc:
            raise PluginError(
                f"plugin {plugin!r}: section model {model.__name__} needs a default for every field, one "
                f"its field accepts, so an empty file is valid: {exc}"
            ) from exc
        owners[name] = plugin
        doc = (model.__doc__ or "").strip().splitlines()
        fields[name] = (
            model,
            Field(
                default_factory=model,
                description=(doc[0] if doc else f"Settings of the {plugin} plugin.") + f" (plugin: {plugin})",
            ),
        )
    built: type[StackConfig] = create_model("StackConfig", __base__=StackConfig, __module__=__name__, **fields)
    return built
