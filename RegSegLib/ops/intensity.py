"""Robust intensity scaling: the one rule that maps an image's intensity window to [0, 1]."""

from __future__ import annotations

from typing import Sequence

import torch

MAX_QUANTILE_SAMPLES: int = 500_000
"""Quantiles are estimated on a regular subset of at most about this many voxels."""


def robust_range(
    data: torch.Tensor | Sequence[torch.Tensor], low: float = 0.005, high: float = 0.995
) -> tuple[float, float]:
    """The ``low`` and ``high`` intensity quantiles of one or several tensors, pooled.

    Quantiles are taken on a regular subset of at most about :data:`MAX_QUANTILE_SAMPLES` voxels.
    When they coincide (a mostly constant image) the full minimum-maximum range is used instead, and
    a constant input gives ``(v, v + 1)``.

    Args:
        data: tensor(s) of any shape.
        low: lower quantile in [0, 1].
        high: upper quantile in [0, 1].

    Returns:
        ``(lo, hi)`` with ``hi > lo``.
    """
    tensors = [data] if isinstance(data, torch.Tensor) else list(data)
    values = torch.cat([t.detach().float().reshape(-1) for t in tensors])
    sample = values[:: max(1, values.numel() // MAX_QUANTILE_SAMPLES)]
    lo, hi = (_quantile(sample, q) for q in (low, high))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _quantile(values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile of a 1D tensor, interpolated linearly between order statistics as
    ``torch.quantile`` does.

    The two order statistics come from the shorter tail (``topk``, sorted): for the extreme
    quantiles of an intensity window that is a few hundred values, several times faster than
    selecting each one (``kthvalue``) from the whole tensor.
    """
    n = values.numel()
    position = q * (n - 1)
    below = int(position)
    above = min(below + 1, n - 1)
    if above + 1 <= n - below:
        tail = values.topk(above + 1, largest=False).values
        first, second = float(tail[below]), float(tail[above])
    else:
        tail = values.topk(n - below, largest=True).values
        first, second = float(tail[n - 1 - below]), float(tail[n - 1 - above])
    return first + (position - below) * (second - first)


def robust_scale(data: torch.Tensor, low: float = 0.005, high: float = 0.995) -> torch.Tensor:
    """Maps the ``low``/``high`` quantiles of ``data`` (:func:`robust_range`) to 0/1 and clamps to [0, 1] (float32)."""
    lo, hi = robust_range(data, low, high)
    return ((data.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
