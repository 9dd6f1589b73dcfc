"""Differentiable spatial operations in ``grid_sample`` coordinates (``align_corners=True``).

Displacements here are in normalised coordinates of one grid, channel-last ``[B, K, J, I, 3]`` with
the last axis ``(x, y, z) = (i, j, k)``, the layout ``grid_sample`` takes. Conversion to and from RAS
millimetre fields (``[B, 3, K, J, I]``) uses the grid's IJK-to-RAS matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from RegSegLib import geometry


def identity_grid(shape_kji: tuple[int, int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised coordinates of every voxel, ``[1, K, J, I, 3]``."""
    theta = torch.eye(3, 4, device=device)[None]
    k, j, i = shape_kji
    return F.affine_grid(theta, [1, 1, k, j, i], align_corners=geometry.ALIGN_CORNERS)


def warp(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """Samples ``[B, C, K, J, I]`` at normalised coordinates ``[B, K', J', I', 3]``."""
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=geometry.ALIGN_CORNERS)


def _normalized_per_mm(ijk_to_ras: np.ndarray, shape_kji: tuple[int, int, int]) -> np.ndarray:
    """``[3, 3]`` linear map from RAS mm vectors to normalised-coordinate vectors of a grid."""
    return geometry.ras_to_normalized(ijk_to_ras, shape_kji)[:3, :3]


def field_mm_to_normalized(field: torch.Tensor, ijk_to_ras: np.ndarray) -> torch.Tensor:
    """RAS mm field ``[B, 3, K, J, I]`` -> normalised displacement ``[B, K, J, I, 3]``."""
    linear = torch.as_tensor(_normalized_per_mm(ijk_to_ras, field.shape[2:]), dtype=field.dtype, device=field.device)
    return torch.einsum("bckji,dc->bkjid", field, linear)


def field_normalized_to_mm(disp: torch.Tensor, ijk_to_ras: np.ndarray) -> torch.Tensor:
    """Normalised displacement ``[B, K, J, I, 3]`` -> RAS mm field ``[B, 3, K, J, I]``."""
    linear = np.linalg.inv(_normalized_per_mm(ijk_to_ras, disp.shape[1:4]))
    linear_t = torch.as_tensor(linear, dtype=disp.dtype, device=disp.device)
    return torch.einsum("bkjid,cd->bckji", disp, linear_t)


def compose_displacements(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Displacement of ``(id + outer) o (id + inner)``: ``inner + outer(x + inner(x))``, ``[B, K, J, I, 3]``."""
    grid = identity_grid(inner.shape[1:4], inner.device) + inner
    outer_at = warp(outer.permute(0, 4, 1, 2, 3), grid, padding_mode="border").permute(0, 2, 3, 4, 1)
    return inner + outer_at


def integrate_velocity_normalized(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring of a normalised stationary velocity field ``[B, K, J, I, 3]``."""
    disp = velocity / (2**steps)
    for _ in range(steps):
        disp = compose_displacements(disp, disp)
    return disp


def resize_displacement(disp: torch.Tensor, shape_kji: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize of a normalised displacement ``[B, K, J, I, 3]`` to another grid of the same extent.

    With ``align_corners=True`` normalised coordinates describe the same points on both grids, so the
    vectors need no rescaling.
    """
    if tuple(disp.shape[1:4]) == tuple(shape_kji):
        return disp
    out = F.interpolate(disp.permute(0, 4, 1, 2, 3), size=shape_kji, mode="trilinear", align_corners=geometry.ALIGN_CORNERS)
    return out.permute(0, 2, 3, 4, 1)


def smooth_average(x: torch.Tensor, kernel: int = 3, repeats: int = 1) -> torch.Tensor:
    """Repeated ``kernel``-cubed average filtering of ``[B, C, K, J, I]`` with replicate padding."""
    pad = kernel // 2
    for _ in range(repeats):
        x = F.avg_pool3d(F.pad(x, [pad] * 6, mode="replicate"), kernel, stride=1)
    return x


def gaussian_smooth(x: torch.Tensor, sigma_vox: float | tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``[B, C, K, J, I]`` (sigma in voxels per (k, j, i) axis)."""
    sigmas = (sigma_vox,) * 3 if isinstance(sigma_vox, (int, float)) else tuple(sigma_vox)
    channels = x.shape[1]
    for dim, sigma in zip((2, 3, 4), sigmas):
        if sigma <= 0 or x.shape[dim] == 1:
            continue
        radius = max(int(np.ceil(3 * sigma)), 1)
        radius = min(radius, x.shape[dim] - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
        weights = weights / weights.sum()
        shape = [1, 1, 1, 1, 1]
        shape[dim] = weights.numel()
        kernel = weights.reshape(shape).repeat(channels, 1, 1, 1, 1)
        pads = [0, 0, 0, 0, 0, 0]
        pads[2 * (4 - dim)] = radius
        pads[2 * (4 - dim) + 1] = radius
        x = F.conv3d(F.pad(x, pads, mode="replicate"), kernel, groups=channels)
    return x
