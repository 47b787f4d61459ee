"""Whole-slide translation (``virtime.translate`` is its main function): H&E in, virtual mIF and tile statistics out."""

from __future__ import annotations

from virtime.translation.config import TranslateConfig
from virtime.translation.many import translate_slides
from virtime.translation.pipeline import translate
from virtime.translation.request import slide_output_dir, translation_engine
from virtime.translation.result import TranslateResult
from virtime.translation.resume import is_translated

__all__ = ["TranslateConfig", "TranslateResult", "translate", "translate_slides",
           "translation_engine", "is_translated", "slide_output_dir"]
