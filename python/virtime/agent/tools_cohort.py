"""MCP tools on features and cohorts: ``slide_features``, ``merge_features``, ``associate``,
``survival`` and ``report``.

Each reads only under the ``--allow`` roots and ``--output``, writes only under ``--output``,
calls the same public functions as the CLI commands of the same name, and returns the top rows
of its table with the path of the full one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from virtime.agent.limits import table_rows
from virtime.agent.results import (
    AssociationResult,
    FeaturesResult,
    MergeResult,
    ReportResult,
    SurvivalResult,
)
from virtime.agent.state import AgentState
from virtime.agent.tool_errors import tool_errors

__all__ = ["register_cohort_tools"]

Level = Literal["pan-cancer", "cancer_type", "subtype"]
_FEATURES_DOC = "features table (Parquet/CSV) under an --allow root or --output"
_CLINICAL_DOC = "clinical table (CSV/Parquet): patient_id, cancer_type, subtype, attributes"
_REPORT_DOC = "report .html, relative to --output"
_OUTPUT_DOC = "table to write, relative to --output (.parquet, .csv or .tsv)"


def _output(state: AgentState, name: str) -> Path:
    path = state.guard.writable(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _cohort(state: AgentState, features: str, clinical: str, aggregate: str,
            feature_columns: list[str] | None) -> tuple[Any, list[Path]]:
    from virtime.stats import join_features

    f, c = state.guard.readable(features), state.guard.readable(clinical)
    return join_features(f, c, aggregate=aggregate, feature_names=feature_columns), [f, c]


def register_cohort_tools(app: Any, state: AgentState) -> None:
    """Adds the features and statistics tools to ``app`` (an ``MCPServer``)."""
    top = state.config.max_rows

    @app.tool()
    @tool_errors
    def slide_features(
        slide_folder: Annotated[str, Field(
            description="a translated slide's folder under --output")],
        bin_um: Annotated[float, Field(gt=0)] = 64.0,
        threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5,
        max_failed_share: Annotated[float, Field(ge=0, le=1)] = 0.05,
    ) -> FeaturesResult:
        """Recomputes a translated slide's features (densities, spatial metrics) from its
        virtual mIF and writes features.parquet in its folder; returns the main values."""
        from virtime.features import features_from_outputs
        from virtime.io import SlideFolder

        folder = state.guard.output_folder(slide_folder)
        settings = {"bin_um": bin_um, "threshold": threshold, "max_failed_share": max_failed_share}
        row = features_from_outputs(folder, **settings)
        dens = {k: v for k, v in row.items() if k.endswith(".density")}
        body = {"slide_folder": str(folder), "features_file": str(SlideFolder(folder).features_file),
                "n_features": len(row), "densities": table_rows(_one_row(dens), 1)[0]}
        return state.result(body, settings=settings, inputs=[folder])

    @app.tool()
    @tool_errors
    def merge_features(
        output_root: Annotated[str, Field(description="folder of translated slide folders")],
        output: Annotated[str, Field(description=_OUTPUT_DOC)] = "cohort_features.parquet",
    ) -> MergeResult:
        """Joins the features.parquet of every finished slide under a folder into one table."""
        import pandas as pd

        from virtime.features import merge_features as merge

        root = state.guard.readable(output_root, kind="folder")
        path = merge(root, _output(state, output))
        table = pd.read_parquet(path)
        body = {"table": str(path), "slides": len(table), "columns": len(table.columns),
                "slide_ids": [str(s) for s in table.get("slide_id", pd.Series())][:top]}
        return state.result(body, settings={}, inputs=[root])

    @app.tool()
    @tool_errors
    def associate(
        features: Annotated[str, Field(description=_FEATURES_DOC)],
        clinical: Annotated[str, Field(description=_CLINICAL_DOC)],
        output: Annotated[str, Field(description=_OUTPUT_DOC)] = "associations.parquet",
        levels: list[Level] | None = None,
        min_patients: Annotated[int, Field(ge=3)] = 20,
        min_per_class: Annotated[int, Field(ge=1)] = 5,
        correction: Literal["bh", "holm", "bonferroni"] = "bh",
        stage_test: Literal["spearman", "kruskal"] = "spearman",
        alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05,
        aggregate: Literal["mean", "median", "max", "min"] = "mean",
        feature_columns: list[str] | None = None,
    ) -> AssociationResult:
        """Feature × clinical-attribute associations (as `virtime associate`): the top rows by
        q, counts, and the path of the full table."""
        from virtime.stats import AssociationConfig
        from virtime.stats import associate as run
        from virtime.stats.io import features_model_hash, write_table

        cohort, inputs = _cohort(state, features, clinical, aggregate, feature_columns)
        settings = {"levels": list(levels or ("pan-cancer", "cancer_type", "subtype")),
                    "min_patients": min_patients, "min_per_class": min_per_class,
                    "correction": correction, "stage_test": stage_test, "alpha": alpha,
                    "aggregate": aggregate, "feature_columns": feature_columns}
        cfg = AssociationConfig(levels=tuple(settings["levels"]), min_patients=min_patients,
                                min_per_class=min_per_class, correction=correction,
                                stage_test=stage_test, alpha=alpha)
        res = run(cohort, cfg)
        model_hash = features_model_hash(inputs[0])
        path = write_table(res.summary, _output(state, output), model_hash=model_hash)
        ranked = res.summary.sort_values(["q", "p"], kind="mergesort", na_position="last")
        body = {"table": str(path), "tests": len(res.summary),
                "significant": int((res.summary["q"] < alpha).sum()),
                "excluded_undefined_p": res.excluded, "top": table_rows(ranked, top)}
        return state.result(body, settings=settings, inputs=inputs, model_hash=model_hash)

    @app.tool()
    @tool_errors
    def survival(
        features: Annotated[str, Field(description=_FEATURES_DOC)],
        clinical: Annotated[str, Field(description=_CLINICAL_DOC + ", os_time, os_event")],
        output: Annotated[str, Field(description=_OUTPUT_DOC)] = "survival.parquet",
        levels: list[Level] | None = None,
        split: Literal["median", "tertiles"] = "median",
        folds: Annotated[int, Field(ge=2)] = 5,
        penalizer: Annotated[float, Field(ge=0)] = 0.1,
        permutations: Annotated[int, Field(ge=0, le=10_000)] = 0,
        min_patients: Annotated[int, Field(ge=4)] = 30,
        min_events: Annotated[int, Field(ge=1)] = 10,
        signature: bool = True,
        seed: int = 0,
        aggregate: Literal["mean", "median", "max", "min"] = "mean",
        feature_columns: list[str] | None = None,
    ) -> SurvivalResult:
        """Log-rank and Cox per channel and the out-of-fold signature (as `virtime survival`):
        the top rows by log-rank p and the path of the full table."""
        from virtime.stats import SurvivalConfig, survival_analysis
        from virtime.stats.io import features_model_hash, write_table

        cohort, inputs = _cohort(state, features, clinical, aggregate, feature_columns)
        settings = {"levels": list(levels or ("pan-cancer", "cancer_type")), "split": split,
                    "folds": folds, "penalizer": penalizer, "permutations": permutations,
                    "min_patients": min_patients, "min_events": min_events,
                    "signature": signature, "seed": seed, "aggregate": aggregate,
                    "feature_columns": feature_columns}
        cfg = SurvivalConfig(levels=tuple(settings["levels"]), split=split, folds=folds,
                             signature_penalizer=penalizer, min_patients=min_patients,
                             min_events=min_events, signature=signature,
                             signature_permutations=permutations, seed=seed)
        res = survival_analysis(cohort, cfg)
        model_hash = features_model_hash(inputs[0])
        path = write_table(res.summary, _output(state, output), model_hash=model_hash)
        ranked = res.summary.sort_values("logrank_p", kind="mergesort", na_position="last")
        body = {"table": str(path), "rows": len(res.summary), "failed_fits": len(res.failures),
                "skipped_groups": len(res.skipped), "top": table_rows(ranked, top)}
        return state.result(body, settings=settings, inputs=inputs, model_hash=model_hash)

    @app.tool()
    @tool_errors
    def report(
        features: Annotated[str, Field(description=_FEATURES_DOC)],
        clinical: Annotated[str, Field(description=_CLINICAL_DOC)],
        output: Annotated[str, Field(description=_REPORT_DOC)] = "report.html",
        levels: list[Level] | None = None,
        min_patients: Annotated[int, Field(ge=3)] = 20,
        survival: bool = True,
        title: str = "virtime population report",
        aggregate: Literal["mean", "median", "max", "min"] = "mean",
    ) -> ReportResult:
        """The self-contained HTML report (cohort, spectrum, associations, survival), as
        `virtime report`; read it as the resource virtime://reports/<name>."""
        from virtime.report import write_report
        from virtime.stats import associate as run_associate
        from virtime.stats import survival_analysis
        from virtime.stats.io import features_model_hash

        if not output.lower().endswith(".html"):
            from virtime.errors import InvalidArgumentError

            raise InvalidArgumentError(f"{output}: the report must end in .html")
        cohort, inputs = _cohort(state, features, clinical, aggregate, None)
        lv = tuple(levels or ("pan-cancer", "cancer_type", "subtype"))
        assoc = run_associate(cohort, levels=lv, min_patients=min_patients)
        surv = survival_analysis(cohort) if survival and cohort.has_survival else None
        path = write_report(_output(state, output), cohort=cohort, associations=assoc,
                            survival=surv, title=title)
        rel = Path(path).relative_to(state.guard.out).as_posix()
        body = {"report": str(path),  # a resource when written at the top of --output
                "resource": None if "/" in rel else f"virtime://reports/{rel}",
                "survival_included": surv is not None}
        return state.result(body, settings={"levels": list(lv), "min_patients": min_patients,
                                            "survival": survival, "aggregate": aggregate},
                            inputs=inputs, model_hash=features_model_hash(inputs[0]))


def _one_row(values: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame([values])
