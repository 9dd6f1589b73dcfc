"""Point-based errors of a registration: landmark error through a transform, distance between two affines."""

from __future__ import annotations

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.transforms import AffineTransform, Transform


def landmark_errors(
    fixed_points_ras: np.ndarray | torch.Tensor,
    moving_points_ras: np.ndarray | torch.Tensor,
    transform: Transform | None,
) -> dict[str, float]:
    """Target registration error of corresponding landmarks, ``|T(fixed_point) - moving_point|`` in mm.

    Args:
        fixed_points_ras: ``[N, 3]`` RAS points in the fixed image.
        moving_points_ras: ``[N, 3]`` corresponding RAS points in the moving image.
        transform: fixed-to-moving transform; ``None`` is identity (the error before registration).

    Returns:
        ``{"mean", "median", "p90", "max", "count"}`` (distances in mm).
    """
    fixed = torch.as_tensor(np.asarray(fixed_points_ras, dtype=np.float64)).reshape(-1, 3)
    moving = torch.as_tensor(np.asarray(moving_points_ras, dtype=np.float64)).reshape(-1, 3)
    if fixed.shape != moving.shape or fixed.shape[0] == 0:
        raise ValueError(f"need the same nonzero number of fixed and moving points, got {len(fixed)} and {len(moving)}")
    mapped = fixed if transform is None else transform.transform_points(fixed).double()
    errors = torch.linalg.norm(mapped - moving, dim=-1).numpy()
    return {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        "p90": float(np.percentile(errors, 90)),
        "max": float(errors.max()),
        "count": int(errors.size),
    }


def _as_matrix(transform: AffineTransform | np.ndarray) -> np.ndarray:
    return transform.matrix if isinstance(transform, AffineTransform) else np.asarray(transform, dtype=np.float64)


def mapping_error_mm(
    T_est: AffineTransform | np.ndarray, T_true: AffineTransform | np.ndarray, points_ras: np.ndarray
) -> dict[str, float]:
    """Distance between two affine mappings at given points.

    Args:
        T_est: recovered ``[4, 4]`` matrix (or transform).
        T_true: true ``[4, 4]`` matrix (or transform).
        points_ras: ``[N, 3]`` RAS points (e.g. the fixed image's foreground voxel centres).

    Returns:
        ``{"mean", "p95", "max"}`` of ``|T_est(x) - T_true(x)|`` in mm.
    """
    points = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    difference = geometry.transform_points(_as_matrix(T_est), points) - geometry.transform_points(_as_matrix(T_true), points)
    distance = np.linalg.norm(difference, axis=1)
    return {"mean": float(distance.mean()), "p95": float(np.percentile(distance, 95)), "max": float(distance.max())}
