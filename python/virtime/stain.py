"""Stain normalization of H&E tiles: Macenko and Reinhard (C++ core), chosen by name.

Scanners and labs give the same tissue different colours; the model was trained on one
appearance, so tiles are mapped onto a reference before inference. Every normalizer starts fitted
to a built-in H&E reference (Macenko: the widely published stain matrix; Reinhard: the statistics
of a deterministic synthetic H&E image rendered with that matrix), so ``fit`` is optional.

Tiles the method cannot handle (background, a few pixels, a flat colour) are never an error: they
come back unchanged or normalized with the reference stain matrix, and the :class:`StainOutcome`
says which and why. The same C++ objects are shared by the batcher's worker threads
(``normalizer.core``); do not ``fit`` while a batcher is using one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from virtime.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_MAX_CONCENTRATIONS",
    "DEFAULT_STAIN_MATRIX",
    "IdentityNormalizer",
    "MacenkoEstimate",
    "MacenkoNormalizer",
    "MacenkoPlan",
    "ReinhardNormalizer",
    "StainNormalizer",
    "StainOutcome",
    "StainStatus",
    "available_normalizers",
    "get_normalizer",
    "reference_he_image",
]

#: Published Macenko H&E reference: columns hematoxylin, eosin; rows R, G, B optical density.
DEFAULT_STAIN_MATRIX = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
#: Published 99th-percentile concentrations of hematoxylin and eosin for that reference.
DEFAULT_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308])
DEFAULT_STAIN_MATRIX.setflags(write=False)
DEFAULT_MAX_CONCENTRATIONS.setflags(write=False)


class StainStatus(enum.IntEnum):
    """What happened to a tile (mirrors the core's ``StainOutcome::Status``)."""

    NORMALIZED = 0
    FALLBACK_MATRIX = 1
    PASSED_THROUGH = 2


@dataclass(frozen=True)
class StainOutcome:
    """Status of one normalized tile and, unless normalized as asked, the reason."""

    status: StainStatus
    note: str = ""


class StainNormalizer(Protocol):
    """What the pipeline needs from a normalizer (``core`` is None for "none")."""

    name: str
    core: Any

    def fit(self, target: np.ndarray) -> StainNormalizer: ...

    def transform(self, tile: np.ndarray, return_outcome: bool = False) -> Any: ...


def _as_rgb(image: np.ndarray, what: str, allow_batch: bool = False) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidArgumentError(f"{what} must be a uint8 RGB array, got dtype {arr.dtype}")
    ndims = (3, 4) if allow_batch else (3,)
    if arr.ndim not in ndims or arr.shape[-1] != 3:
        shape = "(height, width, 3)" + (" or (n, height, width, 3)" if allow_batch else "")
        raise InvalidArgumentError(f"{what} must have shape {shape}, got {arr.shape}")
    return np.ascontiguousarray(arr)


class _CoreNormalizer:
    """Shared fit/transform plumbing around a ``virtime._core`` normalizer."""

    name = ""
    core: Any

    def fit(self, target: np.ndarray) -> _CoreNormalizer:
        """Fit the reference appearance to ``target`` (uint8 RGB); returns self."""
        self.core.fit(_as_rgb(target, "target"))
        return self

    def transform(self, tile: np.ndarray, return_outcome: bool = False) -> Any:
        """Normalize a uint8 RGB tile ``(h, w, 3)`` or batch ``(n, h, w, 3)``; input untouched.

        Returns the normalized copy, or ``(copy, outcome)`` when ``return_outcome`` (a list of
        outcomes for a batch).
        """
        arr = _as_rgb(tile, "tile", allow_batch=True)
        if arr.ndim == 3:
            out, status, note = self.core.transform(arr)
            return (out, StainOutcome(StainStatus(status), note)) if return_outcome else out
        result = np.empty_like(arr)
        outcomes = []
        for i in range(arr.shape[0]):
            result[i], status, note = self.core.transform(arr[i])
            outcomes.append(StainOutcome(StainStatus(status), note))
        return (result, outcomes) if return_outcome else result

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _reference(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # The core object is not picklable; rebuild it from parameters and the fitted reference.
        return {"params": self._params(), "reference": self._reference()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["params"])  # type: ignore[misc]
        self.set_reference(*state["reference"])  # type: ignore[attr-defined]


@dataclass(frozen=True)
class MacenkoEstimate:
    """A tile's own Macenko estimate (``ok`` False: too little tissue or degenerate)."""

    ok: bool
    note: str
    n_tissue: int
    stain_matrix: np.ndarray
    max_concentrations: np.ndarray


@dataclass(frozen=True)
class MacenkoPlan:
    """The per-pixel step a tile gets: ``C = inv @ OD``, ``C *= scale``, ``OD' = ref @ C``."""

    status: StainStatus
    note: str
    inv: np.ndarray
    scale: np.ndarray
    ref: np.ndarray


class MacenkoNormalizer(_CoreNormalizer):
    """Macenko et al. (2009) stain normalization.

    ``OD = -ln((I + 1) / 256)``; tissue pixels have OD >= ``beta`` in all channels; the stain
    vectors are the ``alpha`` / ``100 - alpha`` angle percentiles in the plane of the two largest
    eigenvectors of the tissue OD covariance (hematoxylin: larger red component); concentrations by
    least squares, rescaled by reference / tile ``max_percentile`` maxima and rebuilt with the
    reference matrix, ``I = 256 exp(-OD) - 1`` clipped to [0, 255]. A tile with fewer than
    ``min_tissue`` tissue pixels (or a degenerate estimate) uses the reference matrix if it has at
    least ``min_tissue_fallback``; otherwise, or when flat, it passes through unchanged.
    """

    name = "macenko"

    def __init__(
        self,
        beta: float = 0.15,
        alpha: float = 1.0,
        max_percentile: float = 99.0,
        min_tissue: int = 500,
        min_tissue_fallback: int = 50,
    ) -> None:
        from virtime import _core

        self.core = _core.MacenkoNormalizer(
            beta=beta, alpha=alpha, max_percentile=max_percentile, min_tissue=min_tissue,
            min_tissue_fallback=min_tissue_fallback,
        )

    @property
    def stain_matrix_(self) -> np.ndarray:
        """Reference stain matrix (3, 2): columns hematoxylin, eosin."""
        return np.asarray(self.core.stain_matrix)

    @property
    def max_concentrations_(self) -> np.ndarray:
        """Reference maximum concentrations (2,)."""
        return np.asarray(self.core.max_concentrations)

    def set_reference(self, stain_matrix: Any, max_conc: Any) -> MacenkoNormalizer:
        """Set the reference directly (e.g. a lab's published matrix); returns self."""
        self.core.set_reference(np.asarray(stain_matrix, float), np.asarray(max_conc, float))
        return self

    def estimate(self, tile: np.ndarray) -> MacenkoEstimate:
        """Estimate a tile's own stain matrix and maxima (what ``fit`` would adopt)."""
        ok, note, n, matrix, maxc = self.core.estimate(_as_rgb(tile, "tile"))
        return MacenkoEstimate(bool(ok), note, int(n), matrix, maxc)

    def plan(self, tile: np.ndarray) -> MacenkoPlan:
        """The per-pixel parameters ``transform`` would apply to this tile."""
        status, note, inv, scale, ref = self.core.plan(_as_rgb(tile, "tile"))
        return MacenkoPlan(StainStatus(status), note, inv, scale, ref)

    def _params(self) -> dict[str, Any]:
        c = self.core
        return {"beta": c.beta, "alpha": c.alpha, "max_percentile": c.max_percentile,
                "min_tissue": c.min_tissue, "min_tissue_fallback": c.min_tissue_fallback}

    def _reference(self) -> tuple[np.ndarray, np.ndarray]:
        return self.stain_matrix_, self.max_concentrations_


class ReinhardNormalizer(_CoreNormalizer):
    """Reinhard et al. (2001) colour transfer in l-alpha-beta space.

    RGB -> ``(I + 1) / 256`` -> LMS (Reinhard's matrix) -> log10 -> l-alpha-beta. Mean and
    population std per channel are taken over tissue pixels (OD norm >= ``beta``) and matched to the
    reference's by one affine map applied to every pixel. Fewer than ``min_tissue`` tissue pixels,
    or a channel spread below ``min_std``, passes the tile through.
    """

    name = "reinhard"

    def __init__(self, beta: float = 0.15, min_tissue: int = 500, min_std: float = 1e-4) -> None:
        from virtime import _core

        self.core = _core.ReinhardNormalizer(beta=beta, min_tissue=min_tissue, min_std=min_std)

    @property
    def lab_mean_(self) -> np.ndarray:
        """Reference l-alpha-beta mean (3,)."""
        return np.asarray(self.core.lab_mean)

    @property
    def lab_std_(self) -> np.ndarray:
        """Reference l-alpha-beta standard deviation (3,)."""
        return np.asarray(self.core.lab_std)

    def set_reference(self, mean: Any, std: Any) -> ReinhardNormalizer:
        """Set the reference l-alpha-beta mean and std directly; returns self."""
        self.core.set_reference(np.asarray(mean, float), np.asarray(std, float))
        return self

    def _params(self) -> dict[str, Any]:
        c = self.core
        return {"beta": c.beta, "min_tissue": c.min_tissue, "min_std": c.min_std}

    def _reference(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lab_mean_, self.lab_std_


class IdentityNormalizer:
    """The "none" normalizer: tiles pass unchanged (``core`` is None, so the batcher skips it)."""

    name = "none"
    core = None

    def fit(self, target: np.ndarray) -> IdentityNormalizer:
        """Nothing to fit; validates the image and returns self."""
        _as_rgb(target, "target")
        return self

    def transform(self, tile: np.ndarray, return_outcome: bool = False) -> Any:
        """A copy of the tile (outcome NORMALIZED: nothing was asked)."""
        arr = _as_rgb(tile, "tile", allow_batch=True).copy()
        if not return_outcome:
            return arr
        outcome = StainOutcome(StainStatus.NORMALIZED)
        return arr, (outcome if arr.ndim == 3 else [outcome] * arr.shape[0])

    def __repr__(self) -> str:
        return "IdentityNormalizer()"


# Name -> factory; the compiled core is imported only when a normalizer is built.
_REGISTRY: dict[str, Callable[..., Any]] = {
    "macenko": MacenkoNormalizer,
    "reinhard": ReinhardNormalizer,
    "none": IdentityNormalizer,
}


def available_normalizers() -> tuple[str, ...]:
    """Names accepted by :func:`get_normalizer`."""
    return tuple(_REGISTRY)


def get_normalizer(name: str, **params: Any) -> Any:
    """Build a normalizer by name ("macenko", "reinhard", "none"), at its default reference."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise InvalidArgumentError(
            f"unknown stain normalizer {name!r}; choose one of {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[key](**params)


def reference_he_image(height: int = 256, width: int = 256) -> np.ndarray:
    """The deterministic synthetic H&E image behind the default Reinhard reference."""
    from virtime import _core

    return _core.render_reference_he(height, width)
