"""Whole-slide translation (``virtime.translate`` is its main function): H&E in, virtual mIF and tile statistics out."""

from __future__ import annotations

from virtime.translation.config import TranslateConfig
from virtime.translation.many import translate_slides
from virtime.translation.pipeline import (
    TranslateResult,
    is_translated,
    slide_output_dir,
    translate,
    translation_engine,
)

__all__ = ["TranslateConfig", "TranslateResult", "translate", "translate_slides",
           "translation_engine", "is_translated", "slide_output_dir"]
