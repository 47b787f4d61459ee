"""The "study a cohort" prompt: the order of the tools, the caveats, and a human sign-off."""

from __future__ import annotations

from typing import Any

__all__ = ["register_prompts", "study_cohort_text"]


def study_cohort_text(slides_folder: str, clinical_table: str, question: str = "") -> str:
    """The prompt's text (a plain function so it can be read and tested without a server)."""
    aim = f" The question: {question.strip()}" if question.strip() else ""
    return f"""Study a cohort of H&E slides with virtime.{aim}

Slides: {slides_folder}
Clinical table: {clinical_table}

Keep in mind throughout: virtual multiplex immunofluorescence (mIF) is a model prediction made
from H&E, not a measured stain. Every number below inherits the model's errors; a channel the
model predicts poorly gives features that mean little. Say so wherever you report a result.

1. list_slides on the slides folder; note slides that cannot be opened and why.
2. translate each slide (one call per slide; it reports progress and can be resumed). Check each
   result's summary: failed tiles and the tissue fraction. Stop and report if many tiles failed.
3. merge_features on the output folder into one cohort features table (slide_features
   recomputes one slide's features with other settings if needed).
4. associate the features table with the clinical table. Report the top rows with their q values
   (multiple-testing adjusted), not raw p values, and the number of tests.
5. survival if the clinical table has os_time and os_event. Report hazard ratios with their q
   values and how many patients and events each group had.
6. report to write the HTML report; give its path.

Write a short, plain summary for a clinician: what was run, with which model (the provenance
model_hash) and settings, what stood out, and the limits (prediction, cohort size, multiple
testing, associations are not causes).

Finally, state no conclusion yet: ask the person to review the results, the report and the
slides (view_url opens the viewer) and to sign off before any conclusion is drawn or shared."""


def register_prompts(app: Any) -> None:
    """Adds the prompts to ``app`` (an ``MCPServer``)."""

    @app.prompt(name="study_cohort", title="Study a cohort",
                description="translate -> features -> associations -> survival, with caveats "
                            "and a request for human review before any conclusion")
    def study_cohort(slides_folder: str, clinical_table: str, question: str = "") -> str:
        return study_cohort_text(slides_folder, clinical_table, question)
