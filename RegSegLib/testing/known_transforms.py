"""Known-transform recovery for tests and benchmarks: random affine mappings and synthetic pairs.

Protocol (BENCHMARKS.md suite 4): ``moving`` is a real volume; ``fixed`` is ``moving`` resampled on
its own grid through a random fixed-to-moving affine ``T_true`` about the image centre; a method
registers ``fixed`` to ``moving`` and its result ``T_est`` is compared with ``T_true`` at the
foreground voxels of ``fixed``: ``error(x) = |T_est(x) - T_true(x)|`` in mm
(:func:`RegSegLib.evaluation.points.mapping_error_mm`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.ops.intensity import robust_range
from RegSegLib.transforms import AffineTransform, affine_params, resample
from RegSegLib.volume import Volume


def random_affine(
    family: str,
    rng: np.random.Generator,
    centre: Sequence[float],
    max_rot_deg: float = 15.0,
    max_shift_mm: float = 15.0,
    max_scale: float = 0.10,
    max_shear: float = 0.05,
) -> np.ndarray:
    """A random affine of a family about a centre, parameters drawn uniformly within the ranges.

    Each rotation angle is in ``[-max_rot_deg, max_rot_deg]``, each translation in
    ``[-max_shift_mm, max_shift_mm]``, each scale deviation in ``[-max_scale, max_scale]`` (one shared
    value for ``similarity``) and each shear in ``[-max_shear, max_shear]`` (``affine`` only). The
    layout and composition order are those of :mod:`RegSegLib.transforms.affine_params`.

    Args:
        family: ``rigid``, ``similarity``, ``anisotropic`` or ``affine``.
        rng: numpy random generator.
        centre: ``[3]`` RAS centre of rotation and scaling.

    Returns:
        ``[4, 4]`` float64 RAS matrix.
    """
    count = affine_params.num_parameters(family)
    params = np.zeros(count)
    params[0:3] = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg, 3))
    params[3:6] = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    if count >= 7:
        params[6:9 if count >= 9 else 7] = rng.uniform(-max_scale, max_scale, 3 if count >= 9 else 1)
    if count == 12:
        params[9:12] = rng.uniform(-max_shear, max_shear, 3)
    matrix = affine_params.parameters_to_matrix(
        torch.as_tensor(params[None], dtype=torch.float64), family, torch.as_tensor(np.asarray(centre, dtype=np.float64))
    )
    return matrix[0].numpy()


def foreground_points(volume: Volume, fraction: float = 0.1, max_points: int | None = 200_000) -> np.ndarray:
    """RAS centres of the foreground voxels of an image, ``[N, 3]``.

    Foreground: first-channel values above ``low + fraction * (high - low)`` with ``low``/``high``
    the 1st/99th percentiles (air and background fall below it in MR and CT). When more than
    ``max_points`` voxels qualify a regular subset is returned.
    """
    data = volume.data[0].float()
    low, high = robust_range(data, 0.01, 0.99)
    k, j, i = torch.nonzero(data > low + fraction * (high - low), as_tuple=True)
    ijk = torch.stack([i, j, k], dim=1).double().numpy()
    if max_points is not None and len(ijk) > max_points:
        ijk = ijk[:: int(np.ceil(len(ijk) / max_points))]
    return geometry.transform_points(volume.ijk_to_ras, ijk)


def synthetic_affine_pair(
    moving: Volume, family: str, rng: np.random.Generator, **ranges: float
) -> tuple[Volume, AffineTransform]:
    """A fixed image made from ``moving`` through a random known fixed-to-moving affine.

    Args:
        moving: the real volume (it stays the moving image).
        family: transform family of the random affine.
        rng: numpy random generator.
        **ranges: ``max_rot_deg``, ``max_shift_mm``, ``max_scale``, ``max_shear`` for :func:`random_affine`.

    Returns:
        ``(fixed, T_true)``: ``fixed(x) = moving(T_true(x))`` on ``moving``'s grid; points mapped outside
        ``moving`` get its minimum value (background: 0 in MR, air in CT).
    """
    centre = geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape)
    truth = AffineTransform(random_affine(family, rng, centre, **ranges))
    image = moving.to(dtype=torch.float32)
    return resample(image, moving, truth, padding_value=float(image.data.min())), truth
