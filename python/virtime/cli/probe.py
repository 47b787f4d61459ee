"""``virtime probe --labels L.csv --label ATTR --embeddings E --mif F``: linear-probe AUROCs."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe", help="cross-validated AUROC of slide embeddings / virtual-mIF features for a label"
    )
    p.add_argument("--labels", required=True, help="table (CSV/Parquet) with the id and label")
    p.add_argument("--label", required=True, help="binary label column")
    p.add_argument("--id-column", default="slide", help="sample id column in every table (slide)")
    p.add_argument("--embeddings", default=None,
                   help="slide embeddings: a Parquet table (id + list column 'embedding'), or a "
                        "`virtime embed` output root (reads */slide_embedding.parquet)")
    p.add_argument("--mif", default=None, help="virtual-mIF slide features (CSV/Parquet, numeric)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (5)")
    p.add_argument("--C", dest="c", type=float, default=1.0, help="inverse L2 strength (1.0)")
    p.add_argument("--seed", type=int, default=0, help="fold shuffling seed (0)")
    p.add_argument("-o", "--output", default=None, help="write the summary here (CSV)")
    p.set_defaults(handler=_run)


def _read_table(path: str):
    from pathlib import Path

    import pandas as pd

    from virtime.errors import InputDataError

    p = Path(path)
    if not p.exists():
        raise InputDataError(f"{p}: file not found")
    if p.is_dir():
        parts = sorted(p.glob("*/slide_embedding.parquet"))
        if not parts:
            raise InputDataError(f"{p}: no */slide_embedding.parquet inside (run virtime embed)")
        return pd.concat([pd.read_parquet(f) for f in parts], ignore_index=True)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p)


def _run(args: argparse.Namespace) -> int:
    from virtime.embed.probe import embedding_frame, probe
    from virtime.errors import InputDataError

    labels = _read_table(args.labels)
    for col in (args.id_column, args.label):
        if col not in labels:
            raise InputDataError(f"{args.labels}: no column {col!r}")
    y = labels.set_index(labels[args.id_column].astype(str))[args.label]
    sets = {}
    if args.embeddings:
        sets["embedding"] = embedding_frame(_read_table(args.embeddings), args.id_column)
    if args.mif:
        mif = _read_table(args.mif)
        if args.id_column not in mif:
            raise InputDataError(f"{args.mif}: no column {args.id_column!r}")
        sets["mif"] = mif.set_index(mif[args.id_column].astype(str)).drop(columns=[args.id_column])
    if not sets:
        raise InputDataError("give --embeddings and/or --mif")
    result = probe(sets, y, n_splits=args.folds, c=args.c, seed=args.seed)
    text = result.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    sys.stdout.write(text + "\n")
    if args.output:
        from virtime.io import atomic_write_bytes

        atomic_write_bytes(args.output, result.summary.to_csv(index=False).encode())
    return 0
