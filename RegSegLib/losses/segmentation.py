"""Label-map losses: one-hot encoding and soft Dice (``[B, N, K, J, I]`` one-hot or probabilities)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from RegSegLib.losses.reduction import EPS, check_pair, mask_weights


def one_hot(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Integer label map ``[B, 1, K, J, I]`` -> float one-hot ``[B, N, K, J, I]`` (label ``n`` -> channel ``n``)."""
    if labels.ndim != 5 or labels.shape[1] != 1:
        raise ValueError(f"labels must be [B, 1, K, J, I], got {tuple(labels.shape)}")
    labels = labels.long()
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    return F.one_hot(labels[:, 0], num_classes).permute(0, 4, 1, 2, 3).float()


def dice(
    fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None, include_background: bool = False
) -> torch.Tensor:
    """Mean soft Dice of one-hot (or probabilistic) label maps ``[B, N, K, J, I]`` (scalar in [0, 1]).

    Channel 0 is the background and is left out unless ``include_background``. Labels absent from
    both maps count as a perfect match.
    """
    check_pair(fixed, warped, mask)
    if not include_background and fixed.shape[1] > 1:
        fixed, warped = fixed[:, 1:], warped[:, 1:]
    weights = mask_weights(fixed, mask)
    dims = (0, 2, 3, 4)
    overlap = (weights * fixed * warped).sum(dim=dims)
    size = (weights * (fixed + warped)).sum(dim=dims)
    return ((2.0 * overlap + EPS) / (size + EPS)).mean()


class DiceLoss(nn.Module):
    """``1 - mean soft Dice`` of one-hot label maps ``[B, N, K, J, I]``.

    Args:
        include_background: whether channel 0 counts.
    """

    def __init__(self, include_background: bool = False) -> None:
        super().__init__()
        self.include_background = include_background

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return 1.0 - dice(fixed, warped, mask, self.include_background)
