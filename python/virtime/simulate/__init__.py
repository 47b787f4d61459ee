"""Synthetic data for tests and the demo: slides, paired H&E/mIF tiles and virtual cohorts.

Submodules import lazily (``virtime.simulate.slides`` needs scipy and tifffile).
"""

from __future__ import annotations

__all__ = ["slides"]
