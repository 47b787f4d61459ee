"""Streaming slide features: per-tile partial sums that add up exactly to the whole-slide value.

Metrics (per analysed channel c; T = tissue pixels, p = probability in [0, 1], t = threshold):

* ``density``  = #{x in T : p_c(x) > t} / |T|
* ``mean``     = sum_{x in T} p_c(x) / |T|
* ``entropy``  = -sum_i q_i ln q_i / ln(B), where the canvas is cut into square bins of
  ``bin_um`` µm on a global grid anchored at pixel (0, 0), B = bins holding at least one tissue
  pixel, and q_i = positive pixels in bin i / all positive pixels. 0 when the channel is never
  positive or B <= 1 (nothing to spread over). Bins at the tissue edge count like full bins.
* ``snr``      = (mean p on positives - mean p on negatives) / std p on negatives (population std,
  negatives = tissue pixels with p <= t). NaN when there are no positives, no negatives, or the
  negatives are constant (std below 1e-5 x their RMS for float input; exactly 0 for uint8).
* ``sharpness`` = mean L1 gradient magnitude: sum over 4-neighbour pairs (horizontal and
  vertical) with both pixels in tissue of |p(a) - p(b)|, divided by |T|. The L1 norm of the
  forward-difference gradient is chosen over the Laplacian variance because it is a sum of
  independent pixel *pairs*: pairs inside a tile are summed by the kernel and pairs straddling a
  tile border are summed when both edges are known (:mod:`virtime.features.edges`), so tiles need
  no halo and the tile-wise value is exact; the Laplacian's 3x3 stencil and second moment are
  neither, and it is dominated by pixel noise.
* ``A|B.or_density`` = #{p_A > t or p_B > t} / |T|; ``A&B.and_density`` = #{both} / |T|.

By default every protein channel and both background channels (TRITC, Cy5) get the per-channel
metrics: the background channels carry no protein, and the statistics test them beside the
proteins as negative controls (:mod:`virtime.stats.controls`). Pair features are computed among
the protein channels only: a pair with a background channel is no marker combination, and the
21 proteins' pairs alone are 420 columns.

Input: uint8 (probability x 255; ``value > 255 t``, so t = 0.5 means value >= 128) or float32
probabilities. For uint8 every partial sum is an integer held exactly in float64, so tile-wise ==
whole-canvas bit for bit; float32 sums agree to rounding (~1e-12 relative).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np

from virtime.channels import BACKGROUND_CHANNELS, CHANNEL_NAMES, PROTEIN_CHANNELS
from virtime.errors import InputDataError, InvalidArgumentError, InvalidMppError, NoTissueWarning
from virtime.features.contexture import ContextureConfig, immune_contexture
from virtime.features.edges import BoundaryLedger
from virtime.features.metrics import N_SUMS, tile_partials

__all__ = ["SlideFeatureAccumulator", "METRICS", "pair_columns"]

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("density", "mean", "entropy", "snr", "sharpness")
_FLOAT_STD_REL = 1e-5


def pair_columns(channels: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """``(A, B, "A|B.or_density", "A&B.and_density")`` for every unordered pair, A before B."""
    return [(a, b, f"{a}|{b}.or_density", f"{a}&{b}.and_density")
            for a, b in itertools.combinations(channels, 2)]


class SlideFeatureAccumulator:
    """Accumulates partial sums tile by tile (or from parallel workers) and returns features.

    Parameters
    ----------
    mpp : float
        Microns per pixel of the probability map; sets the bin side ``round(bin_um / mpp)`` px.
    bin_um : float
        Side of the spatial bins of the entropy and contexture metrics, µm.
    threshold : float
        Positivity threshold on the probability, in (0, 1).
    channels : sequence of str, optional
        Names of the C input channels in order (default: the 23 GigaTIME channels).
    analyse : sequence of str, optional
        Channels to compute the per-channel features for (default: the protein and background
        channels among ``channels``, in their order).
    pairs : sequence of str, optional
        Channels among ``analyse`` whose pair features (``A|B.or_density``, ``A&B.and_density``)
        are computed (default: every analysed channel but the background ones).
    contexture : ContextureConfig, optional
        Cut-offs of the immune contexture features (default ``ContextureConfig()``).

    Notes
    -----
    Tiles must not overlap; they may arrive in any order and have any size. ``merge`` combines
    accumulators fed by parallel workers (pairs across their tile borders are completed then).
    """

    def __init__(
        self,
        mpp: float,
        bin_um: float = 64.0,
        threshold: float = 0.5,
        channels: Sequence[str] | None = None,
        analyse: Sequence[str] | None = None,
        contexture: ContextureConfig | None = None,
        pairs: Sequence[str] | None = None,
    ) -> None:
        try:
            mpp = float(mpp)
        except (TypeError, ValueError):
            mpp = math.nan
        if not (math.isfinite(mpp) and 0 < mpp < 100):
            raise InvalidMppError(f"features: mpp must be in (0, 100) µm/px, got {mpp!r}")
        if not (math.isfinite(bin_um) and bin_um > 0):
            raise InvalidArgumentError(f"features: bin_um must be > 0, got {bin_um!r}")
        if not (0.0 < threshold < 1.0):
            raise InvalidArgumentError(f"features: threshold must be in (0, 1), got {threshold!r}")
        self.mpp = float(mpp)
        self.bin_um = float(bin_um)
        self.threshold = float(threshold)
        self.bin_px = max(1, round(bin_um / mpp))
        self.channels = tuple(channels) if channels is not None else CHANNEL_NAMES
        if analyse is None:
            analyse = [c for c in self.channels
                       if c in PROTEIN_CHANNELS or c in BACKGROUND_CHANNELS]
        missing = [c for c in analyse if c not in self.channels]
        if missing or not analyse or len(analyse) > 32:
            raise InvalidArgumentError(
                f"features: analysed channels must be 1..32 of the input channels; bad: {missing}"
            )
        self.analyse = tuple(analyse)
        if pairs is None:
            pairs = [c for c in self.analyse if c not in BACKGROUND_CHANNELS]
        outside = [c for c in pairs if c not in self.analyse]
        if outside:
            raise InvalidArgumentError(
                f"features: pair channels must be analysed channels; not analysed: {outside}")
        self.pairs = tuple(c for c in self.analyse if c in set(pairs))  # in analysed order
        self.contexture = contexture if contexture is not None else ContextureConfig()
        self._idx = np.array([self.channels.index(c) for c in self.analyse], dtype=np.int64)
        K = len(self.analyse)
        self._scale: float | None = None  # 255 for uint8 input, 1 for float32
        self.n_tissue = 0
        self.n_tiles = 0
        self._sums = np.zeros((N_SUMS, K))
        self._cooc = np.zeros((K, K))
        self._bins = np.zeros((0, 0, K + 1))
        self._by0 = 0
        self._bx0 = 0
        self._ledger = BoundaryLedger(K)

    # ----------------------------------------------------------------------------- input
    def _check_dtype(self, prob: np.ndarray) -> float:
        if prob.dtype == np.uint8:
            scale = 255.0
        elif prob.dtype == np.float32 or prob.dtype == np.float64:
            scale = 1.0
        else:
            raise InputDataError(
                f"features: probability map must be uint8 (x255) or float32, got {prob.dtype}"
            )
        if self._scale is not None and self._scale != scale:
            raise InputDataError("features: tiles mix uint8 and float probability maps")
        return scale

    def add_tile(self, prob: np.ndarray, tissue: np.ndarray, y0: int, x0: int) -> None:
        """Adds one tile.

        Parameters
        ----------
        prob : ndarray (C, h, w), uint8 or float32
            Probability map of the tile, channels as in ``channels``.
        tissue : ndarray (h, w), bool
            Tissue mask of the tile.
        y0, x0 : int
            Canvas-pixel offset of the tile's top-left pixel (aligns the bins to a global grid).
        """
        prob = np.asarray(prob)
        tissue = np.asarray(tissue)
        if prob.ndim != 3 or prob.shape[0] != len(self.channels):
            raise InputDataError(
                f"features: tile must be (C={len(self.channels)}, h, w), got shape {prob.shape}"
            )
        if tissue.shape != prob.shape[1:]:
            raise InputDataError(
                f"features: tissue mask shape {tissue.shape} != tile shape {prob.shape[1:]}"
            )
        if y0 < 0 or x0 < 0:
            raise InvalidArgumentError(f"features: negative tile offset ({y0}, {x0})")
        scale = self._check_dtype(prob)
        if prob.dtype == np.float64:
            prob = prob.astype(np.float32)
        prob = np.ascontiguousarray(prob)
        tissue = np.ascontiguousarray(tissue != 0)
        part, has_nan = tile_partials(
            prob, tissue, self._idx, self.threshold * scale, int(y0), int(x0), self.bin_px
        )
        if has_nan:
            raise InputDataError(
                f"features: NaN in the probability map (tile at y={y0}, x={x0})"
            )
        self._scale = scale
        self.n_tiles += 1
        self.n_tissue += part.n_tissue
        self._sums += part.sums
        self._cooc += part.cooc
        self._add_bins(part.bins, part.by0, part.bx0)
        self._sums[-1] += self._ledger.add_tile(prob, self._idx, tissue, int(y0), int(x0))

    def _add_bins(self, bins: np.ndarray, by0: int, bx0: int) -> None:
        if bins.size == 0:
            return
        nby, nbx = bins.shape[:2]
        cur = self._bins
        if cur.size == 0:
            self._bins, self._by0, self._bx0 = bins.copy(), by0, bx0
            return
        lo_y, lo_x = min(self._by0, by0), min(self._bx0, bx0)
        hi_y = max(self._by0 + cur.shape[0], by0 + nby)
        hi_x = max(self._bx0 + cur.shape[1], bx0 + nbx)
        if lo_y < self._by0 or lo_x < self._bx0 or hi_y > self._by0 + cur.shape[0] \
                or hi_x > self._bx0 + cur.shape[1]:
            # grow geometrically so raster streaming does not copy on every tile row
            gy = max(hi_y - lo_y, int(cur.shape[0] * 1.5)) if hi_y > self._by0 + cur.shape[0] \
                else hi_y - lo_y
            gx = max(hi_x - lo_x, int(cur.shape[1] * 1.5)) if hi_x > self._bx0 + cur.shape[1] \
                else hi_x - lo_x
            grown = np.zeros((gy, gx, cur.shape[2]))
            oy, ox = self._by0 - lo_y, self._bx0 - lo_x
            grown[oy:oy + cur.shape[0], ox:ox + cur.shape[1]] = cur
            self._bins, self._by0, self._bx0 = grown, lo_y, lo_x
        oy, ox = by0 - self._by0, bx0 - self._bx0
        self._bins[oy:oy + nby, ox:ox + nbx] += bins

    def merge(self, other: SlideFeatureAccumulator) -> SlideFeatureAccumulator:
        """Adds the partial sums of ``other`` (same settings, disjoint tiles); returns self."""
        same = (self.mpp, self.bin_px, self.threshold, self.channels, self.analyse,
                self.pairs) == (other.mpp, other.bin_px, other.threshold, other.channels,
                                other.analyse, other.pairs)
        if not same:
            raise InvalidArgumentError("features: cannot merge accumulators with other settings")
        if other._scale is not None:
            if self._scale is not None and self._scale != other._scale:
                raise InputDataError("features: merging uint8 and float partial sums")
            self._scale = other._scale
        self.n_tiles += other.n_tiles
        self.n_tissue += other.n_tissue
        self._sums += other._sums
        self._cooc += other._cooc
        self._add_bins(other._bins, other._by0, other._bx0)
        self._sums[-1] += self._ledger.absorb(other._ledger)
        return self

    # ----------------------------------------------------------------------------- output
    @property
    def bins(self) -> np.ndarray:
        """Binned counts (nby, nbx, K + 1): positives per analysed channel, then tissue pixels."""
        return self._bins

    def result(self) -> dict[str, float | str]:
        """The slide's features: ``"<channel>.<metric>"`` per analysed channel, the pair
        densities of the ``pairs`` channels, contexture.

        With no tissue every numeric feature is NaN and a RuntimeWarning is issued.
        """
        n = self.n_tissue
        scale = self._scale or 1.0
        out: dict[str, float | str] = {"tissue.pixels": float(n),
                                       "tissue.area_mm2": n * self.mpp ** 2 / 1e6}
        if n == 0:
            warnings.warn("features: no tissue pixels; every feature is NaN", NoTissueWarning,
                          stacklevel=2)
        pos, s, _, _, _, tv = self._sums
        entropy = self._entropies()
        for k, name in enumerate(self.analyse):
            if n == 0:
                for m in METRICS:
                    out[f"{name}.{m}"] = math.nan
                continue
            out[f"{name}.density"] = pos[k] / n
            out[f"{name}.mean"] = s[k] / scale / n
            out[f"{name}.entropy"] = entropy[k]
            out[f"{name}.snr"] = self._snr(k, n)
            out[f"{name}.sharpness"] = tv[k] / scale / n
        paired = [self.analyse.index(c) for c in self.pairs]  # ascending: cooc's upper triangle
        for i, j in itertools.combinations(paired, 2):
            a, b = self.analyse[i], self.analyse[j]
            both = self._cooc[i, j]
            out[f"{a}|{b}.or_density"] = (pos[i] + pos[j] - both) / n if n else math.nan
            out[f"{a}&{b}.and_density"] = both / n if n else math.nan
        ctx = immune_contexture(self._bins, self.analyse, self.contexture)
        out.update(ctx)
        return out

    def _snr(self, k: int, n: int) -> float:
        pos, s, sp, sq, sqp, _ = self._sums[:, k]
        npos, nneg = int(pos), n - int(pos)
        if npos == 0 or nneg == 0:
            return math.nan
        if self._scale == 255.0:  # exact integer arithmetic
            S, Q = int(s - sp), int(sq - sqp)
            var_num = nneg * Q - S * S  # = nneg^2 * var
            if var_num <= 0:
                return math.nan
            std = math.sqrt(var_num) / nneg
            mu_n = S / nneg
        else:
            mu_n = (s - sp) / nneg
            ms = (sq - sqp) / nneg
            var = ms - mu_n * mu_n
            if var <= (_FLOAT_STD_REL ** 2) * ms:
                return math.nan
            std = math.sqrt(var)
        return (sp / npos - mu_n) / std

    def _entropies(self) -> np.ndarray:
        K = len(self.analyse)
        if self._bins.size == 0:
            return np.zeros(K)
        flat = self._bins.reshape(-1, K + 1)
        flat = flat[flat[:, -1] > 0]
        nb = flat.shape[0]
        ent = np.zeros(K)
        if nb <= 1:
            return ent
        for k in range(K):
            c = flat[:, k]
            tot = c.sum()
            if tot <= 0:
                continue
            q = c[c > 0] / tot
            ent[k] = float(-(q * np.log(q)).sum() / math.log(nb))
        return ent
