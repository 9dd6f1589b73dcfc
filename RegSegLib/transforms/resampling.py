"""Resampling a volume through a fixed-to-moving transform: ``out(x) = moving(T(x))`` on a reference grid."""

from __future__ import annotations

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.geometry import Grid
from RegSegLib.transforms import fields
from RegSegLib.transforms.records import AffineTransform, CompositeTransform, DisplacementField, Transform, compose
from RegSegLib.volume import Volume

AXIS_TOLERANCE = 1e-6
"""Two grids have parallel axes when the off-diagonal terms of the voxel-to-voxel map are below this
fraction of its largest diagonal term."""
MODES: tuple[str, ...] = ("linear", "nearest")
"""Interpolation modes: ``linear`` for images, ``nearest`` for label maps and masks."""


def _parts(transform: Transform | None) -> list:
    if transform is None:
        return []
    if isinstance(transform, CompositeTransform):
        return transform.flattened()
    return [transform]


def moving_grid_coordinates(
    transform: Transform | None, reference: Grid, moving: Grid, device: torch.device | str | None = None
) -> torch.Tensor:
    """``grid_sample`` coordinates in the moving grid of every reference voxel, ``[1, K, J, I, 3]``.

    Purely affine transforms, and an affine applied after one displacement field (``[affine, field]``, what
    a registration returns), go through ``affine_grid`` without building world coordinates.

    Args:
        transform: fixed-to-moving transform; ``None`` is identity.
        reference: the grid the result is defined on.
        moving: the grid that is read.
        device: where the coordinates are computed.
    """
    parts = _parts(transform)
    simplified = compose(*parts) if parts else AffineTransform.identity()
    to_moving = moving.ras_to_normalized()
    if isinstance(simplified, AffineTransform):
        theta = to_moving @ simplified.matrix @ reference.normalized_to_ras()
        return fields.affine_sampling_grid(torch.as_tensor(theta[:3], dtype=torch.float64, device=device), reference.shape)
    if isinstance(simplified, DisplacementField):
        return _affine_of_field_coordinates(AffineTransform.identity(), simplified, reference, moving, device)
    if isinstance(simplified.transforms[-1], DisplacementField) and len(simplified.transforms) == 2:
        return _affine_of_field_coordinates(simplified.transforms[0], simplified.transforms[1], reference, moving, device)
    points = simplified.transform_points(reference.points_ras(device))
    matrix = torch.as_tensor(to_moving, dtype=torch.float64, device=device)
    return (points.double() @ matrix[:3, :3].T + matrix[:3, 3]).float()[None]


def _affine_of_field_coordinates(
    outer: AffineTransform, field: DisplacementField, reference: Grid, moving: Grid, device: torch.device | str | None
) -> torch.Tensor:
    """``grid_sample`` coordinates in ``moving`` of ``outer(x + u(x))`` for every reference voxel, ``[1, K, J, I, 3]``.

    With ``N`` the moving grid's RAS-to-normalised matrix, ``N outer (x + u) = (N outer) x + lin(N outer) u``:
    an affine sampling grid plus ``lin(N outer) u`` read at the reference voxels (:func:`_field_on_grid`; the
    3x3 matrix is applied on the field's own grid, since it commutes with linear interpolation). No world
    coordinates are built.
    """
    to_moving = moving.ras_to_normalized() @ outer.matrix
    linear = torch.as_tensor(to_moving[:3, :3], dtype=torch.float32, device=device)
    in_moving = torch.einsum("rc,ckji->kjir", linear, field.field.to(device).float())
    theta = torch.as_tensor((to_moving @ reference.normalized_to_ras())[:3], device=device)
    return fields.affine_sampling_grid(theta, reference.shape).add_(_field_on_grid(in_moving, field.grid, reference)[None])


def _field_on_grid(values: torch.Tensor, grid: Grid, reference: Grid) -> torch.Tensor:
    """Channels-last values ``[K', J', I', C]`` on ``grid`` read at every reference voxel, ``[K, J, I, C]``, as
    :meth:`DisplacementField.displacement_at` reads a field: linear inside, the edge value up to half a voxel
    outside ``grid``, zero further out.

    When the two grids' axes are parallel (a field estimated on a coarsened copy of the reference grid) the
    values are interpolated one axis at a time (:func:`~RegSegLib.transforms.fields.interpolate_along`), else
    with one ``grid_sample``.
    """
    device = values.device
    reference_to_grid = np.linalg.inv(grid.ijk_to_ras) @ reference.ijk_to_ras
    linear = reference_to_grid[:3, :3]
    diagonal = np.diag(linear).copy()
    size = np.asarray(grid.shape[::-1], dtype=np.float64)
    if np.abs(linear - np.diag(diagonal)).max() > AXIS_TOLERANCE * np.abs(diagonal).max():
        to_grid = grid.ras_to_normalized() @ reference.normalized_to_ras()
        at_grid = fields.affine_sampling_grid(torch.as_tensor(to_grid[:3], device=device), reference.shape)
        normalizer = geometry.ijk_to_normalized(grid.shape)
        scale = torch.as_tensor(np.diag(normalizer)[:3].copy(), device=device)
        ijk = (at_grid.double() - torch.as_tensor(normalizer[:3, 3].copy(), device=device)) / scale
        inside = ((ijk >= -0.5) & (ijk < torch.as_tensor(size - 0.5, device=device))).all(dim=-1)[0]
        sampled = fields.sample(values.permute(3, 0, 1, 2)[None], at_grid, padding_mode="border")[0]
        return sampled.permute(1, 2, 3, 0) * inside[..., None]
    inside = np.ones((1, 1, 1), dtype=bool)
    for axis, dim in ((0, 2), (1, 1), (2, 0)):
        positions = diagonal[axis] * np.arange(reference.shape[::-1][axis], dtype=np.float64) + reference_to_grid[axis, 3]
        values = fields.interpolate_along(values, dim, torch.as_tensor(positions, device=device))
        shape = [1, 1, 1]
        shape[dim] = -1
        inside = inside & ((positions >= -0.5) & (positions < size[axis] - 0.5)).reshape(shape)
    return values if inside.all() else values * torch.as_tensor(inside[..., None], device=device)


def resample(
    moving: Volume,
    reference: Volume | Grid,
    transform: Transform | None = None,
    mode: str | None = None,
    padding_value: float = 0.0,
) -> Volume:
    """Resamples ``moving`` onto the reference grid through a fixed-to-moving transform.

    ``out(x) = moving(T(x))`` for every voxel centre ``x`` of the reference grid.

    Args:
        moving: the volume to read from, ``[C, K, J, I]``.
        reference: a volume whose grid is used, or a :class:`~RegSegLib.geometry.Grid`
            (or an ``(ijk_to_ras, (K, J, I))`` pair).
        transform: fixed-to-moving transform; ``None`` is identity.
        mode: ``"linear"`` or ``"nearest"``; ``None`` chooses by the volume's kind (nearest for label
            maps and masks). Integer data keep their dtype (rounded).
        padding_value: value outside the moving image.

    Returns:
        Volume of ``moving``'s kind on the reference grid with ``moving``'s channels.
    """
    grid = reference.grid if isinstance(reference, Volume) else Grid.of(*reference)
    if mode is None:
        mode = "linear" if moving.kind == "image" else "nearest"
    if mode not in MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; use 'linear' or 'nearest'")
    if transform is None and moving.grid.same_as(grid):  # every voxel centre is read where it lies
        data = moving.data if moving.is_integer else moving.data.float()
        return Volume(data.clone(), np.array(grid.ijk_to_ras, copy=True), dict(moving.meta), moving.kind)
    device = moving.data.device
    coordinates = moving_grid_coordinates(transform, grid, moving.grid, device)
    data = moving.data.float() - padding_value
    out = fields.sample(data[None], coordinates, mode="bilinear" if mode == "linear" else "nearest", padding_mode="zeros")
    out = out[0] + padding_value
    if moving.is_integer:
        out = torch.round(out).to(moving.data.dtype)
    return Volume(out, np.array(grid.ijk_to_ras, copy=True), dict(moving.meta), moving.kind)


def field_from_transform(transform: Transform, reference: Volume | Grid) -> DisplacementField:
    """Samples any transform as a displacement field on a reference grid, ``u(x) = T(x) - x``."""
    grid = reference.grid if isinstance(reference, Volume) else Grid.of(*reference)
    device = reference.data.device if isinstance(reference, Volume) else None
    points = grid.points_ras(device)
    moved = transform.transform_points(points)
    return DisplacementField((moved - points).permute(3, 0, 1, 2).contiguous(), grid.ijk_to_ras.copy())
