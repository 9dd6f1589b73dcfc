"""Shape checks and mask-weighted reductions shared by the losses.

Masks are ``[B, 1, K, J, I]`` weights in ``[0, 1]`` (``B`` may be 1 for a batch); voxels of weight 0 do
not count.
"""

from __future__ import annotations

import torch

EPS = 1e-5
"""Guards divisions by a total weight."""


def check_pair(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None) -> None:
    if fixed.ndim != 5 or warped.ndim != 5:
        raise ValueError(
            f"expected [B, C, K, J, I] images, got {tuple(fixed.shape)} and {tuple(warped.shape)}"
        )
    if fixed.shape != warped.shape:
        raise ValueError(f"fixed {tuple(fixed.shape)} and warped {tuple(warped.shape)} differ in shape")
    if mask is not None:
        expected = (fixed.shape[0], 1, *fixed.shape[2:])
        if mask.ndim != 5 or mask.shape[1] != 1 or mask.shape[2:] != fixed.shape[2:] or mask.shape[0] not in (1, fixed.shape[0]):
            raise ValueError(f"mask must be {list(expected)}, got {tuple(mask.shape)}")


def mask_weights(fixed: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-voxel weights ``[B, 1, K, J, I]`` (ones without a mask)."""
    if mask is None:
        return torch.ones_like(fixed[:, :1])
    return mask.to(fixed.dtype).expand(fixed.shape[0], 1, *fixed.shape[2:])


def weighted_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``[B, C, K, J, I]`` values weighted by a ``[B, 1, K, J, I]`` mask (scalar)."""
    if mask is None:
        return values.mean()
    weights = mask_weights(values, mask)
    total = weights.sum() * values.shape[1]
    return (values * weights).sum() / total.clamp_min(EPS)
