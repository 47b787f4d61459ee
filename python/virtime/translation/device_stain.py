"""Stain normalization of uint8 tiles on the engine's device: torch twins of the C++ normalizers.

On the device path the batcher only reads tiles; a fitted Macenko or Reinhard normalizer is applied
to the uploaded uint8 batch ``(n, H, W, 3)`` here, with torch ops, step for step as the C++ CPU
normalizer does it for each tile (cpp/src/stain_macenko.cpp, stain_reinhard.cpp, color.cpp):

* **Macenko**: per tile, OD ``ln 256 − ln(I + 1)`` (double table, stored as float), tissue = OD
  ≥ β in all channels; the tile's own stain matrix from the unbiased OD covariance (two largest
  eigenvectors, canonical signs), the α / 100−α angle percentiles (numpy's linear definition),
  hematoxylin = larger red component, unit columns, least-squares pseudo-inverse; the tile's
  ``max_percentile`` concentrations; the same fallbacks (too little tissue → reference matrix,
  flat → unchanged, …). The per-pixel step then runs in float32 as ``macenko_apply_od``:
  ``C = inv·OD · scale``, ``OD' = ref·C``, ``I = floor(clip(256 e^{−OD'} − 1) + ½)``.
* **Reinhard**: per tile, l-alpha-beta (double, stored as float), tissue = ‖OD‖ ≥ β, mean and
  population std over tissue in double, gain/shift in float32, back to RGB in double and rounded
  half up; too little tissue or a flat channel passes the tile through.

The statistics run in float64 (like the C++); ``exp``/``log`` of the float32 steps are evaluated in
double and rounded to float32 (what a correctly rounded ``expf``/``logf`` gives), so the result
equals the CPU normalizer's within one grey level (tested on synthetic H&E tiles, CPU tensors).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from virtime.errors import InvalidArgumentError

__all__ = ["DeviceMacenko", "DeviceReinhard", "device_normalizer"]

#: Status codes per tile, as :class:`virtime.stain.StainStatus`.
NORMALIZED, FALLBACK_MATRIX, PASSED_THROUGH = 0, 1, 2
_MIN_MAX_CONC = 1e-3  # kMinMaxConc in stain_macenko.cpp
#: Pixels per chunk of tiles (bounds the float64 temporaries: ~100 MB per (pixels, 3) tensor).
_CHUNK_PIXELS = 1 << 22


def _od_table_f64() -> np.ndarray:
    v = np.arange(256, dtype=np.float64)
    return np.log(256.0) - np.log(v + 1.0)


def _od_table_f32() -> np.ndarray:
    # od_from_u8: logf(256) - logf(v + 1) in float32, each log correctly rounded.
    v = np.arange(256, dtype=np.float64)
    return np.float32(np.log(256.0)) - np.log(v + 1.0).astype(np.float32)


def _u8_from_od(od: Any) -> Any:
    """``u8_from_od``: ``floor(clip(256·expf(−od) − 1, 0, 255) + ½)``; NaN → 0."""
    torch = _torch()
    e = torch.exp(-od.double()).float()  # a correctly rounded expf
    v = e.mul_(256.0).sub_(1.0)
    v = torch.nan_to_num_(v, nan=0.0, posinf=255.0, neginf=0.0).clamp_(0.0, 255.0)
    return torch.floor(v.add_(0.5)).to(torch.uint8)


def _torch() -> Any:
    import torch

    return torch


def _percentile(sorted_v: Any, count: Any, q: float) -> Any:
    """numpy.percentile ("linear") of each row's first ``count`` sorted values (``percentile_linear``)."""
    torch = _torch()
    p = sorted_v.shape[1]
    rank = (count - 1).clamp(min=0).double() * (q / 100.0)
    lo = torch.floor(rank).long().clamp_(0, p - 1)
    frac = rank - lo.double()
    a = sorted_v.gather(1, lo[:, None])[:, 0]
    b = sorted_v.gather(1, (lo + 1).clamp(max=p - 1)[:, None])[:, 0]
    return torch.where((frac > 0) & (lo + 1 < count), a + (b - a) * frac, a)


def _chunks(n: int, pixels: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_PIXELS // max(pixels, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


class _DeviceNormalizer:
    name = ""

    def __init__(self, device: Any) -> None:
        torch = _torch()
        self.device = torch.device(device)
        self._od64 = torch.from_numpy(_od_table_f64()).to(self.device)

    def __call__(self, u8: Any) -> tuple[Any, Any]:
        """Normalized copy of uint8 tiles ``(n, H, W, 3)`` and the ``(n,)`` status codes."""
        torch = _torch()
        if u8.dtype != torch.uint8 or u8.ndim != 4 or u8.shape[-1] != 3:
            raise InvalidArgumentError(f"tiles must be uint8 (n, H, W, 3), got {u8.dtype} "
                                       f"{tuple(u8.shape)}")
        n, h, w, _ = u8.shape
        out = torch.empty_like(u8)
        status = torch.empty(n, dtype=torch.int64, device=u8.device)
        with torch.inference_mode():
            for a, b in _chunks(n, h * w):
                px = u8[a:b].reshape(b - a, h * w, 3)
                res, st = self._normalize(px)
                out[a:b] = res.view(b - a, h, w, 3)
                status[a:b] = st
        return out, status


class DeviceMacenko(_DeviceNormalizer):
    """Torch twin of a fitted :class:`virtime.stain.MacenkoNormalizer` (its parameters and reference).

    Parameters
    ----------
    normalizer
        The fitted host normalizer (read once: refit means a new twin).
    device
        A torch device.
    """

    name = "macenko"

    def __init__(self, normalizer: Any, device: Any = "cpu") -> None:
        super().__init__(device)
        torch = _torch()
        p = normalizer._params()
        self.beta, self.alpha = float(p["beta"]), float(p["alpha"])
        self.max_percentile = float(p["max_percentile"])
        self.min_tissue, self.min_fallback = int(p["min_tissue"]), int(p["min_tissue_fallback"])
        ref, ref_max = (np.asarray(x, np.float64) for x in normalizer._reference())
        inv = _pinv_3x2(ref.reshape(3, 2))
        if inv is None:
            raise InvalidArgumentError("Macenko reference stain vectors are zero or parallel")
        dev = self.device
        self._ref = torch.from_numpy(ref.reshape(3, 2).copy()).to(dev)
        self._ref32 = self._ref.float()
        self._ref_inv = torch.from_numpy(inv).to(dev)
        self._ref_max = torch.from_numpy(ref_max.reshape(2).copy()).to(dev)
        self._od32 = torch.from_numpy(_od_table_f32()).to(dev)

    def _max_conc(self, od: Any, tissue: Any, count: Any, inv: Any) -> Any:
        """``tissue_max_conc``: the max_percentile of each stain's least-squares concentration."""
        torch = _torch()
        r, g, b = od[..., 0], od[..., 1], od[..., 2]
        out = []
        for k in range(2):
            c = inv[:, k, 0, None] * r + inv[:, k, 1, None] * g + inv[:, k, 2, None] * b
            c = torch.where(tissue, c, torch.inf)
            out.append(_percentile(torch.sort(c, dim=1).values, count, self.max_percentile))
        return torch.stack(out, dim=1)

    def _normalize(self, px: Any) -> tuple[Any, Any]:
        torch = _torch()
        n = px.shape[0]
        idx = px.long()
        od64 = self._od64[idx]  # (n, P, 3)
        tissue = (od64 >= self.beta).all(dim=2)
        od = od64.float().double()  # the C++ keeps tissue OD as float
        del od64
        count = tissue.sum(dim=1)
        valid = count >= max(self.min_tissue, 3)
        m = tissue[..., None].double()
        cnt = count.clamp(min=1).double()
        mean = (od * m).sum(dim=1) / cnt[:, None]
        d = (od - mean[:, None, :]) * m
        cov = torch.einsum("npi,npj->nij", d, d) / (count - 1).clamp(min=1).double()[:, None, None]
        del d
        eye = torch.eye(3, dtype=torch.float64, device=px.device).expand(n, 3, 3)
        cov = torch.where(valid[:, None, None], cov, eye)
        w, v = torch.linalg.eigh(cov)  # ascending
        flat = ~(torch.isfinite(w).all(1) & torch.isfinite(v).all(2).all(1) & (w[:, 2] > 1e-12))
        e1, e2 = v[:, :, 2], v[:, :, 1]
        e1 = torch.where((e1.sum(1) < 0)[:, None], -e1, e1)
        e2 = torch.where((e2.sum(1) < 0)[:, None], -e2, e2)
        phi = torch.atan2(_dot(od, e2), _dot(od, e1))
        phi = torch.where(tissue, phi, torch.inf)
        srt = torch.sort(phi, dim=1).values
        del phi
        a_lo = _percentile(srt, count, self.alpha)
        a_hi = _percentile(srt, count, 100.0 - self.alpha)
        del srt
        v_lo = e1 * torch.cos(a_lo)[:, None] + e2 * torch.sin(a_lo)[:, None]
        v_hi = e1 * torch.cos(a_hi)[:, None] + e2 * torch.sin(a_hi)[:, None]
        h_first = (v_lo[:, 0] >= v_hi[:, 0])[:, None]
        cols = [torch.where(h_first, v_lo, v_hi), torch.where(h_first, v_hi, v_lo)]
        mat = []
        for s in cols:
            norm = torch.sqrt(s[:, 0] * s[:, 0] + s[:, 1] * s[:, 1] + s[:, 2] * s[:, 2])
            sign = torch.where(s[:, 0] + s[:, 1] + s[:, 2] < 0, -1.0, 1.0).double()
            unit = (sign[:, None] * s) / norm[:, None]
            mat.append(torch.where((norm > 0)[:, None], unit, torch.zeros_like(unit)))
        mat_t = torch.stack(mat, dim=2)  # (n, 3, 2)
        inv, inv_ok = _pinv_3x2_t(mat_t)
        inv_ok &= torch.isfinite(mat_t).all(2).all(1)
        mc = self._max_conc(od, tissue, count, inv)
        mc_ok = (mc > _MIN_MAX_CONC).all(1) & torch.isfinite(mc).all(1)
        own = valid & ~flat & inv_ok & mc_ok
        ref_inv = self._ref_inv.expand(n, 2, 3)
        mc_ref = self._max_conc(od, tissue, count, ref_inv)
        ref_ok = (mc_ref > _MIN_MAX_CONC).all(1) & torch.isfinite(mc_ref).all(1)
        fallback = ~own & ~(valid & flat) & (count >= self.min_fallback) & ref_ok
        # torch.where, not masked assignment: no host synchronization on a GPU.
        status = torch.where(own, NORMALIZED, torch.where(fallback, FALLBACK_MATRIX,
                                                          PASSED_THROUGH)).to(torch.int64)
        use_inv = torch.where(own[:, None, None], inv, ref_inv)
        use_mc = torch.where(own[:, None], mc, mc_ref)
        inv32 = use_inv.float()
        scale32 = (self._ref_max[None, :] / use_mc).float()
        # macenko_apply_od, float32, in the C++'s order of operations.
        o = self._od32[idx]
        o0, o1, o2 = o[..., 0], o[..., 1], o[..., 2]
        c = [(inv32[:, k, 0, None] * o0 + inv32[:, k, 1, None] * o1 + inv32[:, k, 2, None] * o2)
             * scale32[:, k, None] for k in range(2)]
        r = self._ref32
        out = torch.stack([_u8_from_od(r[i, 0] * c[0] + r[i, 1] * c[1]) for i in range(3)], dim=2)
        keep = (status == PASSED_THROUGH)[:, None, None]
        return torch.where(keep, px, out), status


def _dot(od: Any, e: Any) -> Any:
    """``r·e0 + g·e1 + b·e2`` per pixel, in the C++'s order."""
    return od[..., 0] * e[:, 0, None] + od[..., 1] * e[:, 1, None] + od[..., 2] * e[:, 2, None]


def _pinv_3x2(m: np.ndarray) -> np.ndarray | None:
    """``pseudo_inverse_3x2`` (row-major (3, 2) in, (2, 3) out) or None when parallel."""
    g00 = m[0, 0] * m[0, 0] + m[1, 0] * m[1, 0] + m[2, 0] * m[2, 0]
    g01 = m[0, 0] * m[0, 1] + m[1, 0] * m[1, 1] + m[2, 0] * m[2, 1]
    g11 = m[0, 1] * m[0, 1] + m[1, 1] * m[1, 1] + m[2, 1] * m[2, 1]
    det = g00 * g11 - g01 * g01
    if not (g00 > 0 and g11 > 0 and det > 1e-8 * g00 * g11 and math.isfinite(det)):
        return None
    i00, i01, i11 = g11 / det, -g01 / det, g00 / det
    return np.array([[i00 * m[c, 0] + i01 * m[c, 1] for c in range(3)],
                     [i01 * m[c, 0] + i11 * m[c, 1] for c in range(3)]], dtype=np.float64)


def _pinv_3x2_t(m: Any) -> tuple[Any, Any]:
    """Batched ``pseudo_inverse_3x2`` of ``(n, 3, 2)``: ``(n, 2, 3)`` and whether it exists."""
    torch = _torch()
    a, b = m[:, :, 0], m[:, :, 1]
    g00 = a[:, 0] * a[:, 0] + a[:, 1] * a[:, 1] + a[:, 2] * a[:, 2]
    g01 = a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]
    g11 = b[:, 0] * b[:, 0] + b[:, 1] * b[:, 1] + b[:, 2] * b[:, 2]
    det = g00 * g11 - g01 * g01
    ok = (g00 > 0) & (g11 > 0) & (det > 1e-8 * g00 * g11) & torch.isfinite(det)
    safe = torch.where(ok, det, torch.ones_like(det))
    i00, i01, i11 = g11 / safe, -g01 / safe, g00 / safe
    inv = torch.stack([i00[:, None] * a + i01[:, None] * b, i01[:, None] * a + i11[:, None] * b],
                      dim=1)
    return inv, ok


# Reinhard's RGB -> LMS matrix and its exact inverse, as cpp/src/color.cpp computes them.
_RGB_TO_LMS = np.array([0.3811, 0.5783, 0.0402, 0.1967, 0.7244, 0.0782, 0.0241, 0.1288, 0.8444])


def _lms_to_rgb() -> np.ndarray:
    m = _RGB_TO_LMS
    r = np.array([m[4] * m[8] - m[5] * m[7], m[2] * m[7] - m[1] * m[8], m[1] * m[5] - m[2] * m[4],
                  m[5] * m[6] - m[3] * m[8], m[0] * m[8] - m[2] * m[6], m[2] * m[3] - m[0] * m[5],
                  m[3] * m[7] - m[4] * m[6], m[1] * m[6] - m[0] * m[7], m[0] * m[4] - m[1] * m[3]])
    det = m[0] * r[0] + m[1] * r[3] + m[2] * r[6]
    return r / det


class DeviceReinhard(_DeviceNormalizer):
    """Torch twin of a fitted :class:`virtime.stain.ReinhardNormalizer`.

    Parameters
    ----------
    normalizer
        The fitted host normalizer (its parameters and reference mean/std are read once).
    device
        A torch device.
    """

    name = "reinhard"

    def __init__(self, normalizer: Any, device: Any = "cpu") -> None:
        super().__init__(device)
        p = normalizer._params()
        self.beta, self.min_tissue, self.min_std = (float(p["beta"]), int(p["min_tissue"]),
                                                    float(p["min_std"]))
        mean, std = (np.asarray(x, np.float64).reshape(3) for x in normalizer._reference())
        self._mean = _torch().from_numpy(mean.copy()).to(self.device)
        self._std = _torch().from_numpy(std.copy()).to(self.device)
        self._fwd = [float(x) for x in _RGB_TO_LMS]
        self._inv = [float(x) for x in _lms_to_rgb()]

    def _normalize(self, px: Any) -> tuple[Any, Any]:
        torch = _torch()
        s3, s6, s2 = math.sqrt(3.0), math.sqrt(6.0), math.sqrt(2.0)
        idx = px.long()
        od = self._od64[idx]
        b2 = self.beta * self.beta
        tissue = (od[..., 0] * od[..., 0] + od[..., 1] * od[..., 1] + od[..., 2] * od[..., 2]) >= b2
        del od
        # rgb_to_lab_reinhard: double, stored as float.
        c = (px.double() + 1.0) / 256.0
        m = self._fwd
        lg = [torch.log10(m[3 * r] * c[..., 0] + m[3 * r + 1] * c[..., 1] + m[3 * r + 2] * c[..., 2])
              for r in range(3)]
        del c
        lab = torch.stack([((lg[0] + lg[1] + lg[2]) / s3).float(),
                           ((lg[0] + lg[1] - 2.0 * lg[2]) / s6).float(),
                           ((lg[0] - lg[1]) / s2).float()], dim=2)
        del lg
        count = tissue.sum(dim=1)
        mask = tissue[..., None].double()
        cnt = count.clamp(min=1).double()[:, None]
        mean = (lab.double() * mask).sum(dim=1) / cnt
        dev = (lab.double() - mean[:, None, :]) * mask
        std = torch.sqrt((dev * dev).sum(dim=1) / cnt)
        del dev, mask
        ok = (count >= self.min_tissue) & (std >= self.min_std).all(dim=1)
        safe = torch.where(ok[:, None], std, torch.ones_like(std))
        ratio = self._std[None, :] / safe
        gain = ratio.float()
        shift = (self._mean[None, :] - mean * ratio).float()
        t = lab * gain[:, None, :] + shift[:, None, :]  # float32: p * gain + shift
        del lab
        # lab_reinhard_to_rgb: double, clipped, rounded half up.
        l, a, b = t[..., 0].double() / s3, t[..., 1].double() / s6, t[..., 2].double() / s2
        lms = [torch.pow(10.0, l + a + b), torch.pow(10.0, l + a - b), torch.pow(10.0, l - 2.0 * a)]
        mi = self._inv
        chans = []
        for r in range(3):
            v = 256.0 * (mi[3 * r] * lms[0] + mi[3 * r + 1] * lms[1] + mi[3 * r + 2] * lms[2]) - 1.0
            v = torch.nan_to_num_(v, nan=0.0, posinf=255.0, neginf=0.0).clamp_(0.0, 255.0)
            chans.append(torch.floor(v + 0.5).to(torch.uint8))
        out = torch.stack(chans, dim=2)
        status = torch.where(ok, NORMALIZED, PASSED_THROUGH).to(torch.int64)
        return torch.where(ok[:, None, None], out, px), status


def device_normalizer(normalizer: Any, device: Any) -> _DeviceNormalizer | None:
    """The device twin of a fitted host normalizer (None for none / identity).

    Raises :class:`~virtime.errors.InvalidArgumentError` for a normalizer without a twin.
    """
    if normalizer is None or getattr(normalizer, "core", None) is None:
        return None
    name = getattr(normalizer, "name", "")
    if name == "macenko":
        return DeviceMacenko(normalizer, device)
    if name == "reinhard":
        return DeviceReinhard(normalizer, device)
    raise InvalidArgumentError(f"no device twin for the stain normalizer {name!r}")
