"""The one progress-bar helper of the package (tqdm), so every long loop looks and behaves alike."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
) -> "tqdm[T]":
    """A tqdm bar writing to stderr; ``enabled=False`` (``--quiet``) silences it.

    Returned object is iterable and has ``update(n)`` and ``set_postfix``; use it as a context
    manager so the bar closes on errors too.
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
        mininterval=0.5,
    )

