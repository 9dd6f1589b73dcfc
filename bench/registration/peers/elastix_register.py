"""itk-elastix as a user runs it: one process reads two images, registers them and writes the results.

``register`` (the timed job)::

    python elastix_register.py register FIXED MOVING -o OUT --maps affine bspline [--labels MOVING_LABELS]

reads both images as float, registers with elastix's default parameter maps (``rigid``, ``affine``,
``bspline``, run in the order given), writes ``warped.nii.gz``, the transform parameter files
``TransformParameters.<n>.txt`` and, with ``--labels``, ``warped_labels.nii.gz`` (transformix with
``FinalBSplineInterpolationOrder`` 0, i.e. nearest neighbour).

``export`` (evaluation only, not timed) reads the parameter files back and, in RAS millimetres, maps
points of the fixed image to the moving image (transformix point sets), writes the whole mapping as a
displacement field image (``.mha``, ITK's LPS vectors) and warps soft masks (B-spline order 1, linear).
ITK speaks LPS; points are converted here.

The thread count comes from ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` (``SetNumberOfThreads`` crashes
itk-elastix 0.25.4 with a B-spline map).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

LPS_FLIP = np.array([-1.0, -1.0, 1.0])
"""RAS <-> LPS: the first two coordinates change sign."""
MAPS = ("rigid", "affine", "bspline")
PARAMETER_FILE = "TransformParameters.{}.txt"


def _transformix(image, parameters, **options):
    """Runs transformix on ``image`` with ``parameters``; ``options`` are set on the filter (``SetXxx``)."""
    import itk

    transformix = itk.TransformixFilter.New(image)
    transformix.SetTransformParameterObject(parameters)
    transformix.SetLogToConsole(False)
    for name, value in options.items():
        getattr(transformix, f"Set{name}")(value)
    transformix.Update()
    return transformix


def _set_interpolation_order(parameters, order: int) -> None:
    for index in range(parameters.GetNumberOfParameterMaps()):
        parameters.SetParameter(index, "FinalBSplineInterpolationOrder", str(order))


def register(fixed: str, moving: str, out: Path, maps: list[str], labels: str | None) -> None:
    """Registers ``moving`` to ``fixed`` with elastix's default maps and writes the result folder.

    Args:
        fixed: fixed image file.
        moving: moving image file.
        out: output folder (created).
        maps: names of the default parameter maps, run one after another.
        labels: optional moving label map, warped with nearest neighbour.
    """
    import itk

    out.mkdir(parents=True, exist_ok=True)
    fixed_image = itk.imread(fixed, itk.F)
    moving_image = itk.imread(moving, itk.F)
    parameters = itk.ParameterObject.New()
    for name in maps:
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(name))
    method = itk.ElastixRegistrationMethod.New(fixed_image, moving_image)
    method.SetParameterObject(parameters)
    method.SetLogToConsole(False)
    method.Update()
    itk.imwrite(method.GetOutput(), str(out / "warped.nii.gz"))
    result = method.GetTransformParameterObject()
    names = [str(out / PARAMETER_FILE.format(n)) for n in range(result.GetNumberOfParameterMaps())]
    itk.ParameterObject.WriteParameterFiles(result, names)  # a static binding: the object goes first
    if labels:
        _set_interpolation_order(result, 0)
        warped = _transformix(itk.imread(labels, itk.F), result).GetOutput()
        itk.imwrite(warped, str(out / "warped_labels.nii.gz"))


def _read_parameters(out: Path):
    import itk

    files = sorted(out.glob(PARAMETER_FILE.format("*")), key=lambda p: int(p.name.split(".")[1]))
    parameters = itk.ParameterObject.New()
    parameters.ReadParameterFiles([str(path) for path in files])
    return parameters


def _read_output_points(path: Path) -> np.ndarray:
    rows = []
    for line in path.read_text().splitlines():
        part = line.split("OutputPoint = [")[1].split("]")[0]
        rows.append([float(v) for v in part.split()])
    return np.asarray(rows, dtype=np.float64)


def export(
    out: Path,
    moving: str,
    points: str | None,
    points_out: str | None,
    field_out: str | None,
    warp: list[list[str]],
) -> None:
    """Evaluation outputs from a result folder written by :func:`register`.

    Args:
        out: the result folder.
        moving: the moving image (transformix's input image type).
        points: ``.npy`` of ``[N, 3]`` fixed RAS points.
        points_out: where the mapped (moving) RAS points are saved (``.npy``).
        field_out: where the whole fixed-to-moving mapping is written as a displacement field image (``.mha``).
        warp: ``[SOURCE, DESTINATION]`` pairs of moving soft masks to warp (linear) onto the fixed grid.
    """
    import itk

    parameters = _read_parameters(out)
    moving_image = itk.imread(moving, itk.F)
    if points and points_out:
        with tempfile.TemporaryDirectory(prefix="transformix_points_") as folder:
            lps = np.load(points) * LPS_FLIP
            point_file = Path(folder) / "fixed_points.txt"
            lines = [" ".join(f"{v:.6f}" for v in point) for point in lps]
            point_file.write_text(f"point\n{len(lps)}\n" + "\n".join(lines) + "\n")
            _transformix(moving_image, parameters, FixedPointSetFileName=str(point_file), OutputDirectory=folder)
            np.save(points_out, _read_output_points(Path(folder) / "outputpoints.txt") * LPS_FLIP)
    if field_out:
        with tempfile.TemporaryDirectory(prefix="transformix_field_") as folder:
            transformix = _transformix(moving_image, parameters, ComputeDeformationField=True, OutputDirectory=folder)
            itk.imwrite(transformix.GetOutputDeformationField(), field_out)
    if warp:
        _set_interpolation_order(parameters, 1)
        for source, destination in warp:
            itk.imwrite(_transformix(itk.imread(source, itk.F), parameters).GetOutput(), destination)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``register`` or ``export`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("register", help="register MOVING to FIXED and write OUT")
    run.add_argument("fixed")
    run.add_argument("moving")
    run.add_argument("-o", "--output", required=True, type=Path)
    run.add_argument("--maps", nargs="+", choices=MAPS, default=["affine", "bspline"], help="default parameter maps")
    run.add_argument("--labels", help="moving label map to warp (nearest neighbour)")
    evaluation = commands.add_parser("export", help="evaluation outputs from a result folder")
    evaluation.add_argument("output", type=Path)
    evaluation.add_argument("--moving", required=True)
    evaluation.add_argument("--points")
    evaluation.add_argument("--points-out")
    evaluation.add_argument("--field-out")
    evaluation.add_argument("--warp", nargs=2, action="append", default=[], metavar=("SOURCE", "DESTINATION"))
    args = parser.parse_args(argv)
    if args.command == "register":
        register(args.fixed, args.moving, args.output, args.maps, args.labels)
    else:
        export(args.output, args.moving, args.points, args.points_out, args.field_out, args.warp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
