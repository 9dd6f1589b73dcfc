"""ANTsPy as a user runs it: one process reads two images, registers them and writes the results.

``register`` (the timed job)::

    python ants_register.py register FIXED MOVING -o OUT --type SyN [--labels MOVING_LABELS]

reads both images, runs ``ants.registration`` with ANTsPy's defaults for ``--type`` (``Rigid``,
``Similarity``, ``Affine`` or ``SyN``), writes ``warped.nii.gz``, the transforms ANTs writes under the
prefix ``OUT/ants_`` (``0GenericAffine.mat``, ``1Warp.nii.gz``, ``1InverseWarp.nii.gz``), their order in
``transforms.json`` and, with ``--labels``, ``warped_labels.nii.gz`` (nearest neighbour,
``ants.apply_transforms``).

``export`` (evaluation only, not timed) reads those transforms back and, in RAS millimetres, maps points
of the fixed image to the moving image (``ants.apply_transforms_to_points`` with the forward transforms:
ANTs maps points the opposite way to images), composes the whole mapping into one displacement field
file (ANTs' LPS warp, as ITK reads it) and warps soft masks (linear). ANTs speaks LPS; points are
converted here.

The thread count comes from ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

LPS_FLIP = np.array([-1.0, -1.0, 1.0])
"""RAS <-> LPS: the first two coordinates change sign."""
PREFIX = "ants_"
TRANSFORM_LIST = "transforms.json"
TYPES = ("Rigid", "Similarity", "Affine", "SyN")


def register(fixed: str, moving: str, out: Path, kind: str, labels: str | None) -> None:
    """Registers ``moving`` to ``fixed`` with ANTsPy's defaults and writes the result folder.

    Args:
        fixed: fixed image file.
        moving: moving image file.
        out: output folder (created).
        kind: ``type_of_transform`` of ``ants.registration``.
        labels: optional moving label map, warped with nearest neighbour.
    """
    import ants

    out.mkdir(parents=True, exist_ok=True)
    fixed_image = ants.image_read(fixed)
    moving_image = ants.image_read(moving)
    result = ants.registration(fixed_image, moving_image, type_of_transform=kind, outprefix=str(out / PREFIX))
    ants.image_write(result["warpedmovout"], str(out / "warped.nii.gz"))
    if labels:
        source = ants.image_read(labels)
        warped = ants.apply_transforms(fixed_image, source, result["fwdtransforms"], interpolator="nearestNeighbor")
        ants.image_write(warped, str(out / "warped_labels.nii.gz"))
    names = {key: [Path(path).name for path in result[key]] for key in ("fwdtransforms", "invtransforms")}
    (out / TRANSFORM_LIST).write_text(json.dumps(names, indent=1) + "\n")


def export(
    out: Path,
    fixed: str,
    points: str | None,
    points_out: str | None,
    field_out: str | None,
    warp: list[list[str]],
) -> None:
    """Evaluation outputs from a result folder written by :func:`register`.

    Args:
        out: the result folder.
        fixed: the fixed image (the grid of the field and of warped masks).
        points: ``.npy`` of ``[N, 3]`` fixed RAS points.
        points_out: where the mapped (moving) RAS points are saved (``.npy``).
        field_out: where the whole fixed-to-moving mapping is written as a displacement field image.
        warp: ``[SOURCE, DESTINATION]`` pairs of moving soft masks to warp (linear) onto the fixed grid.
    """
    import ants
    import pandas as pd

    forward = [str(out / name) for name in json.loads((out / TRANSFORM_LIST).read_text())["fwdtransforms"]]
    fixed_image = ants.image_read(fixed)
    if points and points_out:
        lps = np.load(points) * LPS_FLIP
        mapped = ants.apply_transforms_to_points(3, pd.DataFrame(lps, columns=["x", "y", "z"]), forward)
        np.save(points_out, mapped[["x", "y", "z"]].to_numpy(dtype=np.float64) * LPS_FLIP)
    if field_out:
        prefix = Path(field_out).with_name("ants_composed_")
        composed = ants.apply_transforms(fixed_image, fixed_image, forward, compose=str(prefix))
        shutil.move(composed, field_out)
    for source, destination in warp:
        warped = ants.apply_transforms(fixed_image, ants.image_read(source), forward, interpolator="linear")
        ants.image_write(warped, destination)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``register`` or ``export`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("register", help="register MOVING to FIXED and write OUT")
    run.add_argument("fixed")
    run.add_argument("moving")
    run.add_argument("-o", "--output", required=True, type=Path)
    run.add_argument("--type", choices=TYPES, default="SyN", help="ants.registration type_of_transform")
    run.add_argument("--labels", help="moving label map to warp (nearest neighbour)")
    evaluation = commands.add_parser("export", help="evaluation outputs from a result folder")
    evaluation.add_argument("output", type=Path)
    evaluation.add_argument("--fixed", required=True)
    evaluation.add_argument("--points")
    evaluation.add_argument("--points-out")
    evaluation.add_argument("--field-out")
    evaluation.add_argument("--warp", nargs=2, action="append", default=[], metavar=("SOURCE", "DESTINATION"))
    args = parser.parse_args(argv)
    if args.command == "register":
        register(args.fixed, args.moving, args.output, args.type, args.labels)
    else:
        export(args.output, args.fixed, args.points, args.points_out, args.field_out, args.warp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
