"""Differentiable spatial operations in ``grid_sample`` coordinates (``align_corners=True``).

Displacements here are in normalised coordinates of one grid, channel-last ``[B, K, J, I, 3]`` with
the last axis ``(x, y, z) = (i, j, k)``, the layout ``grid_sample`` takes. Conversion to and from RAS
millimetre fields (``[B, 3, K, J, I]``) uses the grid's IJK-to-RAS matrix.
"""

from __future__ import annotations

import functools

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


def _box_sum(x: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Sum over a centred ``window`` along ``dim`` with zeros outside the tensor.

    Windows up to 9 add shifted views in place; wider ones difference prefix sums (a cost
    independent of the width).
    """
    radius = window // 2
    size = x.shape[dim]
    if window <= 9:
        total = x.clone()
        for offset in range(1, min(radius, size - 1) + 1):
            total.narrow(dim, offset, size - offset).add_(x.narrow(dim, 0, size - offset))
            total.narrow(dim, 0, size - offset).add_(x.narrow(dim, offset, size - offset))
        return total
    pads = [0] * (2 * x.ndim)
    pads[2 * (x.ndim - 1 - dim)] = radius + 1
    pads[2 * (x.ndim - 1 - dim) + 1] = radius
    prefix = torch.cumsum(F.pad(x, pads), dim=dim)
    return prefix.narrow(dim, window, size) - prefix.narrow(dim, 0, size)


@functools.lru_cache(maxsize=16)
def _inverse_counts(shape: tuple[int, int, int], window: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``1 / (number of in-grid voxels of the centred window)`` at every voxel, ``[1, 1, K, J, I]``."""
    radius = window // 2
    counts = []
    for size in shape:
        index = torch.arange(size, dtype=dtype, device=device)
        counts.append((index + radius).clamp(max=size - 1) - (index - radius).clamp(min=0) + 1)
    product = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    return (1.0 / product)[None, None]


class _BoxMean(torch.autograd.Function):
    """Separable box mean over the last three axes, the window shrinking at the borders.

    The mean is ``D^-1 S`` with ``S`` the symmetric band matrix of the window sums and ``D`` the
    in-grid counts, so the gradient is ``S D^-1`` applied to the incoming gradient: both directions
    cost three cheap separable passes, far less than ``avg_pool3d`` and its backward on a CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int) -> torch.Tensor:
        ctx.window = window
        for dim in (2, 3, 4):
            x = _box_sum(x, window, dim)
        return x.mul_(_inverse_counts(tuple(x.shape[2:]), window, x.dtype, x.device))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad * _inverse_counts(tuple(grad.shape[2:]), ctx.window, grad.dtype, grad.device)
        for dim in (2, 3, 4):
            grad = _box_sum(grad, ctx.window, dim)
        return grad, None


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of ``[B, C, K, J, I]`` over centred ``window``-cubed boxes (only voxels inside the grid count)."""
    if window <= 1:
        return x
    return _BoxMean.apply(x.contiguous(), int(window))


def smooth_average(x: torch.Tensor, kernel: int = 3, repeats: int = 1) -> torch.Tensor:
    """Repeated ``kernel``-cubed box mean of ``[B, C, K, J, I]`` (only voxels inside the grid count)."""
    for _ in range(repeats):
        x = box_mean(x, kernel)
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
