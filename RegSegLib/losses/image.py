"""Image similarity measures for registration (ALGORITHMS.md section A).

Every loss takes images ``[B, C, K, J, I]`` (``fixed`` and ``warped``, the moving image already
resampled onto the fixed grid) and an optional weight mask ``[B, 1, K, J, I]`` with values in
``[0, 1]``: voxels of weight 0 do not count (for local NCC they still enter their neighbours'
windows, see :func:`local_ncc_map`). Losses are minimised (lower is better) and return a scalar tensor:

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

Intensity-based measures expect images scaled to about ``[0, 1]`` (the registration engines do
this with :func:`RegSegLib.ops.intensity.robust_scale`); mutual information clamps to that range.

Local NCC uses box windows that shrink at the image border (:func:`RegSegLib.ops.filters.box_mean`),
with local statistics weighted by the mask; the MIND distance is the squared Euclidean distance of the
twelve-channel descriptors, averaged over voxels (:func:`descriptor_distance`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from RegSegLib.losses.reduction import EPS, check_pair, mask_weights, weighted_mean
from RegSegLib.losses.segmentation import DiceLoss, dice
from RegSegLib.ops.filters import box_mean
from RegSegLib.ops.mind import mind_ssc
from RegSegLib.validation import check_choice
from RegSegLib.vocabulary import METRICS  # noqa: F401  (re-exported as RegSegLib.losses.METRICS)


LNCC_EPS = 1e-5
"""Added to the product of the local variances: flat windows (variance far below it) count as uncorrelated."""


def mse(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference (scalar)."""
    check_pair(fixed, warped, mask)
    return weighted_mean((fixed - warped) ** 2, mask)


def descriptor_distance(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distance of per-voxel feature vectors ``[B, C, K, J, I]``, averaged over voxels (scalar).

    The distance of MIND-SSC descriptors (and, for one channel, the MSE).
    """
    check_pair(fixed, warped, mask)
    return weighted_mean((fixed - warped).pow(2).sum(dim=1, keepdim=True), mask)


def global_ncc(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised cross-correlation over the (masked) image, averaged over batch and channels (scalar in [-1, 1])."""
    check_pair(fixed, warped, mask)
    weights = mask_weights(fixed, mask)
    dims = (2, 3, 4)
    total = weights.sum(dim=dims, keepdim=True).clamp_min(EPS)
    mean_f = (weights * fixed).sum(dim=dims, keepdim=True) / total
    mean_w = (weights * warped).sum(dim=dims, keepdim=True) / total
    df, dw = fixed - mean_f, warped - mean_w
    cov = (weights * df * dw).sum(dim=dims)
    var_f = (weights * df * df).sum(dim=dims)
    var_w = (weights * dw * dw).sum(dim=dims)
    return (cov / torch.sqrt((var_f * var_w).clamp_min(1e-20))).mean()


def _local_moments(image: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and variance of ``[B, C, K, J, I]`` over ``window``-cubed boxes (shrinking at the border)."""
    mean = box_mean(image, window)
    return mean, (box_mean(image * image, window) - mean * mean).clamp_min(0.0)


def local_ncc_map(
    fixed: torch.Tensor,
    warped: torch.Tensor,
    mask: torch.Tensor | None = None,
    window: int = 7,
    fixed_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Squared local normalised cross-correlation in a cubic window, ``[B, C, K, J, I]``, values in [0, 1].

    Windows shrink at the image border. A mask selects where the map counts (its weighted mean), not
    which voxels enter the windows: as with ANTs' and elastix's masks, the neighbourhood of a voxel at
    the mask's edge is the image's. (Windows cut at the mask edge were tried: the masked registration
    test's error inside the mask rose by 16 %.)

    Args:
        fixed: ``[B, C, K, J, I]``.
        warped: ``[B, C, K, J, I]``.
        mask: optional ``[B, 1, K, J, I]`` weights (only checked here).
        window: odd window width in voxels.
        fixed_moments: the fixed image's local mean and variance from an earlier call
            (:class:`LocalNCCLoss` keeps them while the fixed image stays the same).
    """
    check_pair(fixed, warped, mask)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"local NCC window must be a positive odd number, got {window}")
    mean_f, var_f = fixed_moments or _local_moments(fixed, window)
    mean_w, var_w = _local_moments(warped, window)
    cov = box_mean(fixed * warped, window) - mean_f * mean_w
    return cov * cov / (var_f * var_w + LNCC_EPS)


def local_ncc(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None, window: int = 7) -> torch.Tensor:
    """Mean squared local NCC over the (masked) voxels (scalar in [0, 1])."""
    return weighted_mean(local_ncc_map(fixed, warped, mask, window), mask)


def _bspline3(u: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline kernel (support ``|u| < 2``)."""
    a = u.abs()
    inner = 2.0 / 3.0 - a * a + 0.5 * a * a * a
    outer = (2.0 - a).clamp_min(0.0) ** 3 / 6.0
    return torch.where(a < 1.0, inner, outer)


def _parzenmask_weights(values: torch.Tensor, num_bins: int) -> torch.Tensor:
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
    check_pair(fixed, warped, mask)
    weights = mask_weights(fixed, mask).expand_as(fixed).reshape(-1)
    f, w = fixed.reshape(-1), warped.reshape(-1)
    if max_samples is not None and f.numel() > max_samples:
        stride = math.ceil(f.numel() / max_samples)
        f, w, weights = f[::stride], w[::stride], weights[::stride]
    keep = weights > 0
    f, w, weights = f[keep], w[keep], weights[keep]
    total = weights.sum().clamp_min(EPS)
    weights_f = _parzenmask_weights(f, num_bins) * (weights / total)[:, None]
    weights_w = _parzenmask_weights(w, num_bins)
    joint = weights_f.T @ weights_w
    p_f = joint.sum(dim=1, keepdim=True)
    p_w = joint.sum(dim=0, keepdim=True)
    ratio = joint / (p_f * p_w).clamp_min(1e-12)
    return (joint * torch.log(ratio.clamp_min(1e-12))).sum()


def mind_loss(
    fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None, radius: int = 1, dilation: int = 2
) -> torch.Tensor:
    """:func:`descriptor_distance` of the MIND-SSC descriptors of two images (scalar)."""
    check_pair(fixed, warped, mask)
    return descriptor_distance(mind_ssc(fixed, radius, dilation), mind_ssc(warped, radius, dilation), mask)


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

    The fixed image's local moments are computed once and reused while the same fixed tensor is
    passed (an optimisation loop), which saves two of the five box filters per step.

    Args:
        window: odd window width in voxels (5-9 is usual).
    """

    def __init__(self, window: int = 7) -> None:
        super().__init__()
        self.window = window
        self._cached: tuple | None = None
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        cached = self._cached
        if cached is None or cached[0] is not fixed or cached[1:] != (fixed._version, self.window):
            with torch.no_grad():
                self._moments = _local_moments(fixed.detach(), self.window)
            self._cached = (fixed, fixed._version, self.window)
        return 1.0 - weighted_mean(local_ncc_map(fixed, warped, mask, self.window, self._moments), mask)


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


REGISTRY: dict[str, tuple] = {
    "lncc": (local_ncc, LocalNCCLoss),
    "ncc": (global_ncc, NCCLoss),
    "mse": (mse, MSELoss),
    "mi": (mutual_information, MutualInformationLoss),
    "mind": (mind_loss, MINDLoss),
    "dice": (dice, DiceLoss),
}
"""Metric name -> (the measure :func:`similarity` reports, the loss module :func:`make_loss` builds)."""


def make_loss(metric: str, **options) -> nn.Module:
    """The loss module of a metric name (``mse``, ``ncc``, ``lncc``, ``mi``, ``mind``, ``dice``).

    Args:
        metric: metric name.
        **options: passed to the module (e.g. ``window`` for ``lncc``, ``num_bins`` for ``mi``).
    """
    check_choice(metric, REGISTRY, "similarity metric")
    return REGISTRY[metric][1](**options)


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
    check_choice(metric, REGISTRY, "similarity metric")
    return float(REGISTRY[metric][0](fixed, warped, mask))
