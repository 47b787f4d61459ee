"""Loading and validating the cohort tables: slide features and the clinical table.

Every downstream analysis trusts these checks, so each problem gets one clear error naming the file
and what is wrong (missing columns, duplicate ids, bad event codes, negative or non-finite times,
unknown stage labels, NaN features). A join that loses patients is logged with their ids and kept
in the :class:`Cohort`, so nobody silently analyses a smaller cohort than they think.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from virtime.errors import InputDataError

__all__ = [
    "CLINICAL_REQUIRED",
    "ID_COLUMNS",
    "SURVIVAL_COLUMNS",
    "AttributeKind",
    "ClinicalTable",
    "Cohort",
    "aggregate_slides",
    "join_features",
    "load_clinical",
    "load_features",
    "parse_stage",
    "read_table",
    "validate_survival",
]

log = logging.getLogger(__name__)

AttributeKind = Literal["binary", "continuous", "stage"]

ID_COLUMNS = ("slide_id", "patient_id")
CLINICAL_REQUIRED = ("patient_id", "cancer_type", "subtype")
SURVIVAL_COLUMNS = ("os_time", "os_event")
_CLINICAL_RESERVED = set(CLINICAL_REQUIRED) | set(SURVIVAL_COLUMNS) | {"slide_id"}

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
    """A DataFrame from CSV/TSV/Parquet (or a DataFrame passed through) and its name for errors."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), f"<{what} DataFrame>"
    path = Path(source)
    if not path.is_file():
        raise InputDataError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".tsv", ".txt"):
            df = pd.read_csv(path, sep="\t")
        else:
            df = pd.read_csv(path)
    except Exception as exc:  # pyarrow / csv parser errors vary; name the file once
        raise InputDataError(f"{path}: cannot read {what}: {exc}") from exc
    return df, str(path)


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


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Columns named ``<channel>.<metric>`` (anything with a dot that is not an id column)."""
    return [c for c in df.columns if isinstance(c, str) and "." in c and c not in ID_COLUMNS]


def load_features(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Reads and validates a features table: ids present and unique, features numeric and finite.

    Returns the table with ``patient_id`` as string and only id + feature columns.
    """
    df, name = read_table(source, "features")
    _require_columns(df, ("patient_id",), name)
    feats = feature_columns(df)
    if not feats:
        raise InputDataError(f"{name}: no feature columns named '<channel>.<metric>'")
    if "slide_id" in df.columns:
        _check_unique(df, "slide_id", name)
    elif df["patient_id"].duplicated().any():
        raise InputDataError(f"{name}: several rows per patient_id but no slide_id column")
    if df["patient_id"].isna().any():
        raise InputDataError(f"{name}: {int(df['patient_id'].isna().sum())} rows without patient_id")
    df["patient_id"] = df["patient_id"].astype(str)
    bad_type = [c for c in feats if not pd.api.types.is_numeric_dtype(df[c])]
    if bad_type:
        raise InputDataError(f"{name}: non-numeric feature column(s) {_shown(bad_type)}")
    values = df[feats].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        cols = [feats[j] for j in np.flatnonzero(bad.any(axis=0))]
        row_ids = df["slide_id" if "slide_id" in df.columns else "patient_id"].astype(str)
        rows = list(row_ids[bad.any(axis=1)])
        raise InputDataError(
            f"{name}: {int(bad.sum())} NaN/inf feature value(s) in column(s) {_shown(cols)} "
            f"(rows {_shown(rows)})"
        )
    keep = [c for c in ID_COLUMNS if c in df.columns] + feats
    return df[keep].reset_index(drop=True)


def aggregate_slides(features: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One row per patient: slides of the same patient combined by ``how`` (mean, median, max)."""
    if how not in ("mean", "median", "max", "min"):
        raise InputDataError(f"unknown aggregation {how!r}; use mean, median, max or min")
    feats = feature_columns(features)
    out = features.groupby("patient_id", sort=False)[feats].agg(how)
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
            f"{name}: biomarker column {col.name!r} has fewer than two classes ({list(uniq)})"
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
    """
    df, name = read_table(source, "clinical")
    _require_columns(df, CLINICAL_REQUIRED, name)
    if df["patient_id"].isna().any():
        raise InputDataError(f"{name}: {int(df['patient_id'].isna().sum())} rows without patient_id")
    df["patient_id"] = df["patient_id"].astype(str)
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
        if col in _CLINICAL_RESERVED or col == "stage" or col in exclude:
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
    the patients the join lost.
    """

    data: pd.DataFrame
    features: list[str]
    attributes: dict[str, AttributeKind]
    features_only: list[str] = field(default_factory=list)
    clinical_only: list[str] = field(default_factory=list)

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


def join_features(
    features: str | Path | pd.DataFrame,
    clinical: str | Path | pd.DataFrame | ClinicalTable,
    *,
    aggregate: str = "mean",
    strict: bool = False,
) -> Cohort:
    """Validates both tables, aggregates slides per patient and joins them on ``patient_id``.

    Patients present in only one table are logged (how many and which) and recorded on the
    cohort; ``strict=True`` makes any loss an error. An empty join is always an error.
    """
    feats_df = load_features(features)
    clin = clinical if isinstance(clinical, ClinicalTable) else load_clinical(clinical)
    per_patient = aggregate_slides(feats_df, aggregate)
    fnames = feature_columns(per_patient)
    f_ids, c_ids = set(per_patient["patient_id"]), set(clin.table["patient_id"])
    features_only, clinical_only = sorted(f_ids - c_ids), sorted(c_ids - f_ids)
    for ids, where, other in ((features_only, "features", "clinical"),
                              (clinical_only, "clinical", "features")):
        if ids:
            msg = f"join loses {len(ids)} patient(s) present in {where} but not in {other}: {_shown(ids)}"
            if strict:
                raise InputDataError(msg)
            log.warning(msg)
    data = clin.table.merge(per_patient, on="patient_id", how="inner", validate="one_to_one")
    if data.empty:
        raise InputDataError(
            f"no patient_id in common between features ({len(f_ids)} patients) and clinical "
            f"{clin.source} ({len(c_ids)} patients)"
        )
    return Cohort(data, fnames, dict(clin.attributes), features_only, clinical_only)
