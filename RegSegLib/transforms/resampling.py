"""Resampling a volume through a fixed-to-moving transform: ``out(x) = moving(T(x))`` on a reference grid."""

from __future__ import annotations

import numpy as np
import torch

from RegSegLib.geometry import Grid
from RegSegLib.transforms import fields
from RegSegLib.transforms.records import AffineTransform, CompositeTransform, DisplacementField, Transform, compose
from RegSegLib.volume import Volume

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

    Purely affine transforms go through ``affine_grid`` without building world coordinates.

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
    points = simplified.transform_points(reference.points_ras(device))
    matrix = torch.as_tensor(to_moving, dtype=torch.float64, device=device)
    return (points.double() @ matrix[:3, :3].T + matrix[:3, 3]).float()[None]


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
