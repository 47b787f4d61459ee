"""Frozen configs made of smaller frozen configs, still built and read with flat keywords.

A config such as :class:`~virtime.translation.TranslateConfig` holds its parts (``engine``,
``tiling``, ...) as fields, and lists in ``_FLAT`` which flat names each part owns. Its
``__init__`` runs :func:`nested_init`: ``TranslateConfig(tile_size=256, backend="torch")`` builds
the default parts and sets those fields in them; a part given whole is the base that flat
keywords then change (so ``dataclasses.replace(config, overlap=16)`` works). :func:`flat` makes
the read-only attribute ``config.tile_size`` that reads ``config.tiling.tile_size``;
:func:`flat_views` adds one for every flat name in ``_FLAT`` and gives ``__init__`` the explicit
signature (:func:`keyword_signature`: every flat and own keyword with its default) that
``help()``, ``inspect.signature`` and notebook completion show.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, TypeVar

__all__ = ["flat", "flat_dict", "flat_views", "keyword_signature", "nested_init"]

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
    """Class decorator: the read-only attribute :func:`flat` for every name in ``cls._FLAT``, and
    an ``__init__`` taking those names and the class's own fields as keywords (its signature is
    :func:`keyword_signature`)."""
    for part, names in cls._FLAT.items():
        for name in names:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{name} is both its own and {part}'s")
            setattr(cls, name, flat(part, name))

    def __init__(self: Any, **kwargs: Any) -> None:
        nested_init(self, kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = f"Keywords as listed; see :class:`{cls.__name__}`."
    __init__.__signature__ = keyword_signature(cls)  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def keyword_signature(cls: type) -> inspect.Signature:
    """``(self, *, <flat names of each part>, <own fields>)`` with their defaults and types.

    A flat name's default is its value in the part's default (``TilingConfig().tile_size``), so
    the signature shows what ``cls()`` holds; parts come last, as the base that flat keywords
    change.
    """
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    own = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    for part, names in cls._FLAT.items():  # type: ignore[attr-defined]
        default_part = _default(own[part])
        part_hints = _hints(type(default_part))
        for name in names:
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            default=getattr(default_part, name),
                                            annotation=part_hints.get(name, Any)))
    parts = [own.pop(part) for part in cls._FLAT]  # type: ignore[attr-defined]
    for f in [*own.values(), *parts]:
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=_default(f), annotation=hints.get(f.name, Any)))
    return inspect.Signature(params, return_annotation=None)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types (the modules use ``from __future__ import annotations``)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a type that does not resolve is shown as written
        return {f.name: f.type for f in dataclasses.fields(cls)}


def flat_dict(obj: Any, order: tuple[str, ...]) -> dict[str, Any]:
    """``{name: value}`` for the flat names in ``order`` (parts' values read through)."""
    return {name: getattr(obj, name) for name in order}
