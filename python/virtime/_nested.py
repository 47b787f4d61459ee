"""Frozen configs made of smaller frozen configs, still built and read with flat keywords.

A config such as :class:`~virtime.translation.TranslateConfig` holds its parts (``engine``,
``tiling``, ...) as fields, and lists in ``_FLAT`` which flat names each part owns. Its
``__init__`` is :func:`nested_init`: ``TranslateConfig(tile_size=256, backend="torch")`` builds
the default parts and sets those fields in them; a part given whole is the base that flat
keywords then change (so ``dataclasses.replace(config, overlap=16)`` works). :func:`flat` makes
the read-only attribute ``config.tile_size`` that reads ``config.tiling.tile_size``;
:func:`flat_views` adds one for every flat name in ``_FLAT``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["flat", "flat_dict", "flat_views", "nested_init"]

_C = TypeVar("_C", bound=type)


def nested_init(obj: Any, kwargs: dict[str, Any]) -> None:
    """Sets every field of the frozen dataclass ``obj`` from ``kwargs`` (flat or nested)."""
    cls = type(obj)
    parts: dict[str, tuple[str, ...]] = cls._FLAT
    owner = {name: part for part, names in parts.items() for name in names}
    routed: dict[str, dict[str, Any]] = {part: {} for part in parts}
    own: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in owner:
            routed[owner[key]][key] = value
        else:
            own[key] = value
    for f in dataclasses.fields(cls):
        if f.name in own:
            value = own.pop(f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}() missing required argument {f.name!r}")
        if f.name in parts and routed[f.name]:
            value = dataclasses.replace(value, **routed[f.name])
        object.__setattr__(obj, f.name, value)
    if own:
        raise TypeError(f"{cls.__name__}() got unexpected keyword argument(s) "
                        f"{', '.join(sorted(own))}")
    post = getattr(obj, "__post_init__", None)
    if callable(post):
        post()


def flat(part: str, name: str) -> property:
    """A read-only attribute reading ``self.<part>.<name>``."""

    def get(self: Any) -> Any:
        return getattr(getattr(self, part), name)

    get.__name__ = name
    return property(get, doc=f"``{part}.{name}`` (read-only; set it with the keyword "
                             f"``{name}=`` or through ``{part}``)")


def flat_views(cls: _C) -> _C:
    """Class decorator: the read-only attribute :func:`flat` for every name in ``cls._FLAT``."""
    for part, names in cls._FLAT.items():
        for name in names:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{name} is both its own and {part}'s")
            setattr(cls, name, flat(part, name))
    return cls


def flat_dict(obj: Any, order: tuple[str, ...]) -> dict[str, Any]:
    """``{name: value}`` for the flat names in ``order`` (parts' values read through)."""
    return {name: getattr(obj, name) for name in order}
