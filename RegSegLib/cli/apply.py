"""``regseg apply TRANSFORM MOVING --reference FIXED -o OUT``: resamples an image through a transform."""

from __future__ import annotations

import argparse
from typing import Callable

COMMAND = "apply"
ORDER = 20
HELP = "resample an image through a transform"
DESCRIPTION = "Resamples MOVING onto the grid of --reference through TRANSFORM (fixed-to-moving)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("transform", metavar="TRANSFORM", help="ITK transform file or displacement field image")
    parser.add_argument("moving", metavar="MOVING", help="image or label map to resample")
    parser.add_argument("--reference", required=True, metavar="FIXED", help="image whose grid the output takes")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output image file")
    parser.add_argument("--labels", action="store_true", help="MOVING is a label map: nearest neighbour, integer output")


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Resamples MOVING onto the reference grid through a fixed-to-moving transform."""
    from RegSegLib.errors import InputError
    from RegSegLib.io.files import refuse_overwriting_inputs
    from RegSegLib.io.prefetch import read_ahead

    if not args.output.strip():
        raise InputError("-o/--output", "is empty; name the output image file")
    refuse_overwriting_inputs([args.output], [args.transform, args.moving, args.reference])
    report(0.0, "reading inputs")
    read_ahead([args.moving, args.reference])  # while torch and the rest are imported

    from RegSegLib.io import read_labels, read_transform, read_volume, write_volume
    from RegSegLib.transforms import resample

    transform = read_transform(args.transform)
    moving = read_labels(args.moving) if args.labels else read_volume(args.moving)
    reference = read_volume(args.reference)
    report(0.3, "resampling")
    warped = resample(moving, reference, transform, mode="nearest" if args.labels else "linear")
    report(0.8, "writing")
    write_volume(warped, args.output)
    report(1.0, "done")
    print(f"regseg: wrote {args.output}", flush=True)
    return 0
