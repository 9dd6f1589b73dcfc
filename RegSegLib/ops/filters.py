"""Separable filters on ``[B, C, K, J, I]`` tensors: box means, Gaussian smoothing, cell pooling.

Every box filter here averages over the voxels of the window that lie inside the grid (the window
shrinks at the borders), so a constant image stays constant up to its edges.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def box_sum(x: torch.Tensor, window: int, dim: int) -> torch.Tensor:
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
            x = box_sum(x, window, dim)
        return x.mul_(_inverse_counts(tuple(x.shape[2:]), window, x.dtype, x.device))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad * _inverse_counts(tuple(grad.shape[2:]), ctx.window, grad.dtype, grad.device)
        for dim in (2, 3, 4):
            grad = box_sum(grad, ctx.window, dim)
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


def gaussian_smooth(x: torch.Tensor, sigma_vox: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``[B, C, K, J, I]`` (sigma in voxels per (k, j, i) axis), edges replicated.

    Each axis is filtered by adding weighted shifted views of the edge-padded tensor, the symmetric taps in
    pairs: on a CPU this is several times faster than ``conv3d`` with a one-dimensional kernel.
    """
    sigmas = (sigma_vox,) * 3 if isinstance(sigma_vox, (int, float)) else tuple(sigma_vox)
    for dim, sigma in zip((2, 3, 4), sigmas):
        if sigma <= 0 or x.shape[dim] == 1:
            continue
        x = gaussian_along(x, float(sigma), dim)
    return x


def gaussian_along(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    """Gaussian of ``sigma`` voxels along ``dim`` (truncated at 3 sigma), the edge values replicated."""
    size = x.shape[dim]
    radius = min(max(int(np.ceil(3 * sigma)), 1), size - 1)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, size - 1, 1)
    padded = torch.cat([first] * radius + [x] + [last] * radius, dim=dim)
    out = x * float(weights[radius])
    for offset in range(1, radius + 1):
        pair = padded.narrow(dim, radius - offset, size) + padded.narrow(dim, radius + offset, size)
        out.add_(pair, alpha=float(weights[radius + offset]))
    return out


def antialias_sigmas(ratio: float | Sequence[float]) -> np.ndarray:
    """Gaussian sigmas (in source voxels) before sampling with ``ratio`` = new spacing / old spacing.

    ``sigma = 0.5 sqrt(ratio^2 - 1)`` (0 where the grid does not get coarser): the Gaussian that,
    convolved with the source's own half-voxel blur, gives the target's.

    Args:
        ratio: one value, or one per axis.

    Returns:
        Sigmas, one per value of ``ratio`` (same axis order).
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    return 0.5 * np.sqrt(np.clip(ratio**2 - 1.0, 0.0, None))


def pool_cells(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average of ``[B, C, K, J, I]`` over non-overlapping ``factor``-cubed cells (identity for 1)."""
    return x if factor == 1 else F.avg_pool3d(x, factor, stride=factor)
