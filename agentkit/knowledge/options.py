"""A source's options stated once: its pydantic settings model, taken whole or built from keywords.

`QdrantSource("docs", path="kb")` and `QdrantSource("docs", settings=QdrantSourceConfig(path="kb"))`
are the same source; the keywords are validated by the same model, and its errors name the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentkit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: Validation context key: the caller hands the source a ready embedder object, which a settings
#: model (that names embedders by import path or config) cannot hold, so checks that a dense mode
#: has an embedder are left to the source.
EMBEDDER_GIVEN = "embedder_given"


def settings_from_options(
    model: type[M],
    options: Mapping[str, Any],
    *,
    kind: str,
    name: str,
    context: dict[str, Any] | None = None,
) -> M:
    """`model` validated from keyword `options`; a bad value is a ConfigError naming the source and the key."""
    unknown = [key for key in options if key not in model.model_fields]
    if unknown:
        raise TypeError(
            f"{kind} source {name!r}: unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"the settings are {', '.join(k for k in model.model_fields if k != 'type')}"
        )
    try:
        return model.model_validate(dict(options), context=context)
    except ValidationError as exc:
        reasons = "; ".join(
            ".".join(map(str, e["loc"])) + (": " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(f"{kind} source {name!r}: {reasons}") from None


class SettingsAttributes:
    """Every setting reads as an attribute (`source.index` is `source.settings.index`), for the
    callers that read them; writing one is refused, since the source reads `self.settings` and a
    copy beside it would be silently ignored."""

    settings: BaseModel

    def __getattr__(self, key: str) -> Any:
        settings = self.__dict__.get("settings")
        if settings is not None and key in type(settings).model_fields:
            return getattr(settings, key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        settings = self.__dict__.get("settings")
        if settings is not None and key in type(settings).model_fields and not hasattr(type(self), key):
            raise AttributeError(
                f"{key} is a setting of {type(self).__name__}; make the source with it, or replace the "
                f"settings: source.settings = source.settings.model_copy(update={{{key!r}: ...}})"
            )
        super().__setattr__(key, value)
