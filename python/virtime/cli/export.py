"""``virtime export``: write a translator as ONNX (dynamic batch axis) for other runtimes."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a translator to ONNX",
        description="Exports input (N,3,W,W) -> logits (N,23,W,W) with a dynamic batch axis.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint (.safetensors with card, or official .pth)")
    src.add_argument("--demo", action="store_true", help="export the bundled demo model")
    p.add_argument("--onnx", required=True, help="output .onnx path")
    p.add_argument("--window", type=int, default=None, help="default: the model card's window")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (17)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis at 1")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.engines.onnx_export import export_onnx
    from virtime.models import load, load_demo

    model = load_demo() if args.demo else load(args.weights)
    window = args.window or int(model.card.window)
    path = export_onnx(model, args.onnx, window=window, opset=args.opset,
                       dynamic_batch=not args.static_batch)
    print(f"wrote {path} (window {window}, opset {args.opset}, "
          f"{'static' if args.static_batch else 'dynamic'} batch)")
    return 0
