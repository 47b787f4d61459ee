"""Phenotypes from a gating table: ordered rules on per-cell marker calls.

The table is a small CSV (default: ``virtime/data/gating_default.csv``, which documents the format
and the rule order). ``phenotype`` rules are tried in file order and the first match wins; a cell
that matches none is ``"other"``. ``flag`` rules (proliferating, PD-L1+ tumour) are independent
boolean columns: a state that any phenotype can carry, so it does not steal cells from a lineage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from virtime.channels import CHANNEL_NAMES
from virtime.errors import InvalidArgumentError

__all__ = ["OTHER", "GatingRule", "GatingTable", "default_gating"]

OTHER = "other"
_Term = tuple[str, str, bool]  # ("channel" | "phenotype", name, wanted)


@dataclass(frozen=True)
class GatingRule:
    """One row: ``kind`` (phenotype or flag), ``name``, the parsed rule and its text."""

    kind: str
    name: str
    alternatives: tuple[tuple[_Term, ...], ...]
    text: str
    description: str = ""


def _parse_rule(text: str, where: str) -> tuple[tuple[_Term, ...], ...]:
    alts = []
    for alt in text.split("|"):
        terms: list[_Term] = []
        for tok in alt.split():
            if tok.startswith("phenotype="):
                terms.append(("phenotype", tok.split("=", 1)[1], True))
            elif tok[-1:] in "+-" and tok[:-1] in CHANNEL_NAMES:
                terms.append(("channel", tok[:-1], tok[-1] == "+"))
            else:
                raise InvalidArgumentError(
                    f"{where}: cannot read term {tok!r}; use '<channel>+', '<channel>-' or "
                    f"'phenotype=<name>' (channels: {', '.join(CHANNEL_NAMES)})")
        if not terms:
            raise InvalidArgumentError(f"{where}: empty alternative in rule {text!r}")
        alts.append(tuple(terms))
    return tuple(alts)


class GatingTable:
    """Ordered gating rules; :meth:`apply` gives each cell a phenotype and its flags."""

    def __init__(self, rules: list[GatingRule], source: str = "<rules>") -> None:
        self.rules = list(rules)
        self.source = source
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names) or OTHER in names:
            raise InvalidArgumentError(f"{source}: rule names must be unique and not {OTHER!r}")
        for r in self.rules:
            if r.kind not in ("phenotype", "flag"):
                raise InvalidArgumentError(f"{source}: rule {r.name!r}: kind must be phenotype or flag")
            for alt in r.alternatives:
                for what, name, _ in alt:
                    if what == "phenotype" and (r.kind != "flag" or name not in self.phenotypes):
                        raise InvalidArgumentError(
                            f"{source}: rule {r.name!r}: 'phenotype={name}' needs a flag rule and "
                            f"a phenotype the table defines ({', '.join(self.phenotypes)})")

    @property
    def phenotypes(self) -> tuple[str, ...]:
        """Phenotype names in rule order (``"other"`` not included)."""
        return tuple(r.name for r in self.rules if r.kind == "phenotype")

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules if r.kind == "flag")

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels the rules read."""
        return tuple(sorted({n for r in self.rules for a in r.alternatives for w, n, _ in a
                             if w == "channel"}))

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> GatingTable:
        """Reads a table with columns ``kind,name,rule[,description]`` (``#`` lines are comments)."""
        import csv

        p = Path(path)
        try:
            lines = [ln for ln in p.read_text(encoding="utf-8").splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
        except OSError as exc:
            raise InvalidArgumentError(f"gating table {p}: {exc}") from exc
        rows = list(csv.DictReader(lines))
        if not rows or not {"kind", "name", "rule"} <= set(rows[0]):
            raise InvalidArgumentError(f"gating table {p}: needs columns kind,name,rule")
        rules = [GatingRule(r["kind"].strip(), r["name"].strip(),
                            _parse_rule(r["rule"], f"{p}: rule {r['name']!r}"), r["rule"].strip(),
                            (r.get("description") or "").strip()) for r in rows]
        return cls(rules, str(p))

    def apply(self, positive: Any) -> tuple[NDArray[np.object_], dict[str, NDArray[np.bool_]]]:
        """Phenotype per cell and flag columns from marker calls.

        ``positive`` maps a channel name (or ``"<channel>.positive"``) to a boolean array, e.g. a
        cells DataFrame.
        """
        def call(ch: str) -> NDArray[np.bool_]:
            key = f"{ch}.positive"
            try:
                return np.asarray(positive[key] if key in positive else positive[ch], bool)
            except KeyError:
                raise InvalidArgumentError(f"gating: no positivity for channel {ch!r}") from None

        calls = {ch: call(ch) for ch in self.channels}
        n = len(next(iter(calls.values()))) if calls else len(positive)
        phen = np.full(n, OTHER, dtype=object)
        free = np.ones(n, bool)
        flags: dict[str, NDArray[np.bool_]] = {}
        ordered = [r for r in self.rules if r.kind == "phenotype"]
        ordered += [r for r in self.rules if r.kind == "flag"]  # flags see final phenotypes
        for r in ordered:
            hit = np.zeros(n, bool)
            for alt in r.alternatives:
                ok = np.ones(n, bool)
                for what, name, wanted in alt:
                    v = calls[name] if what == "channel" else phen == name
                    ok &= v if wanted else ~v
                hit |= ok
            if r.kind == "phenotype":
                phen[hit & free] = r.name
                free &= ~hit
            else:
                flags[r.name] = hit
        return phen, flags

    def summary(self) -> Any:
        """The rules as a DataFrame (order, kind, name, rule, description)."""
        import pandas as pd

        return pd.DataFrame([{"order": i, "kind": r.kind, "name": r.name, "rule": r.text,
                              "description": r.description} for i, r in enumerate(self.rules)])


def default_gating() -> GatingTable:
    """The shipped table (``virtime/data/gating_default.csv``)."""
    ref = resources.files("virtime") / "data" / "gating_default.csv"
    with resources.as_file(ref) as path:
        return GatingTable.from_csv(path)
