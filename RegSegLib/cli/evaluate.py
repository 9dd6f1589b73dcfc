"""``regseg evaluate``: Dice and HD95 of label maps, and landmark errors through a transform."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from RegSegLib.cli import arguments
from RegSegLib.errors import InputError

COMMAND = "evaluate"
ORDER = 30
HELP = "Dice/HD95 of label maps and landmark errors"
DESCRIPTION = (
    "Dice and HD95 per label of two label maps on one grid; target registration error of paired landmarks "
    "(CSV with fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S) through a transform."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fixed-labels", metavar="F")
    parser.add_argument("--warped-labels", metavar="W")
    parser.add_argument("--labels", type=arguments.labels, metavar="2,3,...", help="labels to score (default: all nonzero)")
    parser.add_argument("--transform", metavar="T", help="fixed-to-moving transform for the landmarks")
    parser.add_argument("--landmarks", metavar="CSV", help="paired landmarks (RAS mm)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option combinations, checked before any file is read."""
    if bool(args.fixed_labels) != bool(args.warped_labels):
        parser.error("--fixed-labels and --warped-labels go together")
    if args.transform and not args.landmarks:
        parser.error("--transform needs --landmarks")
    if not args.fixed_labels and not args.landmarks:
        parser.error("give --fixed-labels with --warped-labels, or --landmarks")


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Scores label maps and landmarks; prints a table and optionally writes JSON."""
    from RegSegLib.evaluation import dice_per_label, hd95_per_label, json_ready, landmark_errors, mean_ignoring_nan
    from RegSegLib.io import atomic_output, check_same_grid, read_labels, read_landmarks, read_transform
    from RegSegLib.io import refuse_overwriting_inputs

    inputs = [args.fixed_labels, args.warped_labels, args.transform, args.landmarks]
    if args.json is not None and not args.json.strip():
        raise InputError("--json", "is empty; name the JSON file to write")
    if args.json:
        refuse_overwriting_inputs([args.json], inputs)
    results: dict[str, Any] = {}
    report(0.0, "reading inputs")
    if args.fixed_labels:
        fixed = read_labels(args.fixed_labels)
        warped = read_labels(args.warped_labels)
        check_same_grid(warped, args.warped_labels, fixed, args.fixed_labels, "label map")
        report(0.2, "Dice")
        dice = dice_per_label(fixed.data[0], warped.data[0], args.labels)
        report(0.4, "HD95")
        hd95 = hd95_per_label(fixed.data[0], warped.data[0], fixed.spacing, list(dice))
        results.update(dice=dice, dice_mean=mean_ignoring_nan(dice), hd95=hd95, hd95_mean=mean_ignoring_nan(hd95))
    if args.landmarks:
        report(0.8, "landmark errors")
        points = read_landmarks(args.landmarks)
        if "fixed" not in points:
            raise InputError(args.landmarks, "needs paired columns fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S")
        transform = read_transform(args.transform) if args.transform else None
        results["landmarks_before"] = landmark_errors(points["fixed"], points["moving"], None)
        if transform is not None:
            results["landmarks"] = landmark_errors(points["fixed"], points["moving"], transform)
    if args.json:
        with atomic_output(args.json) as temp:
            Path(temp).write_text(json.dumps(json_ready(results), indent=2) + "\n")
    report(1.0, "done")  # the JSON is written before the table: a closed stdout cannot lose it
    _print_results(results)
    return 0


def _print_results(results: dict[str, Any]) -> None:
    if "dice" in results:
        print(f"{'label':>8} {'dice':>8} {'hd95_mm':>9}")
        for label, value in results["dice"].items():
            print(f"{label:>8} {value:8.4f} {results['hd95'][label]:9.2f}")
        print(f"{'mean':>8} {results['dice_mean']:8.4f} {results['hd95_mean']:9.2f}")
    for key, title in (("landmarks_before", "landmark error before"), ("landmarks", "landmark error after")):
        if key in results:
            errors = results[key]
            print(
                f"{title} (n={errors['count']}): mean {errors['mean']:.3f} mm, median {errors['median']:.3f} mm, "
                f"p90 {errors['p90']:.3f} mm, max {errors['max']:.3f} mm"
            )
    sys.stdout.flush()
