"""The one convention for space and direction in RegSegLib.

Every other module takes its geometry from here. The rules (DESIGN.md section 2):

* A volume is a data tensor ``[C, K, J, I]`` (Slicer ``arrayFromVolume`` and SimpleITK
  ``GetArrayFromImage`` order) plus ``ijk_to_ras``, a 4x4 float64 matrix mapping homogeneous voxel
  indices ``(i, j, k, 1)`` to RAS millimetres (Slicer's IJKToRAS matrix).
* World coordinates inside RegSegLib are RAS millimetres. LPS appears only where ITK images or
  transform files are read or written, through :func:`ras_to_lps_matrix` and friends here.
* ``torch.nn.functional.grid_sample`` is always called with ``align_corners=True``
  (:data:`ALIGN_CORNERS`): normalised coordinate -1 is the centre of the first voxel and +1 the
  centre of the last one, so a voxel index ``i`` of an axis of size ``n`` has normalised
  coordinate ``2 i / (n - 1) - 1``. The last axis of a sampling grid is ``(x, y, z) = (i, j, k)``.
* A registration result maps points of the fixed image to points of the moving image
  (pull-back, the ITK "resampling transform", Slicer "transform from parent"):
  ``warped(x) = moving(T(x))`` for ``x`` on the fixed grid.

A voxel grid travels as a :class:`Grid` (``ijk_to_ras`` and ``shape``); grids are the same when their
corner voxel centres lie within :data:`GRID_TOLERANCE_MM` of each other (:func:`corner_distance_mm`).

This module is numpy-only and cheap to import (torch is imported only by :meth:`Grid.points_ras`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

ALIGN_CORNERS: bool = True
"""The single ``align_corners`` value used for every ``grid_sample`` / ``interpolate`` call."""

GRID_TOLERANCE_MM: float = 1e-3
"""Two grids whose corresponding corner voxel centres lie closer than this (mm) are the same grid."""

LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Homogeneous 4x4 matrix that flips the first two axes; it is its own inverse."""


def ras_to_lps_matrix(matrix: np.ndarray) -> np.ndarray:
    """Expresses a 4x4 RAS-to-RAS point mapping in LPS (and, identically, LPS in RAS).

    Args:
        matrix: ``[4, 4]`` homogeneous mapping of RAS points.

    Returns:
        ``[4, 4]`` homogeneous mapping of LPS points, ``F @ matrix @ F`` with ``F = diag(-1,-1,1,1)``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {matrix.shape}")
    return LPS_TO_RAS @ matrix @ LPS_TO_RAS


lps_to_ras_matrix = ras_to_lps_matrix


def ras_to_lps_points(points: np.ndarray) -> np.ndarray:
    """Flips the sign of the first two coordinates of ``[..., 3]`` points (RAS <-> LPS)."""
    points = np.array(points, dtype=np.float64, copy=True)
    points[..., :2] *= -1.0
    return points


lps_to_ras_points = ras_to_lps_points


def ijk_to_ras_from_itk(
    origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """Builds the IJK-to-RAS matrix from ITK image geometry (which is LPS).

    Args:
        origin: LPS position of voxel (0, 0, 0), 3 values.
        spacing: voxel size along i, j, k in mm, 3 values.
        direction: 3x3 direction cosines in LPS, 9 values row-major (ITK ``GetDirection``).

    Returns:
        ``[4, 4]`` float64 IJK-to-RAS matrix.
    """
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction @ np.diag(np.asarray(spacing, dtype=np.float64))
    ijk_to_lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ ijk_to_lps


def itk_geometry_from_ijk_to_ras(
    ijk_to_ras: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Splits an IJK-to-RAS matrix into ITK (LPS) origin, spacing and direction.

    Args:
        ijk_to_ras: ``[4, 4]`` IJK-to-RAS matrix.

    Returns:
        ``(origin, spacing, direction)``: LPS origin (3), spacing (3), row-major LPS direction (9).
    """
    ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("IJK-to-RAS matrix has a zero-length axis")
    direction = linear / spacing
    return (
        tuple(float(v) for v in ijk_to_lps[:3, 3]),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.reshape(-1)),
    )


def spacing_of(ijk_to_ras: np.ndarray) -> np.ndarray:
    """Voxel size along (i, j, k) in mm, ``[3]``."""
    return np.linalg.norm(np.asarray(ijk_to_ras, dtype=np.float64)[:3, :3], axis=0)


def ijk_to_normalized(shape_kji: Sequence[int]) -> np.ndarray:
    """Matrix mapping voxel indices ``(i, j, k, 1)`` to ``grid_sample`` coordinates ``(x, y, z, 1)``.

    Uses ``align_corners=True``. An axis of size 1 maps index 0 to coordinate 0, as ``affine_grid`` places
    a single voxel.

    Args:
        shape_kji: spatial shape ``(K, J, I)`` of the data tensor.

    Returns:
        ``[4, 4]`` float64 matrix.
    """
    k, j, i = (int(s) for s in shape_kji)
    scale = [2.0 / max(n - 1, 1) for n in (i, j, k)]
    matrix = np.diag(scale + [1.0])
    matrix[:3, 3] = [-1.0 if n > 1 else 0.0 for n in (i, j, k)]
    return matrix


def ras_to_normalized(ijk_to_ras: np.ndarray, shape_kji: Sequence[int]) -> np.ndarray:
    """Matrix mapping RAS points to ``grid_sample`` coordinates of a volume, ``[4, 4]``."""
    return ijk_to_normalized(shape_kji) @ np.linalg.inv(np.asarray(ijk_to_ras, dtype=np.float64))


def axis_angle_rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """The ``[3, 3]`` rotation by ``angle_rad`` about ``axis`` (RAS, any length), right-handed (Rodrigues)."""
    unit = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0.0, -unit[2], unit[1]], [unit[2], 0.0, -unit[0]], [-unit[1], unit[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * cross + (1.0 - np.cos(angle_rad)) * cross @ cross


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a homogeneous ``[4, 4]`` matrix to ``[..., 3]`` points."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def grid_centre_ras(ijk_to_ras: np.ndarray, shape_kji: Sequence[int]) -> np.ndarray:
    """RAS position of the centre of a voxel grid, ``[3]``."""
    k, j, i = (int(s) for s in shape_kji)
    centre_ijk = np.array([(i - 1) / 2.0, (j - 1) / 2.0, (k - 1) / 2.0])
    return transform_points(ijk_to_ras, centre_ijk)


def resampled_grid(
    ijk_to_ras: np.ndarray, shape_kji: Sequence[int], spacing_mm: float | Sequence[float], cover: bool = False
) -> "Grid":
    """A grid covering the same physical extent with a new voxel size and the same directions.

    The new grid's first and last voxel centres lie within the old grid's extent, centred on it.

    Args:
        ijk_to_ras: ``[4, 4]`` geometry of the original grid.
        shape_kji: ``(K, J, I)`` of the original grid.
        spacing_mm: new voxel size (one value or one per i, j, k).
        cover: round the voxel counts up instead of to the nearest, so that the new grid's voxels
            (centres plus half a voxel) cover every voxel centre of the old grid: a displacement field on
            the new grid then reaches the whole old grid, as ITK reads it.

    Returns:
        The new :class:`Grid` (it unpacks as ``(new_ijk_to_ras, new_shape_kji)``).
    """
    old_spacing = spacing_of(ijk_to_ras)
    new_spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    size_ijk = np.array(shape_kji[::-1], dtype=np.float64)
    extent = size_ijk * old_spacing
    counts = np.ceil(extent / new_spacing - 1e-6) if cover else np.round(extent / new_spacing)
    new_size = np.maximum(counts.astype(int), 1)
    directions = np.asarray(ijk_to_ras)[:3, :3] / old_spacing
    new_matrix = np.eye(4)
    new_matrix[:3, :3] = directions * new_spacing
    centre = grid_centre_ras(ijk_to_ras, shape_kji)
    new_matrix[:3, 3] = centre - new_matrix[:3, :3] @ ((new_size - 1) / 2.0)
    return Grid(new_matrix, (int(new_size[2]), int(new_size[1]), int(new_size[0])))


def corner_distance_mm(
    ijk_to_ras_a: np.ndarray, shape_a: Sequence[int], ijk_to_ras_b: np.ndarray, shape_b: Sequence[int]
) -> float:
    """Largest distance (mm) between corresponding corner voxel centres of two grids; ``inf`` if the shapes differ.

    This is the one definition of "the same grid" (with :data:`GRID_TOLERANCE_MM`), used by the library,
    the command line and the Slicer glue alike.
    """
    if tuple(int(n) for n in shape_a) != tuple(int(n) for n in shape_b):
        return float("inf")
    k, j, i = (int(n) - 1 for n in shape_a)
    corners = np.array([[a, b, c] for a in (0, i) for b in (0, j) for c in (0, k)], dtype=np.float64)
    difference = transform_points(ijk_to_ras_a, corners) - transform_points(ijk_to_ras_b, corners)
    return float(np.linalg.norm(difference, axis=1).max())


def points_ras(
    ijk_to_ras: np.ndarray, shape_kji: Sequence[int], device: "torch.device | str | None" = None
) -> "torch.Tensor":
    """RAS coordinates of every voxel centre of a grid, ``[K, J, I, 3]`` float32 (computed in float64)."""
    import torch

    k, j, i = (int(n) for n in shape_kji)
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in (k, j, i)]
    kk, jj, ii = torch.meshgrid(*axes, indexing="ij")
    ijk = torch.stack([ii, jj, kk], dim=-1)
    matrix = torch.as_tensor(np.asarray(ijk_to_ras, dtype=np.float64), dtype=torch.float64, device=device)
    return (ijk @ matrix[:3, :3].T + matrix[:3, 3]).float()


class Grid(NamedTuple):
    """A voxel grid: Slicer's IJK-to-RAS matrix and the spatial shape ``(K, J, I)`` of data on it.

    A named tuple, so ``matrix, shape = grid`` works where a pair is expected.

    Attributes:
        ijk_to_ras: ``[4, 4]`` float64 IJK-to-RAS matrix.
        shape: ``(K, J, I)``.
    """

    ijk_to_ras: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, ijk_to_ras: np.ndarray, shape_kji: Sequence[int]) -> "Grid":
        """A grid with the matrix as float64 and the shape as ints."""
        return cls(np.asarray(ijk_to_ras, dtype=np.float64), tuple(int(n) for n in shape_kji))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing)
        return f"Grid(shape={self.shape} (K, J, I), spacing=({spacing}) mm)"

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along (i, j, k) in mm, ``[3]``."""
        return spacing_of(self.ijk_to_ras)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def extent_mm(self) -> np.ndarray:
        """Size of the grid along (i, j, k) in mm (voxel count times spacing), ``[3]``."""
        return self.spacing * np.array(self.shape[::-1], dtype=np.float64)

    @property
    def centre_ras(self) -> np.ndarray:
        """RAS position of the grid centre, ``[3]``."""
        return grid_centre_ras(self.ijk_to_ras, self.shape)

    def ras_to_normalized(self) -> np.ndarray:
        """``[4, 4]`` matrix mapping RAS points to this grid's ``grid_sample`` coordinates."""
        return ras_to_normalized(self.ijk_to_ras, self.shape)

    def normalized_to_ras(self) -> np.ndarray:
        """``[4, 4]`` matrix mapping this grid's ``grid_sample`` coordinates to RAS points."""
        return np.asarray(self.ijk_to_ras, dtype=np.float64) @ np.linalg.inv(ijk_to_normalized(self.shape))

    def resampled(self, spacing_mm: float | Sequence[float], cover: bool = False) -> "Grid":
        """The grid of the same extent and directions with another voxel size (:func:`resampled_grid`)."""
        return resampled_grid(self.ijk_to_ras, self.shape, spacing_mm, cover)

    def within_voxels(self, max_voxels: int, cover: bool = False) -> "Grid":
        """This grid when it holds at most ``max_voxels`` voxels, else the isotropic grid of the same extent
        and directions that holds about that many (never finer than this grid's finest spacing).

        Args:
            max_voxels: the voxel budget.
            cover: see :func:`resampled_grid`.
        """
        if self.num_voxels <= max_voxels:
            return self
        spacing = float(np.cbrt(float(np.prod(self.extent_mm)) / max_voxels))
        return self.resampled(max(float(self.spacing.min()), spacing), cover)

    def corner_distance_mm(self, other: "Grid") -> float:
        """:func:`corner_distance_mm` of two grids."""
        return corner_distance_mm(self.ijk_to_ras, self.shape, other.ijk_to_ras, other.shape)

    def same_as(self, other: "Grid", tol: float = GRID_TOLERANCE_MM) -> bool:
        """Whether both grids have the same shape and corners within ``tol`` mm."""
        return self.corner_distance_mm(other) <= tol

    def points_ras(self, device: "torch.device | str | None" = None) -> "torch.Tensor":
        """RAS coordinates of every voxel centre, ``[K, J, I, 3]`` float32."""
        return points_ras(self.ijk_to_ras, self.shape, device)
