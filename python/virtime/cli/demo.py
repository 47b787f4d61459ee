"""``virtime demo [-o DIR] [--patients N]``: the whole pipeline on a virtual population.

Simulates two cohorts with planted biology, translates every slide with the bundled demo model,
analyses ground-truth and virtual mIF, prints how many planted effects each recovers and writes
``DIR/report.html``. A rerun resumes (rendered and translated slides are kept).
"""

from __future__ import annotations

import argparse
from typing import Any

from virtime.cli._common import add_backend_arg, add_quiet_arg

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo", help="end-to-end demo on simulated cohorts with planted biology",
        description="Simulate cohorts with planted biology, translate them with the demo model, "
                    "run associations, survival and cross-cohort validation, score recovery of "
                    "the planted effects and write an HTML report.")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--patients", type=int, default=None,
                   help="patients in cohort A (default: DemoConfig's, 300)")
    p.add_argument("--second-patients", type=int, default=None,
                   help="patients in cohort B, the second scanner (default: 40%% of --patients)")
    p.add_argument("--slide-px", type=int, default=512,
                   help="slide side in pixels at the model's mpp (512)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (0)")
    p.add_argument("--weights", default=None,
                   help="translator weights instead of the bundled demo model (must know "
                        "simulated tissue to make sense here)")
    add_backend_arg(p, "onnxruntime")
    add_quiet_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from virtime.demo import DemoConfig, run_demo
    from virtime.demo.report import recovery_text

    model = None
    if args.weights:
        from pathlib import Path

        from virtime.errors import CheckpointError
        from virtime.models import load

        if not Path(args.weights).is_file():
            raise CheckpointError(f"{args.weights}: weights file not found")
        model = load(args.weights)
    sized = {} if args.patients is None else {"patients": args.patients}
    cfg = DemoConfig(**sized, second_patients=args.second_patients,
                     slide_px=args.slide_px, seed=args.seed, backend=args.backend,
                     show_progress=not args.quiet)
    result = run_demo(model, args.output, cfg)
    out = sys.stdout
    out.write("Recovery of planted effects (power: planted found / testable; "
              "fdp: unplanted / discoveries)\n")
    out.write(recovery_text(result.recovery) + "\n")
    t = result.timings
    out.write("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
              + f" (total {sum(t.values()):.0f} s)\n")
    out.write(f"report: {result.report}\n")
    return 0
