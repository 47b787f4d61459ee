"""Virtual patient cohorts with planted biology, and the truth table of what was planted.

A :class:`CohortDesign` lists cancer types and OncoTree-style subtypes (share of patients,
biomarker prevalences, baseline changes of the tissue composition) and the planted effects:

* :class:`DensityEffect` — an attribute multiplies a cell type's density in tumour nests or
  stroma (e.g. MSI-high: CD8 T cells x4 inside tumour nests), in all or some subtypes;
* :class:`MarkerEffect` — an ordinal attribute moves a marker's rate on a cell type (e.g. stage
  raises the Ki67-positive share of tumour cells);
* :class:`SurvivalEffect` — the hazard falls with a cell type's density (e.g. intratumoural CD8);
* :class:`SiteArtefact` — not biology: one site's slides have their own stain look (which a
  translator may read as a shift of some virtual channels) and its patients carry one biomarker
  more often, with no effect in the tissue. Analyses must not call it biology.

:func:`draw_patients` draws the clinical table (cancer type, subtype, biomarkers, stage, overall
survival) and each patient's tissue composition; :mod:`virtime.simulate.cohort_render` renders
their slides and ground-truth mIF. The biology is carried only by the tissue: the analysis never
sees the composition, only the slides (or the ground-truth mIF rendered with them).

:func:`truth_table` says which associations the analysis should find. It uses an *expected
feature model*: the expected positive-area fraction of every channel from the densities, marker
rates and cell sizes (with tumour cells displaced by other cells in nests, as the renderer does),
averaged over the cohort design within each group (pan-cancer, cancer type, subtype). A row is
``primary`` when a planted effect acts in the group and moves the feature by at least
``PRIMARY_LOG2`` (x1.41) both directly (within a subtype) and at the group level — these define
power; ``implied`` rows are any other expected change of at least ``IMPLIED_LOG2`` (~5%): marker
sharing (CD3 on CD8 T cells), dilution across subtypes, confounding by the subtype mix — found or
not, they are not false discoveries. ``artefact`` rows are every other feature of the artefact's
biomarker: found, they are false discoveries made through the site. Everything else is null.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from virtime.channels import CHANNELS, PROTEIN_CHANNELS
from virtime.errors import InvalidArgumentError
from virtime.simulate.phenotypes import PHENOTYPES
from virtime.simulate.tissue import Composition

__all__ = [
    "BIOMARKERS",
    "IMPLIED_LOG2",
    "PRIMARY_LOG2",
    "SURVIVAL_ATTRIBUTE",
    "TRUTH_COLUMNS",
    "CohortDesign",
    "DensityEffect",
    "MarkerEffect",
    "PatientBiology",
    "SiteArtefact",
    "SubtypeSpec",
    "SurvivalEffect",
    "analysed_features",
    "default_design",
    "draw_patients",
    "truth_table",
]

#: Binary biomarkers of the default design (1 = mutated / high).
BIOMARKERS: tuple[str, ...] = ("KRAS", "KMT2D", "MSI-high", "TMB-high")
#: Expected |log2 fold change| of a feature that makes a planted effect count for power.
PRIMARY_LOG2 = 0.5
#: Smallest expected |log2 fold change| listed as an implied (allowed) association.
IMPLIED_LOG2 = 0.07
#: The attribute name used for survival rows of the truth table.
SURVIVAL_ATTRIBUTE = "overall survival"
TRUTH_COLUMNS = ["level", "group", "feature", "channel", "attribute", "direction", "size", "role",
                 "effect"]
_REGIONS = ("tumour", "stroma")
_EXPANSION_UM = 2.0
_DISPLACE_UM = 5.0  # the renderer removes tumour cells within 5 µm of any other cell
_NUCLEAR = {c.name for c in CHANNELS if c.compartment == "nuclear"}
_TCELL_CHANNELS = ("CD8", "CD3")


def analysed_features() -> list[str]:
    """Features the demo tests: every protein's density and CD8/CD3 inside nests and in stroma."""
    return ([f"{c}.density" for c in PROTEIN_CHANNELS]
            + [f"{c}.{r}_density" for c in _TCELL_CHANNELS for r in _REGIONS])


@dataclass(frozen=True)
class SubtypeSpec:
    """One OncoTree-style subtype: its code, cancer type (mainType), share and biology.

    ``weight``: share of the cohort; ``prevalence``: P(biomarker = 1); ``scale``: baseline
    density factor per phenotype (both regions) relative to the default composition.
    """

    code: str
    cancer_type: str
    weight: float
    prevalence: Mapping[str, float]
    scale: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DensityEffect:
    """Patients with ``attribute`` = 1 have ``fold`` x the ``phenotype`` density in ``region``.

    ``subtypes``: codes where the effect acts (empty: everywhere).
    """

    attribute: str
    phenotype: str
    region: str
    fold: float
    subtypes: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class MarkerEffect:
    """P(``channel`` positive on ``phenotype``) = ``base`` + ``per_unit`` x (attribute - ``origin``)."""

    attribute: str
    phenotype: str
    channel: str
    base: float
    per_unit: float
    description: str = ""
    origin: float = 0.0


@dataclass(frozen=True)
class SurvivalEffect:
    """Hazard x ``hr_per_sd`` per SD of the log ``phenotype`` density in ``region``."""

    phenotype: str
    region: str
    hr_per_sd: float
    description: str = ""


@dataclass(frozen=True)
class SiteArtefact:
    """A site confounder: its slides look different and its patients differ, its tissue does not.

    ``share`` of the patients come from ``site`` (the others from ``reference``; both in the
    clinical ``site`` column). Their ``attribute`` prevalence is raised by ``extra_prevalence``
    (capped at 1), and their slides are stained with ``h_scale`` x hematoxylin and ``e_scale`` x
    eosin — a stain/scanner look the translator sees and the ground-truth mIF does not.
    """

    attribute: str = "KMT2D"
    share: float = 0.35
    extra_prevalence: float = 0.6
    h_scale: float = 1.5
    e_scale: float = 1.0
    site: str = "site-2"
    reference: str = "site-1"
    description: str = ("site-2: strong hematoxylin (x1.5) and KMT2D +0.6, no effect in the "
                        "tissue")

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0 or not 0.0 <= self.extra_prevalence <= 1.0:
            raise InvalidArgumentError("artefact share must be in (0, 1) and extra_prevalence "
                                       "in [0, 1]")
        if self.h_scale <= 0 or self.e_scale <= 0 or self.site == self.reference:
            raise InvalidArgumentError("artefact stain scales must be > 0 and its site differ "
                                       "from the reference")


@dataclass(frozen=True)
class CohortDesign:
    """Everything that defines a virtual cohort, apart from its size and seed.

    ``spread``: SD of the per-patient log-normal factor on each phenotype density (independent
    per phenotype; ``phenotype_spread`` overrides it for named phenotypes);
    ``compartment_correlation``: correlation of a phenotype's factors in tumour and stroma (an
    inflamed tumour has more T cells in the nests *and* around them, which is also what lets a
    small slide's whole-tissue density track the intratumoural survival driver);
    ``tumour_fraction``: uniform range of nest area; ``nest_scale_um``: uniform range of the
    nests' length scale (larger nests give purer tumour bins for the intratumoural features on a
    small slide); ``stage_probs``:
    P(stage I..IV); ``median_os_months`` and ``follow_up_months``: baseline survival and
    administrative censoring (plus uniform drop-out up to that time).
    """

    subtypes: tuple[SubtypeSpec, ...]
    biomarkers: tuple[str, ...] = BIOMARKERS
    density_effects: tuple[DensityEffect, ...] = ()
    marker_effects: tuple[MarkerEffect, ...] = ()
    survival_effect: SurvivalEffect | None = None
    spread: float = 0.3
    phenotype_spread: tuple[tuple[str, float], ...] = ()
    compartment_correlation: float = 0.0
    tumour_fraction: tuple[float, float] = (0.35, 0.55)
    nest_scale_um: tuple[float, float] = (45.0, 80.0)
    stage_probs: tuple[float, float, float, float] = (0.25, 0.3, 0.27, 0.18)
    median_os_months: float = 30.0
    follow_up_months: float = 72.0
    artefact: SiteArtefact | None = None

    def __post_init__(self) -> None:
        if not self.subtypes:
            raise InvalidArgumentError("a cohort design needs at least one subtype")
        codes = [s.code for s in self.subtypes]
        if len(set(codes)) != len(codes):
            raise InvalidArgumentError(f"subtype codes repeat: {codes}")
        for e in self.density_effects:
            if e.phenotype not in PHENOTYPES or e.region not in _REGIONS:
                raise InvalidArgumentError(f"bad density effect {e}")
            unknown = set(e.subtypes) - set(codes)
            if unknown:
                raise InvalidArgumentError(f"effect {e.description!r}: unknown subtypes {unknown}")
        if not 0.0 <= self.compartment_correlation < 1.0:
            raise InvalidArgumentError("compartment_correlation must be in [0, 1)")
        lo, hi = self.nest_scale_um
        if not 0 < lo <= hi:
            raise InvalidArgumentError(f"nest_scale_um must be a range 0 < low <= high, got "
                                       f"{self.nest_scale_um}")
        if abs(sum(self.stage_probs) - 1) > 1e-6:
            raise InvalidArgumentError("stage_probs must sum to 1")
        if self.artefact is not None and (self.artefact.attribute not in self.biomarkers
                                          or self.artefact.attribute in self.effect_attributes):
            raise InvalidArgumentError(f"the artefact's attribute {self.artefact.attribute!r} "
                                       "must be a biomarker without planted effects")

    def spread_of(self, phenotype: str) -> float:
        """Between-patient SD of the log density of ``phenotype`` (its override or ``spread``)."""
        return dict(self.phenotype_spread).get(phenotype, self.spread)

    def null(self) -> CohortDesign:
        """The same cohort with no planted effect (for false-discovery checks); a site
        artefact, not being biology, is kept."""
        return replace(self, density_effects=(), marker_effects=(), survival_effect=None)

    @property
    def cancer_types(self) -> list[str]:
        return sorted({s.cancer_type for s in self.subtypes})

    @property
    def effect_attributes(self) -> list[str]:
        """Attributes that drive at least one planted effect."""
        names = [e.attribute for e in self.density_effects] + [e.attribute for e in
                                                                self.marker_effects]
        return list(dict.fromkeys(names))


def default_design() -> CohortDesign:
    """Three cancer types, six subtypes, four biomarkers, stage and survival; five effects and
    one site artefact (a second site with its own stain look and more KMT2D, no tissue effect).

    Prevalences are rounded from published cohorts (e.g. MSI-high in ~15% of colon and ~30% of
    endometrioid carcinomas, KRAS in ~40% of colorectal and ~30% of lung adenocarcinomas).

    The survival design is what lets ~100 patients per cancer type find the CD8 effect on one
    small demo slide each: intratumoural CD8 varies between patients with SD 0.6 on the log scale
    (real densities span one to two orders of magnitude; with 0.3, lung — where MSI-high is rare —
    had almost no driver variation to find), nests of 100-160 µm (so 64-µm tumour bins are mostly
    tumour, not stroma with its own CD8), a strong Immunoscore-like hazard x0.45 per SD, and 120
    months of follow-up (more events). Measured choices are in docs/demo.md.
    """
    def prev(kras: float, kmt2d: float, msi: float, tmb: float) -> dict[str, float]:
        return {"KRAS": kras, "KMT2D": kmt2d, "MSI-high": msi, "TMB-high": tmb}

    subtypes = (
        SubtypeSpec("COAD", "Colorectal Cancer", 0.23, prev(0.42, 0.10, 0.18, 0.18),
                    {"plasma": 1.5}),
        SubtypeSpec("READ", "Colorectal Cancer", 0.10, prev(0.42, 0.08, 0.05, 0.10),
                    {"plasma": 1.5, "b_cell": 0.7}),
        SubtypeSpec("LUAD", "Non-Small Cell Lung Cancer", 0.22, prev(0.30, 0.10, 0.02, 0.35),
                    {"macrophage": 1.5}),
        SubtypeSpec("LUSC", "Non-Small Cell Lung Cancer", 0.12, prev(0.05, 0.20, 0.02, 0.40),
                    {"macrophage": 1.5, "cd8_t": 1.2}),
        SubtypeSpec("UEC", "Endometrial Cancer", 0.23, prev(0.20, 0.12, 0.30, 0.25),
                    {"smooth_muscle": 1.6}),
        SubtypeSpec("USC", "Endometrial Cancer", 0.10, prev(0.05, 0.05, 0.03, 0.05),
                    {"smooth_muscle": 1.6, "mast": 1.4}),
    )
    return CohortDesign(
        subtypes=subtypes,
        density_effects=(
            DensityEffect("MSI-high", "cd8_t", "tumour", 4.0, (),
                          "MSI-high: CD8 T cells x4 inside tumour nests (all subtypes)"),
            DensityEffect("KRAS", "plasma", "stroma", 3.0, ("LUAD",),
                          "KRAS-mutant lung adenocarcinoma: plasma cells x3 in stroma"),
        ),
        marker_effects=(
            MarkerEffect("stage", "tumour", "Ki67", 0.10, 0.13,
                         "stage raises Ki67 on tumour cells: 10% (I) to 49% (IV)", origin=1.0),
            MarkerEffect("TMB-high", "tumour", "PD-L1", 0.15, 0.30,
                         "TMB-high: PD-L1 on tumour cells 15% -> 45% (all subtypes)"),
        ),
        survival_effect=SurvivalEffect(
            "cd8_t", "tumour", 0.45,
            "hazard x0.45 per SD of log intratumoural CD8 T-cell density"),
        phenotype_spread=(("cd8_t", 0.6),),
        nest_scale_um=(100.0, 160.0),
        follow_up_months=120.0,
        artefact=SiteArtefact(),
    )


# ---------------------------------------------------------------------------------------------
# Patients


@dataclass(frozen=True)
class PatientBiology:
    """One patient's tissue: densities (cells/mm²) per region, marker overrides, layout."""

    patient_id: str
    subtype: str
    tumour_fraction: float
    tumour: Mapping[str, float]
    stroma: Mapping[str, float]
    marker_prob: Mapping[str, Mapping[str, float]]
    nest_scale_um: float
    hazard_log_density: float  # log density of the survival driver relative to its baseline
    stain: tuple[float, float] = (1.0, 1.0)  # the site's hematoxylin, eosin strength factors

    def composition(self) -> Composition:
        """The :class:`~virtime.simulate.tissue.Composition` the renderer draws."""
        return Composition(tumour_fraction=self.tumour_fraction, tumour=dict(self.tumour),
                           stroma=dict(self.stroma), marker_prob=self.marker_prob,
                           nest_scale_um=self.nest_scale_um)


def _effect_active(effect: DensityEffect, subtype: str) -> bool:
    return not effect.subtypes or subtype in effect.subtypes


def _densities(design: CohortDesign, spec: SubtypeSpec, attrs: Mapping[str, float]
               ) -> dict[str, dict[str, float]]:
    """Mean densities per region for a subtype and attribute values (before patient spread)."""
    base = Composition()
    out = {"tumour": dict(base.tumour), "stroma": dict(base.stroma)}
    for region in _REGIONS:
        for p in out[region]:
            out[region][p] *= spec.scale.get(p, 1.0)
    for e in design.density_effects:
        if _effect_active(e, spec.code) and attrs.get(e.attribute, 0) == 1:
            d = out[e.region]
            d[e.phenotype] = d.get(e.phenotype, 0.0) * e.fold
    return out


def _marker_overrides(design: CohortDesign, attrs: Mapping[str, float]
                      ) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for e in design.marker_effects:
        v = float(attrs.get(e.attribute, e.origin))
        out.setdefault(e.phenotype, {})[e.channel] = float(
            np.clip(e.base + e.per_unit * (v - e.origin), 0.0, 1.0))
    return out


def draw_patients(n: int, design: CohortDesign | None = None, *, seed: int = 0,
                  prefix: str = "P") -> tuple[pd.DataFrame, list[PatientBiology]]:
    """Draws ``n`` patients: their clinical table and their tissue biology.

    Returns
    -------
    clinical : DataFrame
        ``patient_id, cancer_type, subtype, <biomarkers> (0/1), stage (I-IV), os_time
        (months), os_event (0/1)`` — the columns :func:`virtime.stats.load_clinical` reads.
    biology : list of PatientBiology
        One per patient, in the same order.

    With a :class:`SiteArtefact` the table has a ``site`` column, drawn from its own random
    stream so that every other draw is the same as without the artefact.
    """
    design = design or default_design()
    if n < 1:
        raise InvalidArgumentError(f"need at least one patient, got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7301]))
    specs = design.subtypes
    w = np.array([s.weight for s in specs], float)
    pick = rng.choice(len(specs), size=n, p=w / w.sum())
    stages = rng.choice(4, size=n, p=np.asarray(design.stage_probs)) + 1
    rows, bio = [], []
    surv = design.survival_effect
    art = design.artefact
    at_site = (np.random.default_rng(np.random.SeedSequence([seed, 7302])).random(n) < art.share
               if art is not None else np.zeros(n, dtype=bool))
    for i in range(n):
        spec = specs[pick[i]]
        pid = f"{prefix}{i + 1:04d}"
        prevalence = dict(spec.prevalence)
        if art is not None and at_site[i]:
            prevalence[art.attribute] = min(1.0, prevalence.get(art.attribute, 0.0)
                                            + art.extra_prevalence)
        attrs: dict[str, float] = {b: float(rng.random() < prevalence.get(b, 0.0))
                                   for b in design.biomarkers}
        attrs["stage"] = float(stages[i])
        dens = _densities(design, spec, attrs)
        spread = _patient_spread(design, dens, rng)
        tumour = {p: d * math.exp(spread["tumour"][p]) for p, d in dens["tumour"].items()}
        stroma = {p: d * math.exp(spread["stroma"][p]) for p, d in dens["stroma"].items()}
        tumour["tumour"] = dens["tumour"]["tumour"]  # packed epithelium: no spread
        hazard_log = 0.0
        if surv is not None:
            base = _densities(design, spec, {})[surv.region].get(surv.phenotype, 0.0)
            now = (tumour if surv.region == "tumour" else stroma).get(surv.phenotype, 0.0)
            hazard_log = math.log(max(now, 1e-9) / max(base, 1e-9))
        bio.append(PatientBiology(
            pid, spec.code, float(rng.uniform(*design.tumour_fraction)), tumour, stroma,
            _marker_overrides(design, attrs), float(rng.uniform(*design.nest_scale_um)), hazard_log,
            (art.h_scale, art.e_scale) if at_site[i] and art is not None else (1.0, 1.0)))
        rows.append({"patient_id": pid, "cancer_type": spec.cancer_type, "subtype": spec.code,
                     **{b: int(attrs[b]) for b in design.biomarkers},
                     "stage": ["I", "II", "III", "IV"][int(stages[i]) - 1],
                     **({"site": art.site if at_site[i] else art.reference}
                        if art is not None else {})})
    clinical = pd.DataFrame(rows)
    t, e = _survival(design, np.array([b.hazard_log_density for b in bio]), rng)
    clinical["os_time"] = np.round(t, 2)
    clinical["os_event"] = e
    return clinical, bio


def _patient_spread(design: CohortDesign, dens: Mapping[str, Mapping[str, float]],
                    rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Per region and phenotype, the patient's log-density factor.

    A phenotype's factors in tumour and stroma correlate (``compartment_correlation``): an
    inflamed patient has more T cells in the nests *and* around them.
    """
    c = design.compartment_correlation
    if c == 0.0:  # independent compartments: the draw order of earlier versions (same cohorts)
        return {r: {p: float(rng.normal(0, design.spread_of(p))) for p in dens[r]}
                for r in _REGIONS}
    # Loading sqrt(c) on a shared normal and sqrt(1 - c) on an own one: correlation c, SD kept.
    shared = {p: float(rng.normal()) for p in sorted({p for r in _REGIONS for p in dens[r]})}
    return {r: {p: design.spread_of(p) * (math.sqrt(c) * shared[p]
                                          + math.sqrt(1 - c) * float(rng.normal()))
                for p in dens[r]} for r in _REGIONS}


def _survival(design: CohortDesign, log_density: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """Exponential survival; log hazard falls linearly with the standardized log density."""
    lam = math.log(2) / design.median_os_months
    log_hr = np.zeros(len(log_density))
    eff = design.survival_effect
    if eff is not None:
        # Standardize by the design's spread (the between-patient SD at baseline), not by the
        # sample, so the planted hazard ratio per SD does not depend on who was drawn.
        log_hr = math.log(eff.hr_per_sd) * (log_density / design.spread_of(eff.phenotype))
    t_event = rng.exponential(1.0 / (lam * np.exp(log_hr)))
    t_cens = np.minimum(rng.uniform(0.3, 1.0, len(t_event)) * design.follow_up_months * 1.5,
                        design.follow_up_months)
    return np.minimum(t_event, t_cens), (t_event <= t_cens).astype(int)


# ---------------------------------------------------------------------------------------------
# Expected feature model and the truth table


def _cell_area_um2(phenotype: str, nuclear: bool) -> float:
    p = PHENOTYPES[phenotype]
    a, b = p.nucleus
    if nuclear:
        return math.pi * a * b
    return math.pi * (a + _EXPANSION_UM) * (b + _EXPANSION_UM)


def _expected_features(design: CohortDesign, spec: SubtypeSpec, attrs: Mapping[str, float],
                       driver_fold: float = 1.0) -> dict[str, float]:
    """Expected positive-area fractions of the analysed features (see the module docstring)."""
    dens = _densities(design, spec, attrs)
    surv = design.survival_effect
    if surv is not None and driver_fold != 1.0:
        # The other compartment follows the driver by the regression slope of its factor.
        for region in _REGIONS:
            fold = driver_fold ** (1.0 if region == surv.region else
                                   design.compartment_correlation)
            dens[region][surv.phenotype] = dens[region].get(surv.phenotype, 0.0) * fold
    overrides = _marker_overrides(design, attrs)
    # Tumour cells are removed where another cell lands within 5 µm (Poisson thinning).
    others = sum(d for p, d in dens["tumour"].items() if p != "tumour") * 1e-6
    dens["tumour"]["tumour"] = dens["tumour"].get("tumour", 0.0) * math.exp(
        -others * math.pi * _DISPLACE_UM**2)
    tf = float(np.mean(design.tumour_fraction))
    out: dict[str, float] = {}
    for ch in PROTEIN_CHANNELS:
        nuclear = ch in _NUCLEAR
        frac = {}
        for region in _REGIONS:
            total = 0.0
            for p, d in dens[region].items():
                if not PHENOTYPES[p].nucleated:
                    continue
                prob = overrides.get(p, {}).get(ch, PHENOTYPES[p].markers.get(ch, 0.0))
                total += d * 1e-6 * prob * _cell_area_um2(p, nuclear)
            frac[region] = total
        out[f"{ch}.density"] = tf * frac["tumour"] + (1 - tf) * frac["stroma"]
        if ch in _TCELL_CHANNELS:
            out[f"{ch}.tumour_density"] = frac["tumour"]
            out[f"{ch}.stroma_density"] = frac["stroma"]
    return out


def _attribute_grid(design: CohortDesign, spec: SubtypeSpec) -> list[tuple[dict, float]]:
    """Every combination of effect attributes with its probability within a subtype."""
    names = design.effect_attributes
    options = []
    for a in names:
        if a == "stage":
            options.append([(float(s + 1), design.stage_probs[s]) for s in range(4)])
        else:
            p = spec.prevalence.get(a, 0.0)
            options.append([(1.0, p), (0.0, 1.0 - p)])
    grid = []
    for combo in itertools.product(*options) if options else [()]:
        attrs = {a: v for a, (v, _) in zip(names, combo)}
        grid.append((attrs, float(np.prod([pr for _, pr in combo])) if combo else 1.0))
    return grid


def _groups(design: CohortDesign, levels: tuple[str, ...]) -> list[tuple[str, str, list]]:
    out = []
    if "pan-cancer" in levels:
        out.append(("pan-cancer", "all", list(design.subtypes)))
    if "cancer_type" in levels:
        out += [("cancer_type", ct, [s for s in design.subtypes if s.cancer_type == ct])
                for ct in design.cancer_types]
    if "subtype" in levels:
        out += [("subtype", s.code, [s]) for s in design.subtypes]
    return out


def _conditional_mean(design: CohortDesign, specs: list, attribute: str, value: float
                      ) -> tuple[dict[str, float], float]:
    """E[features | attribute = value] over the subtypes of a group, and P(attribute = value)."""
    acc: dict[str, float] = {}
    total = 0.0
    for spec in specs:
        if attribute in design.effect_attributes:
            grid = [(a, p) for a, p in _attribute_grid(design, spec) if a[attribute] == value]
        else:
            prob = _marginal_prevalence(design, spec, attribute)
            prob = prob if value == 1 else 1 - prob
            grid = [(dict(a), p * prob) for a, p in _attribute_grid(design, spec)]
        for attrs, p in grid:
            wgt = spec.weight * p
            if wgt <= 0:
                continue
            for k, v in _expected_features(design, spec, attrs).items():
                acc[k] = acc.get(k, 0.0) + wgt * v
            total += wgt
    return ({k: v / total for k, v in acc.items()} if total > 0 else {}), total


def _marginal_prevalence(design: CohortDesign, spec: SubtypeSpec, attribute: str) -> float:
    """P(attribute = 1) in a subtype, over both sites when a site artefact raises it at one."""
    p = spec.prevalence.get(attribute, 0.0)
    art = design.artefact
    if art is None or art.attribute != attribute:
        return p
    return (1 - art.share) * p + art.share * min(1.0, p + art.extra_prevalence)


def _direct_sizes(design: CohortDesign, specs: list, attribute: str) -> dict[str, float]:
    """Largest within-subtype |log2 change| per feature among subtypes where it is planted."""
    best: dict[str, float] = {}
    lo, hi = (1.0, 4.0) if attribute == "stage" else (0.0, 1.0)
    for spec in specs:
        planted = any(e.attribute == attribute and _effect_active(e, spec.code)
                      for e in design.density_effects) or any(
            e.attribute == attribute for e in design.marker_effects)
        if not planted:
            continue
        f0, _ = _conditional_mean(design, [spec], attribute, lo)
        f1, _ = _conditional_mean(design, [spec], attribute, hi)
        for k in f0:
            if f0[k] > 0 and f1[k] > 0:
                best[k] = max(best.get(k, 0.0), abs(math.log2(f1[k] / f0[k])))
    return best


def _descriptions(design: CohortDesign, attribute: str) -> str:
    return "; ".join(e.description or f"{e.attribute} -> {e.phenotype}" for e in
                     (*design.density_effects, *design.marker_effects) if e.attribute == attribute)


def truth_table(design: CohortDesign | None = None, *,
                levels: tuple[str, ...] = ("pan-cancer", "cancer_type", "subtype"),
                survival_levels: tuple[str, ...] = ("pan-cancer", "cancer_type"),
                features: list[str] | None = None) -> pd.DataFrame:
    """The planted (``primary``) and expected side (``implied``) associations of a design.

    Columns: level, group, feature, channel, attribute, direction (higher/lower in the
    positive class, with stage, or — for survival — of the hazard as the feature rises), size
    (expected log2 fold change: positive vs negative class, stage IV vs I; for survival the
    feature's log2 change per doubling of the hazard driver), role, effect (description).
    """
    design = design or default_design()
    feats = features or analysed_features()
    rows: list[dict] = []
    attributes = list(design.biomarkers) + ["stage"]
    for level, group, specs in _groups(design, levels):
        for attribute in attributes:
            lo, hi = (1.0, 4.0) if attribute == "stage" else (0.0, 1.0)
            f0, w0 = _conditional_mean(design, specs, attribute, lo)
            f1, w1 = _conditional_mean(design, specs, attribute, hi)
            if w0 <= 0 or w1 <= 0:
                continue
            direct = _direct_sizes(design, specs, attribute)
            for feat in feats:
                if feat not in f0 or f0[feat] <= 0 or f1[feat] <= 0:
                    continue
                size = math.log2(f1[feat] / f0[feat])
                if abs(size) < IMPLIED_LOG2:
                    continue
                primary = abs(size) >= PRIMARY_LOG2 and direct.get(feat, 0.0) >= PRIMARY_LOG2
                rows.append({"level": level, "group": group, "feature": feat,
                                 "channel": feat.split(".")[0], "attribute": attribute,
                                 "direction": "higher" if size > 0 else "lower", "size": size,
                                 "role": "primary" if primary else "implied",
                                 "effect": _descriptions(design, attribute) if primary else
                                 "side effect of the planted biology (shared markers, "
                                 "displacement, subtype mix)"})
    if design.artefact is not None:
        rows += _artefact_truth(design, levels, feats, rows)
    if design.survival_effect is not None:
        rows += _survival_truth(design, survival_levels, feats)
    return pd.DataFrame(rows, columns=TRUTH_COLUMNS)


def _artefact_truth(design: CohortDesign, levels: tuple[str, ...], feats: list[str],
                    rows: list[dict]) -> list[dict]:
    """``artefact`` rows: every feature of the artefact's biomarker in every group that the
    tissue does not already tie to it (implied rows keep their role). The direction is
    ``either``: whichever way the translator reads the stain look, a discovery is false."""
    art = design.artefact
    assert art is not None
    known = {(r["level"], r["group"], r["feature"]) for r in rows
             if r["attribute"] == art.attribute}
    out = []
    for level, group, _ in _groups(design, levels):
        for feat in feats:
            if (level, group, feat) in known:
                continue
            out.append({"level": level, "group": group, "feature": feat,
                        "channel": feat.split(".")[0], "attribute": art.attribute,
                        "direction": "either", "size": float("nan"), "role": "artefact",
                        "effect": art.description})
    return out


def _survival_truth(design: CohortDesign, levels: tuple[str, ...], feats: list[str]) -> list:
    """Features whose expected value tracks the hazard driver (elasticity per doubling)."""
    eff = design.survival_effect
    assert eff is not None
    rows = []
    beta = math.log(eff.hr_per_sd) / design.spread_of(eff.phenotype)
    for level, group, specs in _groups(design, levels):
        base: dict[str, float] = {}
        up: dict[str, float] = {}
        tilted: dict[str, float] = {}
        w_all = w_tilt = 0.0
        for spec in specs:
            ref = _densities(design, spec, {})[eff.region].get(eff.phenotype, 0.0)
            for attrs, p in _attribute_grid(design, spec):
                # Attributes that move the driver move the hazard: features that differ between
                # those patients follow survival too (e.g. through the subtype mix).
                now = _densities(design, spec, attrs)[eff.region].get(eff.phenotype, 0.0)
                tilt = math.exp(beta * math.log(max(now, 1e-12) / max(ref, 1e-12)))
                w = spec.weight * p
                w_all += w
                w_tilt += w * tilt
                for k, v in _expected_features(design, spec, attrs).items():
                    base[k] = base.get(k, 0.0) + w * v
                    tilted[k] = tilted.get(k, 0.0) + w * tilt * v
                for k, v in _expected_features(design, spec, attrs, driver_fold=2.0).items():
                    up[k] = up.get(k, 0.0) + w * v
        for feat in feats:
            if base.get(feat, 0) <= 0:
                continue
            size = math.log2(up[feat] / base[feat])
            mix = math.log2((tilted[feat] / w_tilt) / (base[feat] / w_all))
            if abs(size) < IMPLIED_LOG2 and abs(mix) < IMPLIED_LOG2 / 2:
                continue
            if abs(size) >= IMPLIED_LOG2:
                lower = (size > 0) == (eff.hr_per_sd < 1)
            else:  # feature higher among those who die sooner: hazard rises with it
                lower = mix < 0
            rows.append({"level": level, "group": group, "feature": feat, "channel": feat.split(".")[0],
                             "attribute": SURVIVAL_ATTRIBUTE, "direction": "lower" if lower else "higher",
                             "size": size, "role": "primary" if abs(size) >= PRIMARY_LOG2 else "implied",
                             "effect": eff.description})
    return rows
