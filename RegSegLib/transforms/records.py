"""The transform records: affine, displacement field and composite, in RAS millimetres, fixed-to-moving (pull-back).

A transform ``T`` maps a point ``x`` of the fixed (reference) space to the point ``T(x)`` of the moving
space where the moving image is read: ``warped(x) = moving(T(x))``. This is ITK's resampling
transform and Slicer's "transform from parent".

Kinds:
    :class:`AffineTransform`: a 4x4 RAS matrix.
    :class:`DisplacementField`: ``T(x) = x + u(x)``, ``u`` a ``[3, K, J, I]`` field of RAS mm vectors on
        its own grid, linearly interpolated; as in ITK's ``DisplacementFieldTransform``, a point up to half a
        voxel outside the grid takes the edge value and a point further out is not displaced. (Slicer's grid
        transforms extend the edge value without limit; the two agree inside the grid's half-voxel border.)
    :class:`CompositeTransform`: a list in ITK order, ``T(x) = t[0](t[1](... t[n-1](x)))``: the last
        one is applied first, exactly as ``itk::CompositeTransform`` and SimpleITK read it from a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from RegSegLib.geometry import Grid
from RegSegLib.transforms import fields


@dataclass
class AffineTransform:
    """Affine fixed-to-moving mapping of RAS points.

    Attributes:
        matrix: ``[4, 4]`` float64 homogeneous matrix, ``T(x) = matrix @ [x, 1]``.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        if self.matrix.shape != (4, 4):
            raise ValueError(f"affine matrix must be 4x4, got {self.matrix.shape}")

    @classmethod
    def identity(cls) -> "AffineTransform":
        return cls(np.eye(4))

    def inverse(self) -> "AffineTransform":
        return AffineTransform(np.linalg.inv(self.matrix))

    def transform_points(self, points: torch.Tensor) -> torch.Tensor:
        """Maps ``[..., 3]`` RAS points."""
        matrix = torch.as_tensor(self.matrix, dtype=torch.float64, device=points.device)
        out = points.double() @ matrix[:3, :3].T + matrix[:3, 3]
        return out.to(points.dtype)


@dataclass
class DisplacementField:
    """Dense displacement ``T(x) = x + u(x)``.

    Attributes:
        field: ``[3, K, J, I]`` float tensor of RAS displacement vectors in mm.
        ijk_to_ras: ``[4, 4]`` geometry of the grid the field is defined on.
    """

    field: torch.Tensor
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        if self.field.ndim != 4 or self.field.shape[0] != 3:
            raise ValueError(f"displacement field must be [3, K, J, I], got {tuple(self.field.shape)}")
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.field.shape[1:])  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        """The grid the field is defined on."""
        return Grid(self.ijk_to_ras, self.shape)

    def displacement_at(self, points: torch.Tensor) -> torch.Tensor:
        """Displacement at ``[..., 3]`` RAS points, as ITK evaluates it.

        Linear interpolation inside the grid, the edge value up to half a voxel outside it, zero further out.

        Returns:
            ``[..., 3]`` RAS mm.
        """
        field = self.field.to(points.device)
        values = fields.sample_at_points(field, self.ijk_to_ras, points, mode="bilinear", padding_mode="border")
        ras_to_ijk = torch.as_tensor(np.linalg.inv(self.ijk_to_ras), dtype=torch.float64, device=points.device)
        ijk = points.double() @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
        size = torch.as_tensor(self.shape[::-1], dtype=torch.float64, device=points.device)
        inside = ((ijk >= -0.5) & (ijk < size - 0.5)).all(dim=-1)
        return values * inside[..., None].to(values.dtype)

    def transform_points(self, points: torch.Tensor) -> torch.Tensor:
        """Maps ``[..., 3]`` RAS points."""
        return points + self.displacement_at(points).to(points.dtype)


Transform = Union[AffineTransform, DisplacementField, "CompositeTransform"]


@dataclass
class CompositeTransform:
    """Composition in ITK order: ``T(x) = transforms[0](transforms[1](... (x)))``.

    Attributes:
        transforms: the parts, the last applied first (as in ``itk::CompositeTransform``).
    """

    transforms: list

    def transform_points(self, points: torch.Tensor) -> torch.Tensor:
        for transform in reversed(self.transforms):
            points = transform.transform_points(points)
        return points

    def flattened(self) -> list:
        """The parts with nested composites expanded, in ITK order."""
        parts: list = []
        for transform in self.transforms:
            parts.extend(transform.flattened() if isinstance(transform, CompositeTransform) else [transform])
        return parts

    def simplified(self) -> Transform:
        """Merges neighbouring affine parts; returns a single part when only one remains."""
        merged: list = []
        for part in self.flattened():
            if merged and isinstance(part, AffineTransform) and isinstance(merged[-1], AffineTransform):
                merged[-1] = AffineTransform(merged[-1].matrix @ part.matrix)
            else:
                merged.append(part)
        if not merged:
            return AffineTransform.identity()
        return merged[0] if len(merged) == 1 else CompositeTransform(merged)


def compose(*transforms: Transform) -> Transform:
    """``compose(a, b)(x) = a(b(x))`` (ITK order), merging affine neighbours."""
    return CompositeTransform(list(transforms)).simplified()


def integrate_velocity(velocity: DisplacementField, steps: int = 7) -> DisplacementField:
    """The displacement field of ``exp(v)`` for a stationary velocity field (scaling and squaring).

    Args:
        velocity: ``[3, K, J, I]`` velocity in RAS mm on its grid.
        steps: number of squarings (:func:`RegSegLib.transforms.fields.integrate_velocity`).

    Returns:
        The displacement field of ``exp(v)`` on the same grid.
    """
    voxel = fields.mm_to_voxel(velocity.field[None].float(), velocity.ijk_to_ras)
    disp = fields.integrate_velocity(voxel, steps)
    return DisplacementField(fields.voxel_to_mm(disp, velocity.ijk_to_ras)[0], velocity.ijk_to_ras.copy())


def jacobian_determinant(field: DisplacementField) -> torch.Tensor:
    """Jacobian determinant of ``x -> x + u(x)``, ``[K, J, I]``; values ``<= 0`` mark folding."""
    return fields.jacobian_determinant(field.field, field.ijk_to_ras)

