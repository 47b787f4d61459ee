"""Synthetic paired tissue: H&E and the matching 23-channel binary mIF targets from one cell layout.

:func:`render_tissue` draws a region of any size from a :class:`Composition` (cells per mm² of
each phenotype inside tumour nests and in stroma, the nest layout, marker probabilities):

1. a tumour-nest mask (given, or a thresholded smooth random field with the requested area
   fraction), vessels with lumens in the stroma, then cell positions per phenotype;
2. every cell becomes a rotated ellipse nucleus; each pixel is owned by the cell whose nucleus
   boundary is nearest (a vectorised scatter-min over per-cell stencils), which gives the
   nucleus (distance <= 0), the cell body (<= the phenotype's reach) and the GigaTIME
   expanded-nucleus mask (<= ``expansion_um``) in one pass;
3. H&E by Beer-Lambert: optical density = hematoxylin x h-vector + eosin x e-vector (with
   per-scanner stain-vector jitter), RGB = background x exp(-OD), plus blur and sensor noise;
4. targets as GigaTIME builds them: a channel is positive on the nucleus mask of marker-positive
   cells for nuclear channels (DAPI, Ki67, PHH3-B) and on their expanded-nucleus mask otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from virtime.channels import CHANNEL_NAMES, CHANNELS
from virtime.errors import InvalidArgumentError
from virtime.simulate.phenotypes import BACKGROUND_NOISE, PHENOTYPE_NAMES, PHENOTYPES

__all__ = [
    "Composition",
    "Scanner",
    "render_tissue",
    "render_tile",
    "random_composition",
    "tumour_layout",
]

_NUCLEAR = np.array([c.compartment == "nuclear" for c in CHANNELS])
_H_REF = np.array([0.650, 0.704, 0.286])  # Ruifrok & Johnston hematoxylin OD vector
_E_REF = np.array([0.072, 0.990, 0.105])  # eosin
_QSCALE = 64.0  # distance quantisation (steps per pixel) of the ownership key
_QOFFSET = 256.0  # pixels; keeps quantised distances positive


@dataclass(frozen=True)
class Composition:
    """What a region contains: phenotype densities (cells/mm²) in tumour nests and in stroma.

    ``marker_prob`` overrides the phenotype table's marker probabilities, e.g.
    ``{"tumour": {"PD-L1": 0.6}}``; ``vessel_density`` is vessels per mm² of stroma.
    """

    tumour_fraction: float = 0.45
    tumour: Mapping[str, float] = field(default_factory=lambda: {
        "tumour": 5200.0, "mitotic": 60.0, "apoptotic": 60.0, "cd8_t": 150.0, "cd4_t": 60.0,
        "macrophage": 80.0,
    })
    stroma: Mapping[str, float] = field(default_factory=lambda: {
        "fibroblast": 1100.0, "cd8_t": 350.0, "cd4_t": 450.0, "b_cell": 180.0, "plasma": 220.0,
        "macrophage": 260.0, "mast": 70.0, "smooth_muscle": 300.0,
    })
    vessel_density: float = 45.0
    nest_scale_um: float = 60.0
    marker_prob: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.tumour_fraction <= 1.0:
            raise InvalidArgumentError(f"tumour_fraction must be in [0, 1], got {self.tumour_fraction}")
        for region in (self.tumour, self.stroma):
            for name, dens in region.items():
                if name not in PHENOTYPES:
                    raise InvalidArgumentError(
                        f"unknown phenotype {name!r}; known: {', '.join(PHENOTYPE_NAMES)}")
                if dens < 0:
                    raise InvalidArgumentError(f"density of {name!r} must be >= 0, got {dens}")


@dataclass(frozen=True)
class Scanner:
    """Stain vectors, stain strengths and illumination of one simulated scanner/lab."""

    h_vector: tuple[float, float, float] = tuple(_H_REF / np.linalg.norm(_H_REF))  # type: ignore
    e_vector: tuple[float, float, float] = tuple(_E_REF / np.linalg.norm(_E_REF))  # type: ignore
    h_scale: float = 1.0
    e_scale: float = 1.0
    background: tuple[float, float, float] = (245.0, 243.0, 247.0)
    noise: float = 2.0

    @classmethod
    def random(cls, rng: np.random.Generator, jitter: float = 0.06) -> "Scanner":
        """A scanner with stain vectors, strengths and white level jittered around the reference."""
        h = np.clip(_H_REF + rng.normal(0, jitter, 3), 0.02, None)
        e = np.clip(_E_REF + rng.normal(0, jitter, 3), 0.02, None)
        return cls(
            tuple(h / np.linalg.norm(h)), tuple(e / np.linalg.norm(e)),  # type: ignore[arg-type]
            float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.2)),
            tuple(rng.uniform(232, 252, 3)), float(rng.uniform(1.0, 3.0)),  # type: ignore
        )


def random_composition(rng: np.random.Generator, spread: float = 0.6) -> Composition:
    """A composition with every density scaled by a log-normal factor (training variety)."""
    base = Composition()

    def scale(d: Mapping[str, float]) -> dict[str, float]:
        return {k: float(v * np.exp(rng.normal(0, spread))) for k, v in d.items()}

    return Composition(
        tumour_fraction=float(rng.uniform(0.05, 0.8)), tumour=scale(base.tumour),
        stroma=scale(base.stroma), vessel_density=float(base.vessel_density
                                                        * np.exp(rng.normal(0, spread))),
        nest_scale_um=float(rng.uniform(35, 100)),
    )


def _interp_matrix(n_out: int, n_in: int, step: float) -> np.ndarray:
    """Linear-interpolation weights (n_out, n_in) sampling a coarse axis at spacing ``step``."""
    pos = np.arange(n_out) / step
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    frac = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] = 1 - frac
    m[np.arange(n_out), i0 + 1] = frac
    return m


def _smooth_field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean unit-variance Gaussian random field with correlation length ~``sigma_px``.

    Drawn on a grid 4x finer than ``sigma_px`` and interpolated bilinearly by two small matrix
    products, which costs far less than filtering at full resolution.
    """
    step = max(1.0, sigma_px / 4)
    small = (int(shape[0] / step) + 3, int(shape[1] / step) + 3)
    f = ndimage.gaussian_filter(rng.standard_normal(small), sigma_px / step, mode="wrap")
    f = f.astype(np.float32)
    f = _interp_matrix(shape[0], small[0], step) @ f @ _interp_matrix(shape[1], small[1], step).T
    return (f - f.mean()) / (f.std() + 1e-12)


def tumour_layout(shape: tuple[int, int], fraction: float, scale_px: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Boolean tumour-nest mask covering ``fraction`` of the area, blobs of size ~``scale_px``."""
    if fraction <= 0:
        return np.zeros(shape, bool)
    if fraction >= 1:
        return np.ones(shape, bool)
    f = _smooth_field(shape, scale_px, rng)
    return f > np.quantile(f, 1.0 - fraction)


def _sample_in(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform points (y, x) inside a boolean mask."""
    if n <= 0 or not mask.any():
        return np.zeros((0, 2))
    flat = np.flatnonzero(mask)
    pick = flat[rng.integers(0, flat.size, n)]
    y, x = np.divmod(pick, mask.shape[1])
    return np.stack([y + rng.random(n), x + rng.random(n)], 1)


def _place_cells(shape: tuple[int, int], comp: Composition, tumour: np.ndarray, mpp: float,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, list[tuple[float, float, float]]]:
    h, w = shape
    px_area_mm2 = (mpp * 1e-3) ** 2
    stroma = ~tumour
    parts: list[tuple[np.ndarray, str, str]] = []
    # Vessels: lumen centres in stroma, endothelium around them, red cells inside.
    n_vessels = rng.poisson(comp.vessel_density * stroma.sum() * px_area_mm2)
    vessels = []
    for cy, cx in _sample_in(stroma, n_vessels, rng):
        r = rng.uniform(4.0, 10.0) / mpp
        vessels.append((cy, cx, r))
        k = max(4, int(2 * np.pi * r * mpp / 11.0))
        ang = rng.uniform(0, 2 * np.pi) + np.arange(k) * 2 * np.pi / k
        ring = np.stack([cy + (r + 1.2 / mpp) * np.sin(ang), cx + (r + 1.2 / mpp) * np.cos(ang)], 1)
        parts.append((ring, "endothelium", "stroma"))
        n_rbc = rng.integers(0, 1 + int(r * mpp / 2.5))
        rr = np.sqrt(rng.random(n_rbc)) * max(r - 3.0 / mpp, 0.0)
        ra = rng.uniform(0, 2 * np.pi, n_rbc)
        parts.append((np.stack([cy + rr * np.sin(ra), cx + rr * np.cos(ra)], 1), "rbc", "stroma"))
    for region_name, mask, dens in (("tumour", tumour, comp.tumour), ("stroma", stroma, comp.stroma)):
        area = mask.sum() * px_area_mm2
        for name, d in dens.items():
            if name == "tumour" and d > 0:  # packed epithelium: jittered grid
                sp = 1.0 / np.sqrt(d * px_area_mm2)
                gy, gx = np.mgrid[0:h:sp, 0:w:sp]
                pts = np.stack([gy.ravel(), gx.ravel()], 1) + rng.normal(0, 0.18 * sp, (gy.size, 2))
                pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)]
                pts = pts[mask[pts[:, 0].astype(int), pts[:, 1].astype(int)]]
            else:
                pts = _sample_in(mask, rng.poisson(d * area), rng)
            parts.append((pts, name, region_name))
    pts = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 2))
    ptype = np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in parts]) if parts else []
    region = np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in parts]) if parts else []
    cells = pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1], "phenotype": ptype, "region": region})
    cells = cells[(cells.x >= 0) & (cells.x < w) & (cells.y >= 0) & (cells.y < h)]
    # Non-tumour cells displace the epithelial cell they land on; lumens hold only red cells.
    from scipy.spatial import cKDTree

    is_t = (cells.phenotype == "tumour").to_numpy()
    keep = np.ones(len(cells), bool)
    if is_t.any() and (~is_t).any():
        tree = cKDTree(cells[["y", "x"]].to_numpy()[is_t])
        hits = tree.query_ball_point(cells[["y", "x"]].to_numpy()[~is_t], r=5.0 / mpp)
        idx_t = np.flatnonzero(is_t)
        for hit in hits:
            keep[idx_t[hit]] = False
    if vessels:
        v = np.array(vessels)
        tree = cKDTree(v[:, :2])
        dist, j = tree.query(cells[["y", "x"]].to_numpy())
        inside = dist < v[j, 2] + 0.5 / mpp
        keep &= ~inside | (cells.phenotype == "rbc").to_numpy()
    return cells[keep].reset_index(drop=True), vessels


def render_tissue(
    shape: tuple[int, int] | int,
    composition: Composition | None = None,
    *,
    mpp: float = 0.5,
    rng: np.random.Generator | None = None,
    tumour_mask: np.ndarray | None = None,
    scanner: Scanner | None = None,
    expansion_um: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A synthetic H&E region with its 23-channel mIF targets and its cell table.

    Parameters
    ----------
    shape
        ``(height, width)`` in pixels (or one int for a square).
    composition
        Phenotype densities and layout; the default is a typical carcinoma.
    mpp
        Microns per pixel (GigaTIME works at ~0.25; the demo model at 0.5).
    tumour_mask
        Boolean ``(height, width)`` nest layout to use instead of a random one (e.g. to plant
        biology in given regions of a simulated slide).
    scanner
        Stain appearance; ``Scanner()`` is the reference, ``Scanner.random(rng)`` a jittered one.
    expansion_um
        Growth of the nucleus that gives the expanded-nucleus target mask.

    Returns
    -------
    rgb : uint8 (H, W, 3)
    targets : bool (23, H, W), channels in checkpoint order
    cells : DataFrame with x, y (pixels), phenotype, region and one bool column per channel
    """
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape), int(shape))
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0 or mpp <= 0:
        raise InvalidArgumentError(f"shape {shape} and mpp {mpp} must be positive")
    rng = rng if rng is not None else np.random.default_rng(0)
    comp = composition or Composition()
    scanner = scanner or Scanner()
    if tumour_mask is None:
        tumour = tumour_layout((h, w), comp.tumour_fraction, comp.nest_scale_um / mpp, rng)
    else:
        tumour = np.asarray(tumour_mask, bool)
        if tumour.shape != (h, w):
            raise InvalidArgumentError(f"tumour_mask shape {tumour.shape} != {(h, w)}")
    cells, vessels = _place_cells((h, w), comp, tumour, mpp, rng)
    n = len(cells)
    ptypes = [PHENOTYPES[p] for p in cells.phenotype]
    # Per-cell geometry (pixels) and stains.
    var = np.array([p.variation for p in ptypes]) if n else np.zeros(0)
    a = np.array([p.nucleus[0] for p in ptypes]) if n else np.zeros(0)
    b = np.array([p.nucleus[1] for p in ptypes]) if n else np.zeros(0)
    a = a * np.exp(rng.normal(0, 1, n) * var) / mpp
    b = np.minimum(b * np.exp(rng.normal(0, 1, n) * var) / mpp, a)
    a, b = np.maximum(a, 0.7), np.maximum(b, 0.6)
    body = np.array([p.body for p in ptypes]) / mpp if n else np.zeros(0)
    orient = _smooth_field((h, w), 80.0 / mpp, rng) * 1.2
    cy = np.clip(cells.y.to_numpy().astype(int), 0, h - 1)
    cx = np.clip(cells.x.to_numpy().astype(int), 0, w - 1)
    theta = rng.uniform(0, np.pi, n)
    aligned = cells.phenotype.isin(["smooth_muscle", "fibroblast"]).to_numpy()
    theta[aligned] = orient[cy[aligned], cx[aligned]] + rng.normal(0, 0.15, aligned.sum())
    endo = (cells.phenotype == "endothelium").to_numpy()
    if endo.any() and vessels:  # flat along the lumen wall
        v = np.array(vessels)
        from scipy.spatial import cKDTree

        _, j = cKDTree(v[:, :2]).query(cells[["y", "x"]].to_numpy()[endo])
        theta[endo] = np.arctan2(cells.y.to_numpy()[endo] - v[j, 0],
                                 cells.x.to_numpy()[endo] - v[j, 1]) + np.pi / 2
    # Markers.
    markers = np.zeros((n, len(CHANNEL_NAMES)), bool)
    nucleated = np.array([p.nucleated for p in ptypes], bool) if n else np.zeros(0, bool)
    for ci, cname in enumerate(CHANNEL_NAMES):
        prob = np.zeros(n)
        for k, (pname, pheno) in enumerate(PHENOTYPES.items()):
            pr = comp.marker_prob.get(pname, {}).get(cname, pheno.markers.get(cname, 0.0))
            if pr:
                prob[(cells.phenotype == pname).to_numpy()] = pr
        prob += BACKGROUND_NOISE.get(cname, 0.0)
        markers[:, ci] = rng.random(n) < prob
    markers[:, CHANNEL_NAMES.index("DAPI")] = True
    markers &= nucleated[:, None]
    owner, dist = _ownership((h, w), cells.y.to_numpy(), cells.x.to_numpy(), a, b, theta,
                             np.maximum(body, expansion_um / mpp) + 1.0)
    rgb = _stain(h, w, cells, ptypes, owner, dist, a, b, body, nucleated, tumour, vessels,
                 scanner, mpp, rng)
    targets = _targets(markers, owner, dist, nucleated, expansion_um / mpp)
    table = cells.assign(**{name: markers[:, i] for i, name in enumerate(CHANNEL_NAMES)})
    return rgb, targets, table


def render_tile(size: int = 256, composition: Composition | None = None, **kwargs) -> tuple[
        np.ndarray, np.ndarray, pd.DataFrame]:
    """A square ``size`` x ``size`` tile; see :func:`render_tissue`."""
    return render_tissue((size, size), composition, **kwargs)


def _ownership(shape: tuple[int, int], y: np.ndarray, x: np.ndarray, a: np.ndarray,
               b: np.ndarray, theta: np.ndarray, reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the cell whose nucleus boundary is nearest (-1 if none within its reach) and
    that signed distance in pixels (< 0 inside the nucleus).

    Cells are grouped by stencil radius; each group evaluates its disk stencils at once and the
    packed key ``(quantised distance << 32) | cell`` is scatter-minimised into the pixel grid.
    """
    h, w = shape
    keys = np.full(h * w, np.iinfo(np.uint64).max, dtype=np.uint64)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    rmean = np.sqrt(a32 * b32)
    extent = np.ceil(a + reach).astype(int)
    bucket = np.ceil(extent / 3).astype(int) * 3
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    for r in np.unique(bucket):
        sel = np.flatnonzero(bucket == r)
        off = np.arange(-r, r + 1)
        oy, ox = np.meshgrid(off, off, indexing="ij")
        disk = oy**2 + ox**2 <= r * r
        oy, ox = oy[disk].astype(np.int32), ox[disk].astype(np.int32)
        for chunk in np.array_split(sel, max(1, len(sel) * oy.size // 1_000_000)):
            iy = np.rint(y[chunk]).astype(np.int32)
            ix = np.rint(x[chunk]).astype(np.int32)
            py = iy[:, None] + oy
            px = ix[:, None] + ox
            fy = (iy - y[chunk]).astype(np.float32)[:, None] + oy
            fx = (ix - x[chunk]).astype(np.float32)[:, None] + ox
            c, s = cos[chunk, None], sin[chunk, None]
            u = (fx * c + fy * s) / a32[chunk, None]
            v = (fy * c - fx * s) / b32[chunk, None]
            d = (np.sqrt(u * u + v * v) - 1.0) * rmean[chunk, None]
            ok = (py >= 0) & (py < h) & (px >= 0) & (px < w) & (d <= reach[chunk, None])
            q = ((d[ok] + _QOFFSET) * _QSCALE).astype(np.uint64)
            ids = np.broadcast_to(chunk[:, None], ok.shape)[ok].astype(np.uint64)
            np.minimum.at(keys, py[ok] * w + px[ok], (q << np.uint64(32)) | ids)
    empty = keys == np.iinfo(np.uint64).max
    owner = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    dist = (keys >> np.uint64(32)).astype(np.float32) / _QSCALE - _QOFFSET
    owner[empty] = -1
    dist[empty] = np.inf
    return owner.reshape(h, w), dist.reshape(h, w)


def _stain(h, w, cells, ptypes, owner, dist, a, b, body, nucleated, tumour, vessels, scanner,
           mpp, rng) -> np.ndarray:
    """Beer-Lambert H&E image of the owned-pixel map (float32, computed on owned pixels only)."""
    n = len(cells)
    table = np.array([[p.nucleus_h, p.texture, p.rim, p.cyto_h, p.cyto_e, p.cyto_texture,
                       0.0 if p.nucleated else 1.25] for p in ptypes],
                     dtype=np.float32).reshape(n, 7)
    fine = _noise((h, w), 0.6 / mpp, rng).ravel()
    fibre = np.abs(_noise((h, w), (0.4 / mpp, 3.0 / mpp), rng)).ravel()
    # Extracellular matrix: fibrous eosin in stroma, little between epithelial cells.
    H = np.full(h * w, 0.04, np.float32)
    E = np.where(tumour.ravel(), np.float32(0.25),
                 np.float32(0.12) + np.float32(0.28) * np.minimum(fibre, 2.5))
    if vessels:
        lumen = np.zeros((h, w), bool)
        yy, xx = np.ogrid[:h, :w]
        for vy, vx, r in vessels:
            y0, y1 = max(int(vy - r - 1), 0), min(int(vy + r + 2), h)
            x0, x1 = max(int(vx - r - 1), 0), min(int(vx + r + 2), w)
            if y0 < y1 and x0 < x1:
                lumen[y0:y1, x0:x1] |= ((yy[y0:y1] - vy) ** 2 + (xx[:, x0:x1] - vx) ** 2) <= r * r
        lum = lumen.ravel()
        H[lum], E[lum] = 0.01, 0.03
    own = owner.ravel()
    d = dist.ravel()
    rmean = np.sqrt(a * b).astype(np.float32)
    body32 = body.astype(np.float32)
    inside = np.flatnonzero(own >= 0)
    o, dd = own[inside], d[inside]
    isnuc = dd <= 0
    iscyto = ~isnuc & (dd <= body32[o])
    pn, on, fn = inside[isnuc], o[isnuc], fine[inside[isnuc]]
    t = table[on]
    rho = np.clip(1.0 + dd[isnuc] / np.maximum(rmean[on], 1e-6), 0, 1)
    H[pn] = t[:, 0] * (1.0 + t[:, 1] * fn) * (1.0 + t[:, 2] * rho**6)
    E[pn] = 0.12 + t[:, 6] * (1.0 + 0.1 * fn)
    pc, oc, fc = inside[iscyto], o[iscyto], fine[inside[iscyto]]
    t = table[oc]
    H[pc] = t[:, 3] * (1.0 + t[:, 5] * fc)
    E[pc] = t[:, 4] * (1.0 + 0.8 * t[:, 5] * fc)
    H, E = np.maximum(H, 0).reshape(h, w), np.maximum(E, 0).reshape(h, w)
    if 0.25 / mpp >= 0.6:  # optical blur, visible only at fine resolutions
        H = ndimage.gaussian_filter(H, 0.25 / mpp, truncate=2.5)
        E = ndimage.gaussian_filter(E, 0.25 / mpp, truncate=2.5)
    hv = np.asarray(scanner.h_vector, np.float32) * np.float32(scanner.h_scale)
    ev = np.asarray(scanner.e_vector, np.float32) * np.float32(scanner.e_scale)
    bg = np.asarray(scanner.background, np.float32)
    rgb = np.empty((h, w, 3), np.uint8)
    noise = rng.standard_normal((h, w), dtype=np.float32) * np.float32(scanner.noise)
    for k in range(3):
        ch = bg[k] * np.exp(-(H * hv[k] + E * ev[k])) + noise
        rgb[..., k] = np.clip(ch, 0, 255)
        noise = np.roll(noise, 7, axis=1)
    return rgb


def _noise(shape: tuple[int, int], sigma, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance smoothed white noise (float32)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=2.5)
    return f / (f.std() + np.float32(1e-12))


def _targets(markers: np.ndarray, owner: np.ndarray, dist: np.ndarray, nucleated: np.ndarray,
             expansion_px: float) -> np.ndarray:
    """The GigaTIME binary targets: nuclear channels on nuclei, the others on expanded nuclei."""
    c = markers.shape[1]
    h, w = owner.shape
    out = np.zeros((c, h * w), bool)
    own, d = owner.ravel(), dist.ravel()
    expanded = np.flatnonzero((own >= 0) & (d <= expansion_px))
    if expanded.size == 0:
        return out.reshape(c, h, w)
    # One 32-bit code of marker bits per cell, gathered once per pixel, unpacked per channel.
    codes = (markers.astype(np.uint32) << np.arange(c, dtype=np.uint32)).sum(1, dtype=np.uint32)
    px_code = codes[own[expanded]]
    in_nucleus = d[expanded] <= 0
    for k in range(c):
        bit = (px_code >> np.uint32(k)) & np.uint32(1)
        out[k, expanded] = bit.astype(bool) & in_nucleus if _NUCLEAR[k] else bit.astype(bool)
    return out.reshape(c, h, w)
