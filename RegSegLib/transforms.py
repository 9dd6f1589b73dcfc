"""Spatial transforms and resampling, all in RAS millimetres, all fixed-to-moving (pull-back).

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
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from RegSegLib import geometry
from RegSegLib.volume import Volume, grid_points_ras


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

    def as_volume(self) -> Volume:
        return Volume(self.field, self.ijk_to_ras.copy())

    def displacement_at(self, points: torch.Tensor) -> torch.Tensor:
        """Displacement at ``[..., 3]`` RAS points, as ITK evaluates it.

        Linear interpolation inside the grid, the edge value up to half a voxel outside it, zero further out.

        Returns:
            ``[..., 3]`` RAS mm.
        """
        field = self.field.to(points.device)
        values = sample_at_points(field, self.ijk_to_ras, points, mode="bilinear", padding_mode="border")
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


def sample_at_points(
    data: torch.Tensor,
    ijk_to_ras: np.ndarray,
    points: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Reads ``[C, K, J, I]`` data at ``[..., 3]`` RAS points.

    Args:
        data: ``[C, K, J, I]`` tensor on its grid.
        ijk_to_ras: ``[4, 4]`` geometry of ``data``.
        points: ``[..., 3]`` RAS points.
        mode: ``"bilinear"`` (trilinear) or ``"nearest"``.
        padding_mode: ``grid_sample`` padding mode.

    Returns:
        ``[..., C]`` values.
    """
    lead = points.shape[:-1]
    matrix = torch.as_tensor(
        geometry.ras_to_normalized(ijk_to_ras, data.shape[1:]), dtype=torch.float64, device=points.device
    )
    grid = (points.double() @ matrix[:3, :3].T + matrix[:3, 3]).to(torch.float32)
    values = F.grid_sample(
        data[None].float(),
        grid.reshape(1, 1, 1, -1, 3),
        mode=mode,
        padding_mode=padding_mode,
        align_corners=geometry.ALIGN_CORNERS,
    )
    return values.reshape(data.shape[0], -1).T.reshape(*lead, data.shape[0])


def _as_composite(transform: Transform | None) -> list:
    if transform is None:
        return []
    if isinstance(transform, CompositeTransform):
        return transform.flattened()
    return [transform]


def moving_grid_coordinates(
    transform: Transform | None,
    reference_ijk_to_ras: np.ndarray,
    reference_shape: Sequence[int],
    moving_ijk_to_ras: np.ndarray,
    moving_shape: Sequence[int],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``grid_sample`` coordinates in the moving grid of every reference voxel, ``[1, K, J, I, 3]``.

    Purely affine transforms go through ``affine_grid`` without building world coordinates.
    """
    parts = _as_composite(transform)
    simplified = compose(*parts) if parts else AffineTransform.identity()
    to_moving = geometry.ras_to_normalized(moving_ijk_to_ras, moving_shape)
    if isinstance(simplified, AffineTransform):
        from_reference = reference_ijk_to_ras @ np.linalg.inv(geometry.ijk_to_normalized(reference_shape))
        theta = to_moving @ simplified.matrix @ from_reference
        theta_t = torch.as_tensor(theta[:3], dtype=torch.float32, device=device)[None]
        k, j, i = (int(s) for s in reference_shape)
        return F.affine_grid(theta_t, [1, 1, k, j, i], align_corners=geometry.ALIGN_CORNERS)
    points = grid_points_ras(reference_ijk_to_ras, tuple(reference_shape), device=device)
    points = simplified.transform_points(points)
    matrix = torch.as_tensor(to_moving, dtype=torch.float64, device=device)
    return (points.double() @ matrix[:3, :3].T + matrix[:3, 3]).float()[None]


def resample(
    moving: Volume,
    reference: Volume | tuple[np.ndarray, Sequence[int]],
    transform: Transform | None = None,
    mode: str = "linear",
    padding_value: float = 0.0,
) -> Volume:
    """Resamples ``moving`` onto the reference grid through a fixed-to-moving transform.

    ``out(x) = moving(T(x))`` for every voxel centre ``x`` of the reference grid.

    Args:
        moving: the volume to read from, ``[C, K, J, I]``.
        reference: a volume whose grid is used, or ``(ijk_to_ras, (K, J, I))``.
        transform: fixed-to-moving transform; ``None`` is identity.
        mode: ``"linear"`` for images, ``"nearest"`` for label maps (integer dtype is kept).
        padding_value: value outside the moving image.

    Returns:
        Volume on the reference grid with ``moving``'s channels.
    """
    if isinstance(reference, Volume):
        ref_matrix, ref_shape = reference.ijk_to_ras, reference.shape
    else:
        ref_matrix, ref_shape = np.asarray(reference[0], dtype=np.float64), tuple(int(s) for s in reference[1])
    if mode not in ("linear", "nearest"):
        raise ValueError(f"unknown interpolation mode {mode!r}; use 'linear' or 'nearest'")
    device = moving.data.device
    grid = moving_grid_coordinates(transform, ref_matrix, ref_shape, moving.ijk_to_ras, moving.shape, device)
    data = moving.data.float() - padding_value
    out = F.grid_sample(
        data[None],
        grid,
        mode="bilinear" if mode == "linear" else "nearest",
        padding_mode="zeros",
        align_corners=geometry.ALIGN_CORNERS,
    )[0] + padding_value
    if moving.is_integer:
        out = torch.round(out).to(moving.data.dtype)
    return Volume(out, np.array(ref_matrix, copy=True), dict(moving.meta))


def field_from_transform(transform: Transform, reference: Volume) -> DisplacementField:
    """Samples any transform as a displacement field on a reference grid, ``u(x) = T(x) - x``."""
    points = reference.world_grid(device=reference.data.device)
    moved = transform.transform_points(points)
    return DisplacementField((moved - points).permute(3, 0, 1, 2).contiguous(), reference.ijk_to_ras.copy())


def jacobian_determinant(field: DisplacementField) -> torch.Tensor:
    """Jacobian determinant of ``x -> x + u(x)``, ``[K, J, I]``, by central differences in world space.

    Args:
        field: displacement field (RAS mm on its grid).

    Returns:
        ``[K, J, I]`` determinant; values ``<= 0`` mark folding.
    """
    u = field.field.double()
    spatial_dims = [d for d in (3, 2, 1) if u.shape[d] > 1]
    grads = torch.zeros(3, 3, *u.shape[1:], dtype=torch.float64, device=u.device)
    for axis_index, dim in zip((0, 1, 2), (3, 2, 1)):
        if dim in spatial_dims:
            grads[:, axis_index] = torch.gradient(u, dim=dim)[0]
    index_to_world = torch.as_tensor(field.ijk_to_ras[:3, :3], dtype=torch.float64, device=u.device)
    world_to_index = torch.linalg.inv(index_to_world)
    # du/dx_world = du/dijk @ dijk/dx_world
    grads = torch.einsum("abkji,bc->kjiac", grads, world_to_index)
    jac = grads + torch.eye(3, dtype=torch.float64, device=u.device)
    return torch.linalg.det(jac).float()


def integrate_velocity(velocity: DisplacementField, steps: int = 7) -> DisplacementField:
    """Integrates a stationary velocity field by scaling and squaring.

    ``phi = exp(v)``: start from ``u = v / 2**steps`` and apply ``u <- u + u o (id + u)`` ``steps`` times.

    Args:
        velocity: ``[3, K, J, I]`` velocity in RAS mm on its grid.
        steps: number of squarings.

    Returns:
        The displacement field of ``exp(v)`` on the same grid.
    """
    from RegSegLib.registration.spatial import integrate_velocity_normalized, field_mm_to_normalized
    from RegSegLib.registration.spatial import field_normalized_to_mm

    v = field_mm_to_normalized(velocity.field[None].float(), velocity.ijk_to_ras)
    u = integrate_velocity_normalized(v, steps)
    return DisplacementField(field_normalized_to_mm(u, velocity.ijk_to_ras)[0], velocity.ijk_to_ras.copy())
