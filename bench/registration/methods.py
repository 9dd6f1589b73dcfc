"""One registration job per method, run inside a :class:`bench.common.Worker`.

Every job has the same contract so that the suites treat RegSeg, ANTsPy and itk-elastix alike:

* it reads ``fixed`` and ``moving`` from files (the same files for every method), registers ``moving`` to
  ``fixed``, writes the warped moving image and each label/mask of ``warp`` resampled onto the fixed
  grid with the method's own tool (``nearest`` for label maps, ``linear`` for soft masks), all timed;
* for evaluation only (declared as ``extra_s`` and left out of the time) it maps ``points`` (a ``.npy``
  of ``[N, 3]`` fixed RAS points) to the moving space and exports the whole fixed-to-moving mapping as a
  displacement field on the fixed grid (RegSeg convention: ``[3, K, J, I]`` RAS mm, ``T(x) = x + u(x)``).

``transform`` is ``"affine"`` (with a ``family``: rigid, similarity, anisotropic, affine) or
``"deformable"`` (affine, then deformable). Peers use their documented defaults: ANTsPy
``type_of_transform`` ``Rigid`` / ``Similarity`` / ``Affine`` / ``SyN``; elastix the default parameter
maps ``rigid`` / ``affine`` / ``affine`` + ``bspline``. ANTs and ITK use LPS; points and fields are
converted to RAS here.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

OUTPUT_WARPED = "warped.nii.gz"
OUTPUT_FIELD = "field.nii.gz"
OUTPUT_POINTS = "points_mapped.npy"
LPS_FLIP = np.array([-1.0, -1.0, 1.0])

ANTS_TYPES = {"rigid": "Rigid", "similarity": "Similarity", "anisotropic": "Affine", "affine": "Affine"}
"""ANTsPy ``type_of_transform`` of each affine family (ANTs has no anisotropic-scaling-only stage)."""
ELASTIX_MAPS = {"rigid": ["rigid"], "similarity": ["affine"], "anisotropic": ["affine"], "affine": ["affine"]}
"""elastix default parameter maps of each affine family (the defaults have no similarity map)."""


def warped_name(path: str) -> str:
    """File name of a warped label/mask: ``warped_<input name>``."""
    return "warped_" + Path(path).name


def peer_label(method: str, transform: str, family: str = "affine") -> str:
    """What a method runs for a transform kind, as shown in the tables."""
    if method == "ants":
        return "SyN" if transform == "deformable" else ANTS_TYPES[family]
    if method == "elastix":
        return "affine + bspline" if transform == "deformable" else " + ".join(ELASTIX_MAPS[family])
    return "affine + deformable" if transform == "deformable" else family


def _warm_up_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two small smooth blob images ``[32, 32, 32]`` (float32), the second shifted by two voxels."""
    axis = np.arange(32, dtype=np.float32) - 15.5
    k, j, i = np.meshgrid(axis, axis, axis, indexing="ij")
    fixed = np.exp(-(i**2 + (j / 0.8) ** 2 + (k / 0.6) ** 2) / 60.0).astype(np.float32)
    moving = np.exp(-((i - 2) ** 2 + (j / 0.8) ** 2 + (k / 0.6) ** 2) / 60.0).astype(np.float32)
    return fixed, moving


def warm_up_regseg(threads: int) -> None:
    """Imports RegSeg and runs one tiny registration, so start-up costs stay out of the first job."""
    import torch

    torch.set_num_threads(threads)
    from RegSegLib.registration.pipeline import register
    from RegSegLib.volume import Volume

    fixed, moving = _warm_up_pair()
    register(Volume(torch.from_numpy(fixed)[None], np.eye(4)), Volume(torch.from_numpy(moving)[None], np.eye(4)),
             method="deformable", device="cpu")


def warm_up_ants(threads: int) -> None:
    """Imports ANTsPy and runs one tiny SyN registration."""
    import ants
    import pandas  # noqa: F401

    fixed, moving = _warm_up_pair()
    ants.registration(ants.from_numpy(fixed), ants.from_numpy(moving), type_of_transform="SyN")


def warm_up_elastix(threads: int) -> None:
    """Loads itk-elastix's lazily imported modules and runs one tiny affine + B-spline registration."""
    import itk

    fixed, moving = _warm_up_pair()
    parameters = itk.ParameterObject.New()
    for name in ("affine", "bspline"):
        parameter_map = parameters.GetDefaultParameterMap(name)
        parameter_map["MaximumNumberOfIterations"] = ["20"]
        parameters.AddParameterMap(parameter_map)
    method = itk.ElastixRegistrationMethod.New(itk.image_from_array(fixed), itk.image_from_array(moving))
    method.SetParameterObject(parameters)
    method.SetLogToConsole(False)
    method.Update()
    for name in ("TransformixFilter", "ImageFileReader", "ImageFileWriter"):
        getattr(itk, name)


def _write_field(displacement_ras_kji3: np.ndarray, ijk_to_ras: np.ndarray, out_dir: Path) -> str:
    import torch

    from RegSegLib.io.volumes import write_volume
    from RegSegLib.volume import Volume

    data = np.ascontiguousarray(np.moveaxis(displacement_ras_kji3.astype(np.float32), -1, 0))
    path = out_dir / OUTPUT_FIELD
    write_volume(Volume(torch.from_numpy(data), ijk_to_ras), path)
    return str(path)


def regseg_job(
    fixed: str,
    moving: str,
    out_dir: str,
    transform: str = "deformable",
    family: str = "affine",
    metric: str | None = None,
    warp: Sequence[tuple[str, str]] = (),
    points: str | None = None,
    export_field: bool = False,
    options: dict[str, Any] | None = None,
) -> dict:
    """RegSeg: ``pipeline.register`` (or, when ``options`` tunes a stage, the same two stages called directly).

    ``options`` may hold ``device`` (default ``cpu``), ``affine`` (fields of ``AffineSettings``) and
    ``deformable`` (``preset`` and fields of ``DeformableSettings``, e.g. ``adam_iterations``).
    """
    import torch

    from RegSegLib.io.volumes import read_volume, write_volume
    from RegSegLib.registration.pipeline import register
    from RegSegLib.registration.settings import RegistrationSettings
    from RegSegLib.transforms import field_from_transform, resample

    options = dict(options or {})
    device = options.pop("device", "cpu")
    affine_options = dict(options.pop("affine", {}))
    deformable_options = dict(options.pop("deformable", {}))
    if options:
        raise ValueError(f"unknown RegSeg options {sorted(options)}")
    out = Path(out_dir)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fixed_volume = read_volume(fixed).to(dtype=torch.float32)
    moving_volume = read_volume(moving).to(dtype=torch.float32)
    settings = RegistrationSettings.create(transform, family, metric, preset=deformable_options.pop("preset", "default"))
    settings = replace(
        settings,
        affine=settings.affine.overridden(**affine_options),
        deformable=None if settings.deformable is None else settings.deformable.overridden(**deformable_options),
    )
    mapping = register(fixed_volume, moving_volume, settings, device=device).transform
    fixed_cpu = fixed_volume.to("cpu")
    write_volume(resample(moving_volume, fixed_cpu, mapping, mode="linear"), out / OUTPUT_WARPED)
    for path, mode in warp:
        source = read_volume(path)
        if mode == "linear":
            source = source.to(dtype=torch.float32)
        write_volume(resample(source, fixed_cpu, mapping, mode=mode), out / warped_name(path))
    answer: dict[str, Any] = {}
    if cuda:
        torch.cuda.synchronize()
        answer["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    start = time.perf_counter()
    if points:
        mapped = mapping.transform_points(torch.from_numpy(np.load(points)).double())
        np.save(out / OUTPUT_POINTS, mapped.cpu().numpy())
    if export_field:
        field = field_from_transform(mapping, fixed_cpu)
        _write_field(field.field.permute(1, 2, 3, 0).cpu().numpy(), fixed_cpu.ijk_to_ras, out)
    answer["extra_s"] = time.perf_counter() - start
    return answer


def ants_job(
    fixed: str,
    moving: str,
    out_dir: str,
    transform: str = "deformable",
    family: str = "affine",
    metric: str | None = None,
    warp: Sequence[tuple[str, str]] = (),
    points: str | None = None,
    export_field: bool = False,
    options: dict[str, Any] | None = None,
) -> dict:
    """ANTsPy ``ants.registration`` with its defaults for the transform type; labels via ``apply_transforms``.

    ``metric`` is ignored (ANTsPy's defaults, Mattes mutual information, are used for every pair);
    ``options`` are passed to ``ants.registration``.
    """
    import ants
    import nibabel as nib
    import pandas as pd

    out = Path(out_dir)
    kind = "SyN" if transform == "deformable" else ANTS_TYPES[family]
    fixed_image = ants.image_read(fixed)
    moving_image = ants.image_read(moving)
    prefix = str(out / "ants_")
    result = ants.registration(fixed_image, moving_image, type_of_transform=kind, outprefix=prefix, **(options or {}))
    forward = result["fwdtransforms"]
    ants.image_write(result["warpedmovout"], str(out / OUTPUT_WARPED))
    for path, mode in warp:
        source = ants.image_read(path)
        interpolator = "nearestNeighbor" if mode == "nearest" else "linear"
        warped = ants.apply_transforms(fixed_image, source, forward, interpolator=interpolator)
        ants.image_write(warped, str(out / warped_name(path)))
    start = time.perf_counter()
    if points:
        lps = np.load(points) * LPS_FLIP
        mapped = ants.apply_transforms_to_points(3, pd.DataFrame(lps, columns=["x", "y", "z"]), forward)
        np.save(out / OUTPUT_POINTS, mapped[["x", "y", "z"]].to_numpy(dtype=np.float64) * LPS_FLIP)
    if export_field:
        composed = ants.apply_transforms(fixed_image, moving_image, forward, compose=str(out / "ants_composed_"))
        image = nib.load(composed)
        vectors = np.asarray(image.dataobj, dtype=np.float32).reshape(*image.shape[:3], 3) * LPS_FLIP
        _write_field(np.transpose(vectors, (2, 1, 0, 3)), np.asarray(image.affine, dtype=np.float64), out)
        os.remove(composed)
    for path in set(result["fwdtransforms"]) | set(result["invtransforms"]):
        if os.path.exists(path) and path.startswith(prefix):
            os.remove(path)
    return {"extra_s": time.perf_counter() - start}


def _read_transformix_points(path: Path) -> np.ndarray:
    rows = []
    for line in path.read_text().splitlines():
        part = line.split("OutputPoint = [")[1].split("]")[0]
        rows.append([float(v) for v in part.split()])
    return np.asarray(rows, dtype=np.float64)


def elastix_job(
    fixed: str,
    moving: str,
    out_dir: str,
    transform: str = "deformable",
    family: str = "affine",
    metric: str | None = None,
    warp: Sequence[tuple[str, str]] = (),
    points: str | None = None,
    export_field: bool = False,
    options: dict[str, Any] | None = None,
) -> dict:
    """itk-elastix with the default parameter maps; labels through transformix.

    ``metric`` is ignored (the default maps use advanced Mattes mutual information); ``options`` maps
    elastix parameter names to values, set in every map (e.g. ``{"MaximumNumberOfIterations": "100"}``).
    Transformix warps label maps with ``FinalBSplineInterpolationOrder`` 0 and soft masks with 1. The thread
    count comes from ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` (``SetNumberOfThreads`` crashes itk-elastix 0.25.4
    with a B-spline map).
    """
    import itk

    from RegSegLib import geometry

    out = Path(out_dir)
    fixed_image = itk.imread(fixed, itk.F)
    moving_image = itk.imread(moving, itk.F)
    parameters = itk.ParameterObject.New()
    for name in ["affine", "bspline"] if transform == "deformable" else ELASTIX_MAPS[family]:
        parameter_map = parameters.GetDefaultParameterMap(name)
        for key, value in (options or {}).items():
            parameter_map[key] = [str(value)]
        parameters.AddParameterMap(parameter_map)
    method = itk.ElastixRegistrationMethod.New(fixed_image, moving_image)
    method.SetParameterObject(parameters)
    method.SetLogToConsole(False)
    method.Update()
    result_parameters = method.GetTransformParameterObject()
    itk.imwrite(method.GetOutput(), str(out / OUTPUT_WARPED))
    count = result_parameters.GetNumberOfParameterMaps()
    for path, mode in warp:
        for index in range(count):
            result_parameters.SetParameter(index, "FinalBSplineInterpolationOrder", "0" if mode == "nearest" else "1")
        transformix = itk.TransformixFilter.New(itk.imread(path, itk.F))
        transformix.SetTransformParameterObject(result_parameters)
        transformix.SetLogToConsole(False)
        transformix.Update()
        itk.imwrite(transformix.GetOutput(), str(out / warped_name(path)))
    start = time.perf_counter()
    if points:
        folder = out / "transformix_points"
        folder.mkdir(exist_ok=True)
        lps = np.load(points) * LPS_FLIP
        point_file = folder / "fixed_points.txt"
        point_file.write_text("point\n%d\n" % len(lps) + "\n".join(" ".join(f"{v:.6f}" for v in p) for p in lps) + "\n")
        transformix = itk.TransformixFilter.New(moving_image)
        transformix.SetTransformParameterObject(result_parameters)
        transformix.SetFixedPointSetFileName(str(point_file))
        transformix.SetOutputDirectory(str(folder))
        transformix.SetLogToConsole(False)
        transformix.Update()
        np.save(out / OUTPUT_POINTS, _read_transformix_points(folder / "outputpoints.txt") * LPS_FLIP)
        shutil.rmtree(folder)
    if export_field:
        # transformix also writes deformationField.nii into the working directory: keep it in the job's folder.
        previous = os.getcwd()
        os.chdir(out)
        try:
            field = itk.transformix_deformation_field(moving_image, result_parameters)
        finally:
            os.chdir(previous)
        vectors = itk.array_from_image(field).astype(np.float32) * LPS_FLIP
        ijk_to_ras = geometry.ijk_to_ras_from_itk(
            tuple(field.GetOrigin()), tuple(field.GetSpacing()), itk.array_from_matrix(field.GetDirection()).reshape(-1)
        )
        _write_field(vectors, ijk_to_ras, out)
    return {"extra_s": time.perf_counter() - start}


JOBS = {
    "regseg": ("bench.registration.methods:regseg_job", "bench.registration.methods:warm_up_regseg"),
    "ants": ("bench.registration.methods:ants_job", "bench.registration.methods:warm_up_ants"),
    "elastix": ("bench.registration.methods:elastix_job", "bench.registration.methods:warm_up_elastix"),
}
"""Job and warm-up entry points of each method (``module:function`` for the worker)."""
