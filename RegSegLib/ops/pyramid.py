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
from RegSegLib.ops.filters import antialias_sigmas, gaussian_smooth
from RegSegLib.transforms import resample
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
    sigmas = tuple(float(s) for s in antialias_sigmas(target / native)[::-1])
    if mask is None:
        smoothed = gaussian_smooth(volume.data[None], sigmas)[0]
    else:
        weight = gaussian_smooth(mask[None].float(), sigmas)[0]
        smoothed = gaussian_smooth((volume.data * mask)[None], sigmas)[0] / weight.clamp_min(1e-3)
    return resample(volume.with_data(smoothed), grid)


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
