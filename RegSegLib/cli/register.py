"""``regseg register FIXED MOVING -o OUTDIR``: registers MOVING to FIXED and writes a result folder."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

from RegSegLib import __version__
from RegSegLib.cli import arguments
from RegSegLib.cli.runtime import StagingFolder
from RegSegLib.errors import InputError
from RegSegLib.registration.settings import (
    AUTO_METRIC,
    FAMILIES,
    METHODS,
    METRIC_CHOICES,
    NETWORK_METHOD,
    PRESETS,
    AffineSettings,
    DeformableSettings,
    RegistrationSettings,
    SettingsError,
)
from RegSegLib.vocabulary import DEVICES

COMMAND = "register"
ORDER = 10
HELP = "register MOVING to FIXED and write a result folder"
DESCRIPTION = (
    "Registers MOVING to FIXED. Writes warped.nii.gz, transform.h5 (the whole fixed-to-moving mapping, ITK "
    "composite; a deformable stage's field at the resolution it was estimated), affine.tfm, "
    "warped_labels.nii.gz (with labels), metrics.json (every setting used, the figures, any warning) and "
    "qc.png into OUTDIR; displacement.nii.gz with --displacement-image; fixed_segmentation.nii.gz and "
    "moving_segmentation.nii.gz with --segment-with."
)
OUTPUTS = (
    "warped.nii.gz",
    "transform.h5",
    "affine.tfm",
    "displacement.nii.gz",
    "warped_labels.nii.gz",
    "metrics.json",
    "qc.png",
    "fixed_segmentation.nii.gz",
    "moving_segmentation.nii.gz",
)
"""Every file ``regseg register`` may write into its output folder."""
FIELD_GRIDS = ("working", "fixed")
"""Where the stored displacement field lives: the grid it was estimated on, or the fixed image's grid."""


def segmentation_models(text: str) -> tuple[str, str]:
    """``MODEL_FIXED,MODEL_MOVING`` (or one model for both images) as two names or files."""
    names = [name.strip() for name in text.split(",")]
    if len(names) not in (1, 2) or not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give MODEL_FIXED,MODEL_MOVING or one model for both images")
    return (names[0], names[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``regseg register``; choices and defaults come from the registration settings."""
    affine, deformable = AffineSettings(), DeformableSettings()
    parser.add_argument("fixed", metavar="FIXED", help="fixed image (NIfTI, NRRD, MHA or DICOM folder)")
    parser.add_argument("moving", metavar="MOVING", help="moving image")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created; files replaced)")
    parser.add_argument("--method", choices=METHODS, default=METHODS[0])
    parser.add_argument("--transform", choices=FAMILIES, default=affine.family, help="family of the affine stage")
    parser.add_argument(
        "--metric", choices=METRIC_CHOICES, default=AUTO_METRIC,
        help="similarity measure of both stages (default auto: chosen to work within and across modalities)",
    )
    parser.add_argument("--fixed-mask", metavar="F", help="mask on the fixed grid (nonzero = inside)")
    parser.add_argument("--moving-mask", metavar="F", help="mask on the moving grid")
    parser.add_argument("--init", metavar="TRANSFORM", help="initial fixed-to-moving transform (.tfm, .h5, field image)")
    parser.add_argument(
        "--model", metavar="NAME|FILE",
        help="affine network (a name from 'regseg models list' or a model.pt) whose prediction starts the "
        "iterative stages (HyReg): recovers starts the engine alone cannot, such as rotations beyond 90 degrees",
    )
    parser.add_argument(
        "--segment-with", type=segmentation_models, metavar="MODEL_FIXED,MODEL_MOVING",
        help="segmentation models (names from 'regseg models list --task segmentation' or model.pt files; one name "
        "for both images) that segment both images: the registration is then driven by the segmentations (their "
        "smoothed foregrounds are registered, and the guard checks their overlap), e.g. the prostate gland for MR "
        "to ultrasound",
    )
    parser.add_argument("--fixed-labels", metavar="F", help="fixed label map (for Dice)")
    parser.add_argument("--moving-labels", metavar="F", help="moving label map (warped and scored)")
    parser.add_argument(
        "--labels", type=arguments.labels, metavar="2,3,...|FILE",
        help="labels to score, as a list or a file listing them (default: all nonzero)",
    )
    parser.add_argument("--fixed-channel", type=arguments.channel, metavar="N", help="channel of a 4D fixed image")
    parser.add_argument("--moving-channel", type=arguments.channel, metavar="N", help="channel of a 4D moving image")
    parser.add_argument("--diffeomorphic", action="store_true", help="deformable stage as a stationary velocity field")
    parser.add_argument(
        "--field-grid", choices=FIELD_GRIDS, default=FIELD_GRIDS[0],
        help="grid of the stored displacement field: the one it was estimated on (default) or the fixed image's",
    )
    parser.add_argument(
        "--displacement-image", action="store_true",
        help="also write the displacement field as displacement.nii.gz (RAS vectors in mm)",
    )
    advanced = parser.add_argument_group("advanced settings (defaults: the engine's published settings)")
    levels = ",".join(f"{v:g}" for v in affine.levels)
    advanced.add_argument(
        "--levels", type=arguments.number_list(float, "pyramid factors"), metavar=levels,
        help=f"affine pyramid factors, coarse to fine (level f works at f times the base spacing; default {levels})",
    )
    iterations = ",".join(str(v) for v in affine.resolved_iterations)
    advanced.add_argument(
        "--iterations", type=arguments.number_list(int, "iteration counts"), metavar=iterations,
        help=f"affine iterations per pyramid level (one per level; default {iterations}, "
        f"{','.join(map(str, AffineSettings(metric='mind').resolved_iterations))} with mind)",
    )
    advanced.add_argument(
        "--deformable-iterations", type=arguments.number_list(int, "iteration counts"),
        metavar=f"{deformable.adam_iterations},{deformable.fine_iterations}",
        help="deformable Adam iterations: on the control grid, then (optional) on the full working grid; 0 skips",
    )
    advanced.add_argument(
        "--regularisation", type=arguments.number(float, "number"), metavar="W",
        help=f"deformable smoothness weight (default {deformable.resolved_regularisation:g}, {DeformableSettings(similarity='mind').resolved_regularisation:g} with mind)",
    )
    advanced.add_argument(
        "--preset", choices=tuple(PRESETS), default="default",
        help="deformable settings: default, or large-motion (breathing-size motion, +-12 working voxels)",
    )
    advanced.add_argument(
        "--spacing", type=arguments.number(float, "number"), metavar="MM",
        help="isotropic working resolution of the deformable stage (default: the fixed grid)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option combinations and settings, checked before any file is read."""
    if bool(args.fixed_labels) != bool(args.moving_labels):
        parser.error("--fixed-labels and --moving-labels go together")
    if args.labels and not args.fixed_labels:
        parser.error("--labels needs --fixed-labels and --moving-labels")
    if args.model and args.init:
        parser.error("--model and --init both give the initial transform: choose one")
    if args.segment_with and args.method == NETWORK_METHOD:
        parser.error("--segment-with drives the iterative stages; --method network has none")
    if args.method == NETWORK_METHOD and not args.model:
        parser.error("--method network keeps a network's prediction: name the network with --model NAME|FILE")
    if args.method != "deformable":
        given = [
            option
            for option, value in (
                ("--spacing", args.spacing),
                ("--regularisation", args.regularisation),
                ("--deformable-iterations", args.deformable_iterations),
                ("--preset", None if args.preset == "default" else args.preset),
                ("--diffeomorphic", args.diffeomorphic or None),
                ("--field-grid", None if args.field_grid == FIELD_GRIDS[0] else args.field_grid),
                ("--displacement-image", args.displacement_image or None),
            )
            if value is not None
        ]
        if given:
            parser.error(f"{', '.join(given)}: only used by --method deformable (this run is --method {args.method})")
    try:
        args.settings = RegistrationSettings.from_attributes(args, family="transform")
    except SettingsError as exc:
        parser.error(str(exc))


def versions() -> dict[str, str]:
    """Versions of RegSeg and the libraries that shape its results (SimpleITK's from its package
    metadata: a registration writes no file through it, and importing it takes a third of a second)."""
    from importlib.metadata import version

    import numpy
    import torch

    return {
        "regseg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "SimpleITK": version("SimpleITK"),
    }


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Registers MOVING to FIXED and writes the result folder."""
    from RegSegLib.io.files import refuse_overwriting_inputs
    from RegSegLib.io.prefetch import read_ahead

    if not args.output.strip():  # Path("") is the current folder
        raise InputError("-o/--output", "is empty; name an output folder")
    output = Path(args.output)
    inputs = [args.fixed, args.moving, args.fixed_mask, args.moving_mask, args.init, args.fixed_labels, args.moving_labels]
    refuse_overwriting_inputs([output, *(output / name for name in OUTPUTS)], inputs)
    staging = StagingFolder(output, OUTPUTS)
    try:
        report(0.0, "reading inputs")
        read_ahead(inputs)  # while torch and the rest are imported
        imports_started = time.perf_counter()

        from RegSegLib.evaluation import evaluate_registration, json_ready, qc_figure
        from RegSegLib.io import read_transform, write_transform, write_volume
        from RegSegLib.io.checks import read_image, read_labels, read_mask
        from RegSegLib.registration.pipeline import register
        from RegSegLib.runtime import Progress, resolve_device
        from RegSegLib.transforms import CompositeTransform, field_from_transform

        device = resolve_device(args.device)
        model, network_seconds = None, None
        if args.model:  # a missing or unreadable model is refused before the volumes are read
            from RegSegLib.registration.learned import load_affine_model, predict_affine

            network_started = time.perf_counter()
            model = load_affine_model(args.model, device)
            network_seconds = time.perf_counter() - network_started
        segmenters = None
        if args.segment_with:  # refused before the volumes are read, as the affine model
            from RegSegLib.segmentation.models import load_segmentation_model

            loaded = {name: load_segmentation_model(name, device) for name in dict.fromkeys(args.segment_with)}
            segmenters = [loaded[name] for name in args.segment_with]
        started = time.perf_counter()
        fixed = read_image(args.fixed, args.fixed_channel, "--fixed-channel")
        moving = read_image(args.moving, args.moving_channel, "--moving-channel")
        fixed_mask = read_mask(args.fixed_mask, fixed, args.fixed) if args.fixed_mask else None
        moving_mask = read_mask(args.moving_mask, moving, args.moving) if args.moving_mask else None
        fixed_labels = read_labels(args.fixed_labels, fixed, args.fixed) if args.fixed_labels else None
        moving_labels = read_labels(args.moving_labels, moving, args.moving) if args.moving_labels else None
        initial = read_transform(args.init) if args.init else None
        read_seconds = time.perf_counter() - started
        guidance, segment_seconds = None, None
        if segmenters is not None:
            from RegSegLib.segmentation.inference import segment

            report(0.02, "segmenting both images")
            segment_started = time.perf_counter()
            guidance = tuple(
                segment(segmenter.network, segmenter.plan, [image], device=device) for segmenter, image in zip(segmenters, (fixed, moving))
            )
            segment_seconds = time.perf_counter() - segment_started
            for segmentation, path in zip(guidance, (args.fixed, args.moving)):
                if not bool((segmentation.data != 0).any()):
                    raise InputError(path, "the segmentation model found nothing in this image, so it cannot guide the registration")
        if model is not None:
            report(0.04, "network prediction")
            network_started = time.perf_counter()
            initial = predict_affine(model, fixed, moving)
            network_seconds += time.perf_counter() - network_started

        result = register(
            fixed,
            moving,
            args.settings,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            initial=initial,
            guidance=guidance,
            device=device,
            progress=Progress(report).sub(0.05, 0.8),
        )
        settings = result.settings

        report(0.85, "writing results")
        write_started = time.perf_counter()
        transform, displacement = result.transform, result.field
        if displacement is not None and args.field_grid == "fixed":
            displacement = field_from_transform(displacement, fixed.grid)
            transform = CompositeTransform([*transform.flattened()[:-1], displacement])
        outcome = evaluate_registration(
            fixed, moving, transform, displacement, settings.report_metric,
            fixed_mask=fixed_mask, fixed_labels=fixed_labels, moving_labels=moving_labels, labels=args.labels,
            working_images=result.working_images,
        )  # fmt: skip
        write_volume(outcome.warped, staging.file("warped.nii.gz"))
        whole = transform if isinstance(transform, CompositeTransform) else CompositeTransform([transform])
        write_transform(whole, staging.file("transform.h5"))
        write_transform(result.affine, staging.file("affine.tfm"))
        if displacement is not None and args.displacement_image:
            write_transform(displacement, staging.file("displacement.nii.gz"))
        if outcome.warped_labels is not None:
            write_volume(outcome.warped_labels, staging.file("warped_labels.nii.gz"))
        if guidance is not None:
            write_volume(guidance[0], staging.file("fixed_segmentation.nii.gz"))
            write_volume(guidance[1], staging.file("moving_segmentation.nii.gz"))
        metrics: dict[str, Any] = {
            "command": COMMAND,
            "fixed": args.fixed,
            "moving": args.moving,
            "method": args.method,
            "transform_family": args.transform,
            "metric": settings.report_metric,
            "metric_chosen": result.metric_reason,
            "diffeomorphic": bool(args.diffeomorphic),
            "initial_transform": args.init,
            "model": args.model,
            "segment_with": list(args.segment_with) if args.segment_with else None,
            "settings": settings.as_dict(),
            "field_grid": _grid_record(displacement),
            "device": str(device),
            "warnings": result.warnings,
            "guard": {verdict.stage: verdict.as_dict() for verdict in result.verdicts},
            **outcome.report,
        }
        report(0.95, "drawing the QC picture")
        qc_figure(fixed, moving, outcome.warped, staging.file("qc.png"))
        metrics["seconds"] = {
            "imports": started - imports_started,
            "read": read_seconds,
            **({"network": network_seconds} if network_seconds is not None else {}),
            **({"segment": segment_seconds} if segment_seconds is not None else {}),
            **result.seconds,
            "write": time.perf_counter() - write_started,
            "total": time.perf_counter() - started,
        }
        metrics["versions"] = versions()
        staging.file("metrics.json").write_text(json.dumps(json_ready(metrics), indent=2) + "\n")
        written = staging.commit()
    finally:
        staging.cleanup()
    report(1.0, "done")
    _print_summary(metrics, written)
    return 0


def _grid_record(displacement: Any) -> dict[str, Any] | None:
    """Shape (i, j, k) and spacing (mm) of the stored displacement field's grid, ``None`` without one."""
    if displacement is None:
        return None
    grid = displacement.grid
    return {"shape_ijk": list(grid.shape[::-1]), "spacing_mm": [float(v) for v in grid.spacing]}


def _print_summary(metrics: dict[str, Any], written: list[Path]) -> None:
    for warning in metrics["warnings"]:
        print(f"regseg: warning: {warning}", file=sys.stderr, flush=True)
    similarity = metrics["similarity"]
    print(
        f"regseg: {metrics['method']} registration in {metrics['seconds']['total']:.1f} s on {metrics['device']}; "
        f"{similarity['name']} {similarity['before']:.4g} -> {similarity['after']:.4g}"
    )
    if "dice" in metrics:
        print(f"regseg: mean Dice {metrics['dice']['mean_before']:.4f} -> {metrics['dice']['mean']:.4f}")
    if "jacobian" in metrics:
        print(f"regseg: folding fraction {metrics['jacobian']['folding_fraction']:.2e}")
    print(f"regseg: wrote {', '.join(str(p) for p in written)}", flush=True)
