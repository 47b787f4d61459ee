"""Whole-slide translation (``virtime.translate`` is its main function): H&E in, virtual mIF and tile statistics out."""

from __future__ import annotations

from virtime.translation.config import TranslateConfig
from virtime.translation.pipeline import TranslateResult, is_translated, slide_output_dir, translate

__all__ = ["TranslateConfig", "TranslateResult", "translate", "is_translated", "slide_output_dir"]
