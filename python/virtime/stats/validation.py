"""Loading and validating the cohort tables: slide features and the clinical table.

Every downstream analysis trusts these checks, so each problem gets one clear error naming the file
and what is wrong (missing columns, duplicate ids, bad event codes, negative or non-finite times,
unknown stage labels, NaN features). A join that loses patients is logged with their ids and kept
in the :class:`Cohort`, so nobody silently analyses a smaller cohort than they think.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from virtime.errors import InputDataError, StatisticalWarning

__all__ = [
    "CATEGORICAL_FEATURES",
    "CLINICAL_REQUIRED",
    "CONTROL_CHANNELS",
    "COVARIATE_COLUMNS",
    "COVARIATE_FEATURES",
    "ID_COLUMNS",
    "QC_FLAG",
    "SITE_COLUMNS",
    "SURVIVAL_COLUMNS",
    "AttributeKind",
    "ClinicalTable",
    "Cohort",
    "aggregate_slides",
    "feature_columns",
    "is_control_feature",
    "is_known_feature",
    "join_features",
    "load_clinical",
    "parse_stage",
    "read_table",
    "validate_features",
    "validate_survival",
]

log = logging.getLogger(__name__)

AttributeKind = Literal["binary", "continuous", "stage"]

ID_COLUMNS = ("slide_id", "patient_id")
CLINICAL_REQUIRED = ("patient_id", "cancer_type", "subtype")
SURVIVAL_COLUMNS = ("os_time", "os_event")
_CLINICAL_RESERVED = set(CLINICAL_REQUIRED) | set(SURVIVAL_COLUMNS) | {"slide_id"}
#: Clinical columns naming the hospital or site a slide came from (the first present is "the site").
SITE_COLUMNS = ("site", "hospital", "centre", "center", "tss")
#: Clinical columns that describe how a patient was sampled, not their biology: kept as covariates
#: for adjustment, never tested as attributes.
COVARIATE_COLUMNS = (*SITE_COLUMNS, "scanner", "batch", "age")
#: Background channels (no protein): their features are negative controls, never discoveries.
CONTROL_CHANNELS = ("TRITC", "Cy5")
#: Slide descriptors kept beside the features as possible covariates (never tested).
COVARIATE_FEATURES = ("tissue.area_mm2",)
#: The features-table column that flags a slide whose failed tiles cover too much of its tissue.
QC_FLAG = "qc_failed_share_exceeded"

_POSITIVE = {"1", "true", "yes", "y", "mutated", "mut", "mutant", "positive", "pos", "high", "+",
             "msi-h", "msi-high", "tmb-h", "tmb-high", "altered", "present"}
_NEGATIVE = {"0", "false", "no", "n", "wild-type", "wildtype", "wt", "wild type", "negative", "neg",
             "low", "-", "mss", "msi-l", "tmb-l", "tmb-low", "unaltered", "absent"}
_ROMAN = {"0": 0, "I": 1, "II": 2, "III": 3, "IV": 4}
_STAGE_RE = re.compile(r"^(?:STAGE\s*)?(0|I{1,3}|IV|[1-4])(?:[A-C][1-3]?)?$")


def _shown(ids: list, limit: int = 10) -> str:
    """At most ``limit`` ids, with a count of the rest, for error messages."""
    head = ", ".join(map(str, ids[:limit]))
    return head + (f" … (+{len(ids) - limit} more)" if len(ids) > limit else "")


def read_table(source: str | Path | pd.DataFrame, what: str = "table") -> tuple[pd.DataFrame, str]:
    """A DataFrame from CSV/TSV/Parquet (or a DataFrame passed through) and its name for errors.

    Id columns (``patient_id``, ``slide_id``) are read as text, so ``007`` stays ``007``.
    """
    if isinstance(source, pd.DataFrame):
        return source.copy(), f"<{what} DataFrame>"
    path = Path(source)
    if not path.is_file():
        if path.is_dir():
            raise InputDataError(f"{path}: is a directory, expected a {what} file")
        raise InputDataError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    ids_as_text = {c: str for c in ID_COLUMNS}
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".tsv", ".txt"):
            df = pd.read_csv(path, sep="\t", dtype=ids_as_text)
        else:
            df = pd.read_csv(path, dtype=ids_as_text)
    except Exception as exc:  # pyarrow / csv parser errors vary; name the file once
        raise InputDataError(f"{path}: cannot read {what}: {exc}") from exc
    return df, str(path)


def _ids_as_text(col: pd.Series) -> pd.Series:
    """Ids as strings; integral floats (ints that went through NaN) lose their ``.0``."""
    if pd.api.types.is_float_dtype(col):
        vals = col.to_numpy(dtype=float)
        ok = np.isfinite(vals)
        if ok.all() and np.array_equal(vals, np.round(vals)):
            return pd.Series(vals.astype(np.int64).astype(str), index=col.index, name=col.name)
    return col.astype(str)


def _require_columns(df: pd.DataFrame, cols: tuple[str, ...] | list[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{name}: missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, df.columns[:20]))}"
        )


def _check_unique(df: pd.DataFrame, col: str, name: str) -> None:
    dup = df[col][df[col].duplicated(keep=False)]
    if len(dup):
        ids = sorted(set(dup.astype(str)))
        raise InputDataError(f"{name}: {len(ids)} duplicate {col}(s): {_shown(ids)}")


# What virtime's feature tables contain (virtime.features: partials.METRICS, pair_columns,
# contexture), kept here as plain names so the statistics layer does not import numba.
_CHANNEL_METRICS = frozenset({"density", "mean", "entropy", "snr", "sharpness",
                              "tumour_density", "stroma_density", "infiltration_ratio"})
_PAIR_METRICS = {"|": "or_density", "&": "and_density"}
_OTHER_FEATURES = frozenset({"tumour.area_fraction"})
#: Feature columns holding categories; analysed as one 0/1 indicator per category.
CATEGORICAL_FEATURES = frozenset({"immune.phenotype"})
# Category labels that mean "undefined on this slide" (missing, not a category of its own).
_MISSING_CATEGORIES = frozenset({"", "nan", "na", "none", "undetermined"})
_MAX_CATEGORIES = 20
# Columns virtime writes that describe the slide rather than its biology: never analysed.
_NON_FEATURE_PREFIXES = ("tissue.", "qc.")


def is_known_feature(name: str) -> bool:
    """Whether ``name`` is a feature virtime computes: ``<protein channel>.<metric>``, a channel
    pair's ``A|B.or_density`` / ``A&B.and_density``, ``tumour.area_fraction``, a categorical
    feature (``immune.phenotype``) or a cell feature (``cells.cd8_t.density``, ...)."""
    from virtime.channels import PROTEIN_CHANNELS

    if name in _OTHER_FEATURES or name in CATEGORICAL_FEATURES:
        return True
    if name.startswith("cells."):  # cell-level features of virtime.cells (#19)
        from virtime.cells.features import is_cell_feature

        return is_cell_feature(name)
    channel, _, metric = name.rpartition(".")
    if channel in PROTEIN_CHANNELS:
        return metric in _CHANNEL_METRICS
    for op, pair_metric in _PAIR_METRICS.items():
        a, sep, b = channel.partition(op)
        if sep and metric == pair_metric:
            return a in PROTEIN_CHANNELS and b in PROTEIN_CHANNELS
    return False


def is_control_feature(name: str) -> bool:
    """Whether ``name`` is a background channel's feature (``TRITC.density``, ``Cy5.mean`` …),
    analysed only as a negative control."""
    channel, _, metric = name.rpartition(".")
    return channel in CONTROL_CHANNELS and metric in _CHANNEL_METRICS


def _qc_flagged(df: pd.DataFrame) -> np.ndarray:
    """Rows whose :data:`QC_FLAG` is true (bool, 0/1 or "True"/"False" text after a CSV)."""
    if QC_FLAG not in df.columns:
        return np.zeros(len(df), dtype=bool)
    text = df[QC_FLAG].astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).fillna(False).to_numpy(dtype=bool)


def feature_columns(df: pd.DataFrame, features: list[str] | tuple[str, ...] | None = None
                    ) -> list[str]:
    """The feature columns of ``df``: ``features`` if given, else every known virtime feature.

    Other columns with a dot in their name (``age.years``, ``FOO.density``) are not analysed —
    testing them would dilute the FDR — and are named in one warning; ``tissue.*`` and ``qc.*``
    (slide descriptors) are left out silently.
    """
    if features is not None:
        return [c for c in features if c in df.columns]
    cols = [c for c in df.columns if isinstance(c, str) and c not in ID_COLUMNS]
    known = [c for c in cols if is_known_feature(c)]
    ignored = [c for c in cols if "." in c and c not in known and not is_control_feature(c)
               and not c.startswith(_NON_FEATURE_PREFIXES)]
    if ignored:
        warnings.warn(
            f"{len(ignored)} column(s) are not virtime features and are not analysed: "
            f"{_shown(ignored, 5)} (name them explicitly, e.g. --feature-columns, to analyse them)",
            StatisticalWarning, stacklevel=3)
    return known


def _indicators(df: pd.DataFrame, col: str, name: str) -> tuple[pd.DataFrame, list[str]]:
    """One 0/1 column ``<col>=<category>`` per category; NaN where the category is undefined."""
    text = df[col].astype("string").str.strip()
    missing = text.isna() | text.str.lower().isin(_MISSING_CATEGORIES).fillna(True)
    cats = sorted(set(text[~missing].astype(str)))
    if len(cats) > _MAX_CATEGORIES:
        warnings.warn(f"{name}: categorical feature {col!r} has {len(cats)} categories (more "
                      f"than {_MAX_CATEGORIES}); not analysed", StatisticalWarning, stacklevel=4)
        return pd.DataFrame(index=df.index), []
    out = {}
    for cat in cats:
        v = (text == cat).astype(float).to_numpy()
        v[missing.to_numpy()] = np.nan
        out[f"{col}={cat}"] = v
    return pd.DataFrame(out, index=df.index), list(out)


def validate_features(source: str | Path | pd.DataFrame,
                      features: list[str] | tuple[str, ...] | None = None, *,
                      keep_qc_failed: bool = False) -> pd.DataFrame:
    """A features table ready for the statistics: ids present and unique, features numeric.

    ``source`` is a table in memory or a CSV/Parquet file (a virtime features table, e.g. from
    :func:`virtime.merge_features`; :func:`virtime.read_features` reads one as it is).

    ``features`` names the columns to analyse (default: every known virtime feature, see
    :func:`feature_columns`). A categorical feature (``immune.phenotype``, or any non-numeric
    column named in ``features``) becomes one 0/1 column ``<name>=<category>`` per category
    (NaN where undefined), so a patient's value is the share of their slides in that category.
    NaN means "undefined on this slide" and is handled per test; an all-NaN feature is left out
    with a warning; ±inf is an error. Returns the table with ids as strings and only id +
    feature columns (``patient_id`` may be absent; :func:`join_features` then maps slides), plus
    the background channels' features (negative controls, :func:`is_control_feature`).

    Slides flagged :data:`QC_FLAG` (failed tiles over too much tissue) are left out unless
    ``keep_qc_failed``; their ids are in ``out.attrs["qc_excluded"]`` and one log line says so.
    """
    df, name = read_table(source, "features")
    flagged = _qc_flagged(df)
    qc_excluded: list[str] = []
    if flagged.any() and not keep_qc_failed:
        id_col = "slide_id" if "slide_id" in df.columns else "patient_id"
        qc_excluded = [str(v) for v in df.loc[flagged, id_col]] if id_col in df.columns else []
        log.info("%s: %d slide(s) flagged %s left out", name, int(flagged.sum()), QC_FLAG)
        df = df[~flagged].reset_index(drop=True)
        if df.empty:
            raise InputDataError(f"{name}: every slide is flagged {QC_FLAG} (failed tiles cover "
                                 "too much tissue); --keep-qc-failed analyses them anyway")
    if "patient_id" not in df.columns and "slide_id" not in df.columns:
        _require_columns(df, ("patient_id",), name)
    if features is not None:
        absent = [c for c in features if c not in df.columns]
        if absent:
            raise InputDataError(f"{name}: requested feature column(s) not in the table: "
                                 f"{_shown(list(absent), 5)}")
    feats = feature_columns(df, features)
    if not feats:
        raise InputDataError(f"{name}: no feature columns named '<channel>.<metric>'")
    feats += [c for c in df.columns if isinstance(c, str)
              and (is_control_feature(c) or c in COVARIATE_FEATURES)
              and c not in feats and pd.api.types.is_numeric_dtype(df[c])]
    for col in ID_COLUMNS:
        if col in df.columns:
            if df[col].isna().any():
                raise InputDataError(f"{name}: {int(df[col].isna().sum())} rows without {col}")
            df[col] = _ids_as_text(df[col])
    if "slide_id" in df.columns:
        _check_unique(df, "slide_id", name)
    elif df["patient_id"].duplicated().any():
        raise InputDataError(f"{name}: several rows per patient_id but no slide_id column")
    numeric: list[str] = []
    parts = [df[[c for c in ID_COLUMNS if c in df.columns]]]
    for col in feats:
        series = df[col]
        if pd.api.types.is_bool_dtype(series):
            series = series.astype(float)
        if pd.api.types.is_numeric_dtype(series):
            parts.append(series.astype(float).to_frame(col))
            numeric.append(col)
        elif col in CATEGORICAL_FEATURES or features is not None:
            ind, names = _indicators(df, col, name)
            parts.append(ind)
            numeric.extend(names)
        else:
            raise InputDataError(f"{name}: non-numeric feature column {col!r}")
    out = pd.concat(parts, axis=1)
    values = out[numeric].to_numpy(dtype=np.float64)
    inf = np.isinf(values)
    if inf.any():
        cols = [numeric[j] for j in np.flatnonzero(inf.any(axis=0))]
        row_ids = out["slide_id" if "slide_id" in out.columns else "patient_id"]
        raise InputDataError(
            f"{name}: {int(inf.sum())} infinite feature value(s) in column(s) {_shown(cols)} "
            f"(rows {_shown(list(row_ids[inf.any(axis=1)]))})")
    empty = [numeric[j] for j in np.flatnonzero(np.isnan(values).all(axis=0))]
    # A background channel that is never positive has no snr anywhere: unremarkable for a
    # negative control, so only the analysed features' losses are warned about.
    lost = [c for c in empty if not is_control_feature(c)]
    if lost:
        warnings.warn(f"{name}: {len(lost)} feature(s) undefined (NaN) on every slide, left "
                      f"out: {_shown(lost, 5)}", StatisticalWarning, stacklevel=2)
    if len(lost) < len(empty):
        log.info("%s: negative-control feature(s) undefined on every slide, not tested: %s",
                 name, _shown([c for c in empty if c not in lost], 5))
    if empty:
        out = out.drop(columns=empty)
    if len(empty) == len(numeric):
        raise InputDataError(f"{name}: every feature is NaN on every slide")
    partial = int(np.isnan(values).any(axis=0).sum()) - len(empty)
    if partial:
        log.info("%s: %d feature(s) undefined on some slides; each test uses the patients where "
                 "the feature is defined", name, partial)
    out = out.reset_index(drop=True)
    out.attrs["qc_excluded"] = qc_excluded
    return out


def aggregate_slides(features: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One row per patient: slides of the same patient combined by ``how`` (mean, median, max).

    ``features`` is a table from :func:`validate_features` (ids + feature columns); NaN slides of a
    feature are skipped, so a patient is NaN only where none of their slides defines it.
    """
    if how not in ("mean", "median", "max", "min"):
        raise InputDataError(f"unknown aggregation {how!r}; use mean, median, max or min")
    feats = [c for c in features.columns if c not in ID_COLUMNS and c != "n_slides"]
    out = features.groupby("patient_id", sort=False)[feats].agg(how)  # NaN skipped per feature
    out.insert(0, "n_slides", features.groupby("patient_id", sort=False).size())
    return out.reset_index()


def parse_stage(values: pd.Series, name: str = "clinical") -> pd.Series:
    """Stage labels (I–IV with optional A/B/C sub-stage, 0–4, 'Stage IIIA') as floats 0–4.

    Missing values stay NaN; any other label is an error listing the unknown labels.
    """
    out = np.full(len(values), np.nan)
    unknown: set[str] = set()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, (int, float, np.integer, np.floating)) and float(v) in (0, 1, 2, 3, 4):
            out[i] = float(v)
            continue
        text = str(v).strip().upper().replace("_", " ")
        if text in ("", "NA", "NAN", "UNKNOWN"):
            continue
        m = _STAGE_RE.match(text)
        if not m:
            unknown.add(str(v))
            continue
        token = m.group(1)
        out[i] = float(_ROMAN[token]) if token in _ROMAN else float(token)
    if unknown:
        raise InputDataError(
            f"{name}: unknown stage label(s) {_shown(sorted(unknown))}; expected I–IV (optionally "
            "with A/B/C) or 0–4"
        )
    return pd.Series(out, index=values.index, name=values.name)


def _binary_codes(col: pd.Series, name: str) -> pd.Series | None:
    """0/1 floats if ``col`` has exactly two classes we can orient; None if it is not binary."""
    present = col.dropna()
    uniq = pd.unique(present)
    if len(uniq) > 2:
        return None
    if len(uniq) < 2:
        raise InputDataError(
            f"{name}: biomarker column {col.name!r} has fewer than two classes "
            f"({_shown([str(u) for u in uniq], 5)})"
        )
    if pd.api.types.is_bool_dtype(present) or pd.api.types.is_numeric_dtype(present):
        vals = sorted(float(u) for u in uniq)
        if vals != [0.0, 1.0]:
            return None  # two-valued numeric other than 0/1: treat as continuous
        return col.astype(float)
    lower = {u: str(u).strip().lower() for u in uniq}
    pos = [u for u, s in lower.items() if s in _POSITIVE]
    neg = [u for u, s in lower.items() if s in _NEGATIVE]
    if len(pos) != 1 or len(neg) != 1:
        raise InputDataError(
            f"{name}: cannot tell the positive class of biomarker {col.name!r} from labels "
            f"{sorted(map(str, uniq))}; code it 0/1 (1 = mutated/high/positive)"
        )
    return col.map({pos[0]: 1.0, neg[0]: 0.0}).astype(float)


@dataclass(frozen=True)
class ClinicalTable:
    """A validated clinical table and the kind of each clinical attribute column."""

    table: pd.DataFrame
    attributes: dict[str, AttributeKind]
    source: str = "<clinical>"

    @property
    def has_survival(self) -> bool:
        """Whether ``os_time`` and ``os_event`` are present."""
        return all(c in self.table.columns for c in SURVIVAL_COLUMNS)


def validate_survival(time: np.ndarray, event: np.ndarray, name: str = "survival") -> None:
    """Raises unless durations are finite and ≥ 0 and events are 0/1 (lifelines does not check)."""
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=float)
    if t.shape != e.shape:
        raise InputDataError(f"{name}: {t.size} durations but {e.size} events")
    if not np.isfinite(t).all():
        raise InputDataError(f"{name}: {int((~np.isfinite(t)).sum())} non-finite survival time(s)")
    if (t < 0).any():
        raise InputDataError(f"{name}: {int((t < 0).sum())} negative survival time(s)")
    bad = ~np.isin(e, (0.0, 1.0))
    if bad.any():
        raise InputDataError(
            f"{name}: survival events must be 0/1; found {sorted(set(e[bad].tolist()))[:5]}"
        )


def load_clinical(
    source: str | Path | pd.DataFrame, *, exclude: tuple[str, ...] = ()
) -> ClinicalTable:
    """Reads and validates the clinical table; classifies every other column as an attribute.

    Required: ``patient_id``, ``cancer_type``, ``subtype``; optional ``stage``, ``os_time`` and
    ``os_event`` (missing survival must be missing in both), and biomarker columns, binary (0/1,
    True/False, mutated/wild-type, high/low …) or continuous. ``exclude`` names columns to ignore.
    Site, scanner, batch and age columns (:data:`COVARIATE_COLUMNS`) are kept as covariates for
    adjustment, not tested as attributes.
    """
    df, name = read_table(source, "clinical")
    _require_columns(df, CLINICAL_REQUIRED, name)
    if df["patient_id"].isna().any():
        raise InputDataError(f"{name}: {int(df['patient_id'].isna().sum())} rows without patient_id")
    df["patient_id"] = _ids_as_text(df["patient_id"])
    _check_unique(df, "patient_id", name)
    for col in ("cancer_type", "subtype"):
        if df[col].isna().any():
            raise InputDataError(f"{name}: {int(df[col].isna().sum())} patients without {col}")
        df[col] = df[col].astype(str)
    has_t, has_e = (c in df.columns for c in SURVIVAL_COLUMNS)
    if has_t != has_e:
        raise InputDataError(f"{name}: os_time and os_event must come together")
    if has_t:
        t = pd.to_numeric(df["os_time"], errors="coerce")
        e = pd.to_numeric(df["os_event"], errors="coerce")
        unparsable = (t.isna() & df["os_time"].notna()) | (e.isna() & df["os_event"].notna())
        if unparsable.any():
            raise InputDataError(f"{name}: {int(unparsable.sum())} non-numeric os_time/os_event")
        if (t.isna() != e.isna()).any():
            ids = list(df["patient_id"][t.isna() != e.isna()])
            raise InputDataError(f"{name}: os_time and os_event missing unequally for {_shown(ids)}")
        known = t.notna()
        validate_survival(t[known].to_numpy(), e[known].to_numpy(), name)
        df["os_time"], df["os_event"] = t.astype(float), e.astype(float)
    attributes: dict[str, AttributeKind] = {}
    if "stage" in df.columns and "stage" not in exclude:
        df["stage"] = parse_stage(df["stage"], name)
        attributes["stage"] = "stage"
    for col in df.columns:
        if col in COVARIATE_COLUMNS and col not in exclude and pd.api.types.is_numeric_dtype(
                df[col]):
            df[col] = df[col].astype(float)
        if col in _CLINICAL_RESERVED or col == "stage" or col in exclude or col in COVARIATE_COLUMNS:
            continue
        classes = pd.unique(df[col].dropna())
        if len(classes) < 2:  # nothing to test against (a small cohort, a constant column)
            warnings.warn(f"{name}: biomarker column {col!r} has fewer than two classes "
                          f"({_shown([str(c) for c in classes], 5)}); it is not analysed",
                          StatisticalWarning, stacklevel=2)
            df = df.drop(columns=[col])
            continue
        coded = _binary_codes(df[col], name)
        if coded is not None:
            df[col] = coded
            attributes[col] = "binary"
        elif pd.api.types.is_numeric_dtype(df[col]):
            vals = df[col].to_numpy(dtype=float)
            if np.isinf(vals).any():
                raise InputDataError(f"{name}: infinite values in {col!r}")
            df[col] = df[col].astype(float)
            attributes[col] = "continuous"
        else:
            raise InputDataError(
                f"{name}: column {col!r} is neither binary nor numeric "
                f"(e.g. {list(pd.unique(df[col].dropna()))[:4]}); exclude it or recode it"
            )
    return ClinicalTable(df.reset_index(drop=True), attributes, name)


@dataclass(frozen=True)
class Cohort:
    """Patient-level features joined with the clinical table: the input of every analysis.

    ``data`` has one row per patient with ``patient_id``, ``cancer_type``, ``subtype``, the
    attribute and survival columns and the features; ``features_only`` / ``clinical_only`` list
    the patients the join lost; ``controls`` the background channels' features (negative
    controls, not in ``features``); ``qc_excluded`` the QC-flagged slides left out.
    """

    data: pd.DataFrame
    features: list[str]
    attributes: dict[str, AttributeKind]
    features_only: list[str] = field(default_factory=list)
    clinical_only: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    qc_excluded: list[str] = field(default_factory=list)

    @property
    def site_column(self) -> str | None:
        """The clinical column naming each patient's site (first of :data:`SITE_COLUMNS`)."""
        return next((c for c in SITE_COLUMNS if c in self.data.columns), None)

    @property
    def summary(self) -> pd.DataFrame:
        """Patients and subtypes per cancer type."""
        g = self.data.groupby("cancer_type")
        out = pd.DataFrame({"patients": g.size(), "subtypes": g["subtype"].nunique()})
        if "os_event" in self.data.columns:
            out["events"] = g["os_event"].sum(min_count=1)
        return out.sort_values("patients", ascending=False)

    @property
    def has_survival(self) -> bool:
        """Whether survival columns are present."""
        return all(c in self.data.columns for c in SURVIVAL_COLUMNS)


def _mismatch_hint(a: list[str], b: list[str]) -> str:
    """A hint when the two id sets differ only in leading zeros or surrounding spaces."""
    def norm(x: str) -> str:
        return x.strip().lstrip("0") or "0"

    nb = {norm(x): x for x in b}
    pairs = [(x, nb[norm(x)]) for x in a if norm(x) in nb]
    if not pairs:
        return ""
    ex = ", ".join(f"{x!r} vs {y!r}" for x, y in pairs[:3])
    return (f"; {len(pairs)} of them differ only in leading zeros or spaces (e.g. {ex}): "
            "write the ids the same way in both tables")


def _join_hint(features: pd.DataFrame, clinical: pd.DataFrame) -> str:
    """The column that would join a per-slide features table (``features --merge``: slide ids,
    no patient ids) to a clinical table without ``slide_id``, for the error line; a slide id that
    begins with a patient id is shown as the example."""
    if "patient_id" in features.columns or "slide_id" in clinical.columns:
        return ""
    patients = set(clinical["patient_id"])
    example = next(((sid, sid[:k]) for sid in sorted(features["slide_id"])
                    for k in range(len(sid) - 1, 0, -1) if sid[:k] in patients), None)
    seen = f" (slide {example[0]!r} looks like patient {example[1]!r})" if example else ""
    return (f"; the features have slide_ids only{seen}: add a slide_id column to the clinical "
            "table (the slide of each patient), or a patient_id column to the features")


def _patients_of_slides(feats: pd.DataFrame, clin: ClinicalTable) -> pd.DataFrame:
    """Adds ``patient_id`` to a slide table without one: from the clinical ``slide_id`` column,
    else each slide is its own patient (``patient_id = slide_id``), as ``features --merge``
    tables of one slide per patient are joined."""
    if "slide_id" in clin.table.columns:
        known = clin.table.dropna(subset=["slide_id"])
        mapping = dict(zip(_ids_as_text(known["slide_id"]), known["patient_id"]))
        pid = feats["slide_id"].map(mapping)
        unmatched = list(feats["slide_id"][pid.isna()])
        if unmatched:
            log.warning("features have no patient_id and %d slide(s) are not in the clinical "
                        "slide_id column: %s", len(unmatched), _shown(unmatched, 5))
        feats = feats[pid.notna()].copy()
        feats.insert(1, "patient_id", pid[pid.notna()].astype(str))
        return feats
    log.warning("features table has no patient_id: each slide is taken as its own patient "
                "(patient_id = slide_id); add a patient_id column (or a slide_id column to the "
                "clinical table) for patients with several slides")
    feats = feats.copy()
    feats.insert(1, "patient_id", feats["slide_id"])
    return feats


def join_features(
    features: str | Path | pd.DataFrame,
    clinical: str | Path | pd.DataFrame | ClinicalTable,
    *,
    aggregate: str = "mean",
    strict: bool = False,
    feature_names: list[str] | tuple[str, ...] | None = None,
    keep_qc_failed: bool = False,
    covariates: tuple[str, ...] | list[str] = (),
) -> Cohort:
    """Validates both tables, aggregates slides per patient and joins them on ``patient_id``.

    Patients present in only one table are logged (how many and a few ids, with a hint when
    ids differ only in leading zeros) and recorded on the cohort; ``strict=True`` makes any
    loss an error. An empty join is always an error. ``feature_names`` restricts the analysis
    to those columns (default: every known virtime feature, see :func:`feature_columns`). A
    features table without ``patient_id`` is mapped to patients by the clinical ``slide_id``
    column when there is one, else each slide is its own patient. Slides flagged
    :data:`QC_FLAG` are left out unless ``keep_qc_failed`` (listed in ``Cohort.qc_excluded``).
    ``covariates`` names clinical columns used for adjustment: they are not tested as attributes.
    """
    feats_df = validate_features(features, feature_names, keep_qc_failed=keep_qc_failed)
    qc_excluded = list(feats_df.attrs.get("qc_excluded", []))
    clin = clinical if isinstance(clinical, ClinicalTable) else load_clinical(
        clinical, exclude=tuple(covariates))
    as_given = feats_df
    if "patient_id" not in feats_df.columns:
        feats_df = _patients_of_slides(feats_df, clin)
    per_patient = aggregate_slides(feats_df, aggregate)
    fnames = [c for c in per_patient.columns if c not in ("patient_id", "n_slides")
              and not is_control_feature(c) and c not in COVARIATE_FEATURES]
    controls = [c for c in per_patient.columns if is_control_feature(c)]
    f_ids, c_ids = set(per_patient["patient_id"]), set(clin.table["patient_id"])
    features_only, clinical_only = sorted(f_ids - c_ids), sorted(c_ids - f_ids)
    for ids, where, other in ((features_only, "features", "clinical"),
                              (clinical_only, "clinical", "features")):
        if ids:
            msg = (f"join loses {len(ids)} patient(s) present in {where} but not in {other}: "
                   f"{_shown(ids, 5)}")
            msg += _mismatch_hint(ids, clinical_only if where == "features" else features_only)
            if strict:
                raise InputDataError(msg)
            log.warning(msg)
    data = clin.table.merge(per_patient, on="patient_id", how="inner", validate="one_to_one")
    if data.empty:
        shown = (f"{len(f_ids)} patients, e.g. {_shown(sorted(f_ids), 3)}" if f_ids else
                 f"{len(as_given)} slides, e.g. {_shown(sorted(as_given['slide_id']), 3)}, none "
                 "in the clinical slide_id column, e.g. "
                 f"{_shown(sorted(clin.table['slide_id'].dropna().astype(str)), 3)}")
        raise InputDataError(
            f"no patient_id in common between features ({shown}) and clinical {clin.source} "
            f"({len(c_ids)} patients, e.g. {_shown(sorted(c_ids), 3)})"
            + (_mismatch_hint(sorted(f_ids), sorted(c_ids)) or _join_hint(as_given, clin.table))
        )
    attributes = {a: k for a, k in clin.attributes.items() if a not in covariates}
    return Cohort(data, fnames, attributes, features_only, clinical_only, controls, qc_excluded)
