"""Anti-aliased downsampling of volumes and tensors: image pyramids and coarse working grids.

Every reduction smooths with the Gaussian of :func:`RegSegLib.ops.filters.antialias_sigmas` before it
samples, so coarse levels do not alias.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from RegSegLib import geometry
from RegSegLib.ops.filters import antialias_sigmas, gaussian_along, gaussian_smooth
from RegSegLib.transforms import fields, resample
from RegSegLib.volume import Volume

MIN_SIGMA_VOX: float = 0.2
"""Pre-filters narrower than this (in voxels, on every axis) are skipped: they would change nothing."""


def antialiased(volume: Volume, target_spacing: Sequence[float] | np.ndarray) -> Volume:
    """A float volume smoothed for sampling at ``target_spacing`` (mm along i, j, k); unchanged when not coarser."""
    sigma_ijk = antialias_sigmas(np.asarray(target_spacing, dtype=np.float64) / volume.spacing)
    if np.all(sigma_ijk < MIN_SIGMA_VOX):
        return volume
    data = gaussian_smooth(volume.data[None].float(), tuple(float(s) for s in sigma_ijk[::-1]))[0]
    return volume.with_data(data)


def downsample(volume: Volume, spacing_ijk: np.ndarray, mask: torch.Tensor | None = None) -> Volume:
    """Smooths and resamples a volume to a grid of the same directions and extent with spacing ``max(own, spacing_ijk)``.

    Args:
        volume: float volume ``[C, K, J, I]``.
        spacing_ijk: wanted spacing along i, j, k in mm, ``[3]``.
        mask: optional ``[1, K, J, I]`` mask on the volume's grid; the smoothing is then normalised by
            the smoothed mask, so intensities outside the mask do not leak into it.

    Returns:
        The volume itself when no axis gets coarser, else the smoothed volume on the coarser grid.
    """
    native = volume.spacing
    target = np.maximum(native, spacing_ijk)
    if np.allclose(target, native, rtol=1e-3):
        return volume
    grid = geometry.resampled_grid(volume.ijk_to_ras, volume.shape, target)
    sigmas = antialias_sigmas(target / native)
    positions = _source_positions(volume.grid, grid)
    if mask is None:
        data = _smooth_and_sample(volume.data[None], sigmas, positions)[0]
    else:
        weight = _smooth_and_sample(mask[None].float(), sigmas, positions)[0]
        data = _smooth_and_sample((volume.data * mask)[None], sigmas, positions)[0] / weight.clamp_min(1e-3)
    return Volume(data, np.array(grid.ijk_to_ras, copy=True), dict(volume.meta), volume.kind)


def _source_positions(source: geometry.Grid, target: geometry.Grid) -> list[np.ndarray]:
    """Fractional source indices of the target voxel centres along i, j and k (grids with parallel axes)."""
    target_to_source = np.linalg.inv(source.ijk_to_ras) @ target.ijk_to_ras
    return [target_to_source[axis, axis] * np.arange(n, dtype=np.float64) + target_to_source[axis, 3] for axis, n in enumerate(target.shape[::-1])]


def _smooth_and_sample(x: torch.Tensor, sigmas_ijk: np.ndarray, positions: list[np.ndarray]) -> torch.Tensor:
    """``[B, C, K, J, I]`` smoothed and linearly sampled one axis at a time (i, then j, then k): each axis is
    filtered on a tensor already reduced along the previous ones, which is what makes a large volume cheap
    to reduce. Separable smoothing and separable linear interpolation give the same result as smoothing
    in 3D and sampling trilinearly."""
    for axis, dim in ((0, 4), (1, 3), (2, 2)):
        if sigmas_ijk[axis] >= MIN_SIGMA_VOX:
            x = gaussian_along(x, float(sigmas_ijk[axis]), dim)
        x = fields.interpolate_along(x, dim, torch.as_tensor(positions[axis], device=x.device))
    return x


def build_pyramid(volume: Volume, spacings: Sequence[np.ndarray], mask: Volume | None = None) -> list[Volume]:
    """Successively smoothed and downsampled copies of a volume, one per spacing (given fine to coarse).

    A mask on the volume's grid keeps the intensities outside it from leaking inside through the smoothing.
    """
    levels: list[Volume] = []
    current = volume
    for spacing_ijk in spacings:
        inside = None if mask is None else (resample(mask, current, mode="linear").data[:1] > 0.5).float()
        current = downsample(current, spacing_ijk, inside)
        levels.append(current)
    return levels


def resize_image(x: torch.Tensor, shape: tuple[int, int, int], factor: int) -> torch.Tensor:
    """Anti-aliased resize of ``[B, C, K, J, I]`` by about ``1 / factor`` to ``shape`` (same corner-aligned extent)."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    if factor > 1:
        x = gaussian_smooth(x, float(antialias_sigmas(factor)))
    return F.interpolate(x, size=shape, mode="trilinear", align_corners=geometry.ALIGN_CORNERS)


def level_shape(shape: Sequence[int], factor: int, minimum: int = 4) -> tuple[int, int, int]:
    """The shape of a grid shrunk by ``factor`` (at least ``minimum`` voxels per axis)."""
    return tuple(max(int(math.ceil(n / factor)), minimum) for n in shape)  # type: ignore[return-value]
