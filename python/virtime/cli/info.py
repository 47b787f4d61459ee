"""``virtime info SLIDE``: pyramid, resolution, vendor, tissue fraction and tile count."""

from __future__ import annotations

import argparse
import json

from virtime.cli._common import add_mpp_arg, add_tiling_args, tiling_config_from_args

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a slide: levels, mpp, tissue, tile count")
    p.add_argument("slide", nargs="?", help="slide file")
    p.add_argument("--demo", action="store_true", help="describe a built-in synthetic demo slide")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_mpp_arg(p)
    add_tiling_args(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from virtime.errors import InvalidArgumentError
    from virtime.slide_info import describe_slide, demo_slide_path

    if args.demo == bool(args.slide):
        raise InvalidArgumentError("give either a slide path or --demo")
    path = demo_slide_path() if args.demo else args.slide
    info = describe_slide(path, mpp=args.mpp, tiling=tiling_config_from_args(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"slide            {info['path']}")
    print(f"vendor           {info['vendor']}")
    print(f"mpp (level 0)    {info['mpp']:.4f} um/px  (objective {info['objective_power']})")
    for lvl in info["levels"]:
        print(
            f"level {lvl['level']:<2}         {lvl['width']} x {lvl['height']}  "
            f"downsample {lvl['downsample']:.2f}  {lvl['mpp']:.3f} um/px"
        )
    print(f"tissue fraction  {info['tissue_fraction']:.3f}")
    t = info["tiling"]
    print(
        f"tiles            {t['tiles']} of {t['grid_tiles']} ({t['tile_size']} px at "
        f"{t['target_mpp']} um/px, read {t['read_size']} px from level {t['level']})"
    )
    return 0
