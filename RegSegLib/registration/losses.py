"""Image similarity measures for registration (ALGORITHMS.md section A).

Every loss takes images ``[B, C, K, J, I]`` (``fixed`` and ``warped``, the moving image already
resampled onto the fixed grid) and an optional weight mask ``[B, 1, K, J, I]`` with values in
``[0, 1]``: voxels of weight 0 do not influence the result at all. Losses are minimised (lower is
better) and return a scalar tensor:

    ================ ===================== ==============================================
    metric           loss                  :func:`similarity` reports
    ================ ===================== ==============================================
    ``mse``          mean squared error    MSE (a distance, lower is better)
    ``ncc``          ``1 - NCC``           NCC in [-1, 1] (higher is better)
    ``lncc``         ``1 - mean LNCC^2``   mean squared local NCC in [0, 1] (higher is better)
    ``mi``           ``-MI``               mutual information in nats (higher is better)
    ``mind``         MSE of MIND-SSC       MIND distance (lower is better)
    ``dice``         ``1 - mean Dice``     mean Dice in [0, 1] (higher is better)
    ================ ===================== ==============================================

Intensity-based measures expect images scaled to about ``[0, 1]`` (the registration engine does
this with a robust percentile scaling); mutual information clamps to that range.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from RegSegLib.registration.mind import mind_ssc

METRICS: dict[str, tuple[str, bool]] = {
    "mse": ("MSE", False),
    "ncc": ("NCC", True),
    "lncc": ("LNCC", True),
    "mi": ("MI", True),
    "mind": ("MIND distance", False),
    "dice": ("Dice", True),
}
"""Metric name -> (report name, whether a larger reported value is better)."""

_EPS = 1e-5


def _check_pair(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None) -> None:
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


def _weights(fixed: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-voxel weights ``[B, 1, K, J, I]`` (ones without a mask)."""
    if mask is None:
        return torch.ones_like(fixed[:, :1])
    return mask.to(fixed.dtype).expand(fixed.shape[0], 1, *fixed.shape[2:])


def weighted_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``[B, C, K, J, I]`` values weighted by a ``[B, 1, K, J, I]`` mask (scalar)."""
    if mask is None:
        return values.mean()
    weights = _weights(values, mask)
    total = weights.sum() * values.shape[1]
    return (values * weights).sum() / total.clamp_min(_EPS)


def mse(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference (scalar)."""
    _check_pair(fixed, warped, mask)
    return weighted_mean((fixed - warped) ** 2, mask)


def global_ncc(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised cross-correlation over the (masked) image, averaged over batch and channels (scalar in [-1, 1])."""
    _check_pair(fixed, warped, mask)
    weights = _weights(fixed, mask)
    dims = (2, 3, 4)
    total = weights.sum(dim=dims, keepdim=True).clamp_min(_EPS)
    mean_f = (weights * fixed).sum(dim=dims, keepdim=True) / total
    mean_w = (weights * warped).sum(dim=dims, keepdim=True) / total
    df, dw = fixed - mean_f, warped - mean_w
    cov = (weights * df * dw).sum(dim=dims)
    var_f = (weights * df * df).sum(dim=dims)
    var_w = (weights * dw * dw).sum(dim=dims)
    return (cov / torch.sqrt((var_f * var_w).clamp_min(1e-20))).mean()


def _box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Separable box average of ``[B, C, K, J, I]`` with zero padding (the same constant scale everywhere)."""
    half = window // 2
    for axis in range(3):
        kernel = [1, 1, 1]
        padding = [0, 0, 0]
        if x.shape[2 + axis] > 1:
            kernel[axis] = window
            padding[axis] = half
        x = F.avg_pool3d(x, tuple(kernel), stride=1, padding=tuple(padding), count_include_pad=True)
    return x


def local_ncc_map(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None, window: int = 7) -> torch.Tensor:
    """Squared local normalised cross-correlation in a cubic window, ``[B, C, K, J, I]``, values in [0, 1].

    Local statistics are weighted by the mask, so masked-out voxels take no part in any window.

    Args:
        fixed: ``[B, C, K, J, I]``.
        warped: ``[B, C, K, J, I]``.
        mask: optional ``[B, 1, K, J, I]`` weights.
        window: odd window width in voxels (axes of size 1 are not windowed).
    """
    _check_pair(fixed, warped, mask)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"local NCC window must be a positive odd number, got {window}")
    weights = _weights(fixed, mask).expand_as(fixed)
    channels = fixed.shape[1]
    stack = torch.cat(
        [weights, weights * fixed, weights * warped, weights * fixed * fixed, weights * warped * warped, weights * fixed * warped],
        dim=1,
    )
    sums = _box_sum(stack, window)
    s_w, s_f, s_m, s_ff, s_mm, s_fm = sums.split(channels, dim=1)
    s_w = s_w.clamp_min(_EPS)
    mean_f, mean_m = s_f / s_w, s_m / s_w
    cov = s_fm / s_w - mean_f * mean_m
    var_f = (s_ff / s_w - mean_f * mean_f).clamp_min(0.0)
    var_m = (s_mm / s_w - mean_m * mean_m).clamp_min(0.0)
    return cov * cov / (var_f * var_m + 1e-8)


def local_ncc(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None, window: int = 7) -> torch.Tensor:
    """Mean squared local NCC over the (masked) voxels (scalar in [0, 1])."""
    return weighted_mean(local_ncc_map(fixed, warped, mask, window), mask)


def _bspline3(u: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline kernel (support ``|u| < 2``)."""
    a = u.abs()
    inner = 2.0 / 3.0 - a * a + 0.5 * a * a * a
    outer = (2.0 - a).clamp_min(0.0) ** 3 / 6.0
    return torch.where(a < 1.0, inner, outer)


def _parzen_weights(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Cubic B-spline Parzen weights of ``[N]`` values in [0, 1] on ``num_bins`` bins, ``[N, num_bins]`` (rows sum to 1)."""
    centres = torch.arange(num_bins, dtype=values.dtype, device=values.device)
    positions = values.clamp(0.0, 1.0) * (num_bins - 1)
    weights = _bspline3(positions[:, None] - centres[None, :])
    return weights / weights.sum(dim=1, keepdim=True)


def mutual_information(
    fixed: torch.Tensor,
    warped: torch.Tensor,
    mask: torch.Tensor | None = None,
    num_bins: int = 32,
    max_samples: int | None = None,
) -> torch.Tensor:
    """Mutual information (nats) from a differentiable joint histogram (Mattes-style Parzen windows).

    Both images are expected in [0, 1] (values are clamped); each voxel spreads its mass over the
    bins with a cubic B-spline window, so the estimate is differentiable with respect to ``warped``.
    Channels and batch items are pooled into one histogram.

    Args:
        fixed: ``[B, C, K, J, I]``.
        warped: ``[B, C, K, J, I]``.
        mask: optional ``[B, 1, K, J, I]`` weights.
        num_bins: histogram bins per image.
        max_samples: when set, a regular subset of at most this many voxels is used (speed).

    Returns:
        Scalar MI (>= 0).
    """
    _check_pair(fixed, warped, mask)
    weights = _weights(fixed, mask).expand_as(fixed).reshape(-1)
    f, w = fixed.reshape(-1), warped.reshape(-1)
    if max_samples is not None and f.numel() > max_samples:
        stride = math.ceil(f.numel() / max_samples)
        f, w, weights = f[::stride], w[::stride], weights[::stride]
    keep = weights > 0
    f, w, weights = f[keep], w[keep], weights[keep]
    total = weights.sum().clamp_min(_EPS)
    weights_f = _parzen_weights(f, num_bins) * (weights / total)[:, None]
    weights_w = _parzen_weights(w, num_bins)
    joint = weights_f.T @ weights_w
    p_f = joint.sum(dim=1, keepdim=True)
    p_w = joint.sum(dim=0, keepdim=True)
    ratio = joint / (p_f * p_w).clamp_min(1e-12)
    return (joint * torch.log(ratio.clamp_min(1e-12))).sum()


def mind_loss(
    fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None, radius: int = 1, dilation: int = 2
) -> torch.Tensor:
    """Mean squared difference of the MIND-SSC descriptors of two images (scalar)."""
    _check_pair(fixed, warped, mask)
    return mse(mind_ssc(fixed, radius, dilation), mind_ssc(warped, radius, dilation), mask)


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
    _check_pair(fixed, warped, mask)
    if not include_background and fixed.shape[1] > 1:
        fixed, warped = fixed[:, 1:], warped[:, 1:]
    weights = _weights(fixed, mask)
    dims = (0, 2, 3, 4)
    overlap = (weights * fixed * warped).sum(dim=dims)
    size = (weights * (fixed + warped)).sum(dim=dims)
    return ((2.0 * overlap + _EPS) / (size + _EPS)).mean()


class MSELoss(nn.Module):
    """Mean squared error loss."""

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return mse(fixed, warped, mask)


class NCCLoss(nn.Module):
    """``1 - NCC`` over the whole (masked) image."""

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return 1.0 - global_ncc(fixed, warped, mask)


class LocalNCCLoss(nn.Module):
    """``1 - mean squared local NCC`` in a ``window``-cubed box.

    Args:
        window: odd window width in voxels (5-9 is usual).
    """

    def __init__(self, window: int = 7) -> None:
        super().__init__()
        self.window = window

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return 1.0 - local_ncc(fixed, warped, mask, self.window)


class MutualInformationLoss(nn.Module):
    """``-MI`` with a Parzen-window joint histogram.

    Args:
        num_bins: histogram bins per image.
        max_samples: at most this many (regularly spaced) voxels enter the histogram.
    """

    def __init__(self, num_bins: int = 32, max_samples: int | None = 200_000) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.max_samples = max_samples

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return -mutual_information(fixed, warped, mask, self.num_bins, self.max_samples)


class MINDLoss(nn.Module):
    """Mean squared difference of MIND-SSC descriptors.

    Args:
        radius: patch radius (Gaussian sigma) in voxels.
        dilation: neighbour distance in voxels.
    """

    def __init__(self, radius: int = 1, dilation: int = 2) -> None:
        super().__init__()
        self.radius = radius
        self.dilation = dilation

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return mind_loss(fixed, warped, mask, self.radius, self.dilation)


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


def make_loss(metric: str, **options) -> nn.Module:
    """The loss module of a metric name (``mse``, ``ncc``, ``lncc``, ``mi``, ``mind``, ``dice``).

    Args:
        metric: metric name.
        **options: passed to the module (e.g. ``window`` for ``lncc``, ``num_bins`` for ``mi``).
    """
    classes = {
        "mse": MSELoss,
        "ncc": NCCLoss,
        "lncc": LocalNCCLoss,
        "mi": MutualInformationLoss,
        "mind": MINDLoss,
        "dice": DiceLoss,
    }
    if metric not in classes:
        raise ValueError(f"unknown similarity metric {metric!r}; choose one of {', '.join(classes)}")
    return classes[metric](**options)


@torch.no_grad()
def similarity(fixed: torch.Tensor, warped: torch.Tensor, metric: str, mask: torch.Tensor | None = None) -> float:
    """A metric's value for reports; :data:`METRICS` gives its name and direction.

    NCC, LNCC, MI and Dice are similarities (higher is better); MSE and the MIND distance are
    distances (lower is better).

    Args:
        fixed: ``[B, C, K, J, I]`` (one-hot label maps for ``dice``).
        warped: ``[B, C, K, J, I]``.
        metric: ``mse``, ``ncc``, ``lncc``, ``mi``, ``mind`` or ``dice``.
        mask: optional ``[B, 1, K, J, I]`` weights.
    """
    measures = {
        "mse": mse,
        "ncc": global_ncc,
        "lncc": local_ncc,
        "mi": mutual_information,
        "mind": mind_loss,
        "dice": dice,
    }
    if metric not in measures:
        raise ValueError(f"unknown similarity metric {metric!r}; choose one of {', '.join(METRICS)}")
    value = measures[metric](fixed, warped, mask)
    return float(value)
