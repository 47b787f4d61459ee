"""``virtime quantize --weights W --calibrate SLIDE... -o OUT``: an INT8 translator for the CPU."""

from __future__ import annotations

import argparse

from virtime.cli._common import add_allow_mpp_arg, add_mpp_arg, add_threads_arg

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quantize", help="INT8 translator calibrated on your slides, checked against fp32",
        description="Post-training INT8 quantization (NNCF, OpenVINO IR) calibrated on tissue "
                    "windows of your slides. Held-out windows measure each channel against fp32 "
                    "(Dice, Pearson, slide-level density); the numbers go into OUT.json, and "
                    "translate --precision int8 refuses a model whose protein channels miss "
                    "|delta density| <= 0.005 or Dice >= 0.95 unless --accept-int8-loss (Dice "
                    "is not held on a channel with fewer than 150 positive held-out pixels "
                    "under fp32 and INT8: too rare to gate by Dice).")
    p.add_argument("--weights", default=None,
                   help="fp32 translator weights (default: the bundled demo model)")
    p.add_argument("--calibrate", nargs="+", required=True, metavar="SLIDE",
                   help="slides whose tissue calibrates and checks the INT8 model")
    p.add_argument("-o", "--output", required=True,
                   help="writes OUTPUT.xml, OUTPUT.bin and the model card OUTPUT.json")
    p.add_argument("--calibration-tiles", type=int, default=32,
                   help="windows (at least half tissue) that calibrate activation ranges (32)")
    p.add_argument("--held-out-tiles", type=int, default=32,
                   help="other windows that measure agreement with fp32 (32)")
    p.add_argument("--keep-fp32", choices=("input", "none"), default="input",
                   help="layers left in fp32: 'input' the first two convolutions, which see the "
                        "image (default; the rare immune channels need it), 'none' all INT8")
    p.add_argument("--activation-ranges", choices=("minmax", "nncf"), default="minmax",
                   help="activation ranges: min/max over the calibration windows (default; "
                        "keeps rare markers) or NNCF's default estimator")
    add_threads_arg(p)
    add_mpp_arg(p)
    add_allow_mpp_arg(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.cli.translate import load_model_from_args
    from virtime.channels import PROTEIN_CHANNELS
    from virtime.models.int8 import DEFAULT_GATE, describe_dice_gating, too_rare_for_dice
    from virtime.quantize import QuantizeConfig, quantize_translator

    from virtime.errors import CheckpointError

    if args.weights is not None and args.weights.endswith(".xml"):
        raise CheckpointError(f"{args.weights}: already an INT8 translator; quantize the fp32 "
                              f"weights it came from")
    model = load_model_from_args(args)
    config = QuantizeConfig(calibration_tiles=args.calibration_tiles,
                            held_out_tiles=args.held_out_tiles,
                            mpp=args.mpp, allow_mpp=args.allow_mpp,
                            threads=args.threads, keep_fp32=args.keep_fp32,
                            activation_ranges=args.activation_ranges)
    result = quantize_translator(model, args.calibrate, args.output, config)
    channels = result.card.quantization["channels"]
    rare = too_rare_for_dice(channels, DEFAULT_GATE)
    held = {k: v for k, v in channels.items() if k in PROTEIN_CHANNELS and k not in rare}
    worst = min(held.items() or channels.items(), key=lambda kv: kv[1]["dice"])
    print(f"{result.xml}: INT8 translator, {len(channels)} channels checked on "
          f"{config.held_out_tiles} held-out windows (lowest Dice of a Dice-gated channel "
          f"{worst[0]} {worst[1]['dice']:.3f}); card {result.xml.with_suffix('.json')}")
    gating = describe_dice_gating(channels, DEFAULT_GATE)
    if result.passed:
        print(f"accuracy gate: passed ({gating})")
    else:
        print(f"accuracy gate: FAILED ({', '.join(result.failures)}); translate refuses it "
              f"unless --accept-int8-loss ({gating})")
    return 0
