"""The shapes of the tools' results, as TypedDicts: the SDK publishes them as each tool's output
schema (so an agent knows what comes back) and checks every result against them.

Every result carries ``provenance``; ``truncated`` appears when the size limit cut a list.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict  # pydantic needs these before Python 3.12

__all__ = ["AssociationResult", "FeaturesResult", "MergeResult", "Provenance", "ReportResult",
           "SlideInfoResult", "SlideListResult", "SurvivalResult", "TranslateResult",
           "ViewResult"]


class Provenance(TypedDict):
    """What produced a result: virtime version, translator sha256, settings, input sha256s."""

    virtime_version: str
    model_hash: str
    settings: dict[str, Any]
    input_sha256: dict[str, str]


class _Stamped(TypedDict):
    provenance: Provenance
    truncated: NotRequired[bool]


class SlideListResult(_Stamped):
    folder: str
    count: int
    slides: list[dict[str, Any]]


class SlideInfoResult(_Stamped):
    path: str
    vendor: str
    mpp: float
    mpp_xy: list[float] | None
    objective_power: float | None
    levels: list[dict[str, Any]]
    tissue_fraction: float
    tiling: dict[str, Any]


class TranslateResult(_Stamped):
    output_folder: str
    slide_id: str
    skipped_already_done: bool
    resumed: bool
    summary: dict[str, Any]
    slides_left_in_budget: int
    resources: list[str]
    note: str


class ViewResult(_Stamped):
    url: str
    slide_folder: str


class FeaturesResult(_Stamped):
    slide_folder: str
    features_file: str
    n_features: int
    densities: dict[str, float | None]


class MergeResult(_Stamped):
    table: str
    slides: int
    columns: int
    slide_ids: list[str]


class AssociationResult(_Stamped):
    table: str
    tests: int
    significant: int
    excluded_undefined_p: int
    top: list[dict[str, Any]]


class SurvivalResult(_Stamped):
    table: str
    rows: int
    failed_fits: int
    skipped_groups: int
    top: list[dict[str, Any]]


class ReportResult(_Stamped):
    report: str
    resource: str | None
    survival_included: bool
