"""The before/after report of a registration (what ``metrics.json`` holds) and JSON-ready values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from RegSegLib.evaluation.fields import jacobian_statistics
from RegSegLib.evaluation.overlap import dice_per_label, mean_ignoring_nan
from RegSegLib.losses import similarity
from RegSegLib.geometry import Grid
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.ops.pyramid import downsample
from RegSegLib.transforms import DisplacementField, Transform, resample
from RegSegLib.volume import Volume
from RegSegLib.vocabulary import METRICS


SIMILARITY_VOXELS = 1_000_000
"""The similarity before and after is measured on the fixed grid coarsened to this many voxels."""


@dataclass
class RegistrationOutcome:
    """A registration applied and measured.

    Attributes:
        warped: the moving image on the fixed grid through the transform.
        warped_labels: the moving label map through the transform (nearest neighbour), or ``None``.
        report: ``similarity`` (before/after), ``dice`` (per label, before/after, when labels are given)
            and ``jacobian`` (when there is a displacement field).
    """

    warped: Volume
    warped_labels: Volume | None
    report: dict[str, Any]


def similarity_report(
    fixed: Volume,
    moving: Volume,
    transform: Transform,
    metric: str,
    fixed_mask: Volume | None = None,
    warped: Volume | None = None,
    working_images: tuple[Volume, Volume] | None = None,
) -> dict[str, Any]:
    """A metric on robustly scaled images (0.5-99.5 percentiles to [0, 1]) before and after registration.

    Measured on the fixed grid coarsened to :data:`SIMILARITY_VOXELS` voxels (:meth:`Grid.within_voxels`;
    the fixed grid itself when smaller), both images reduced for it (:func:`downsample`): the scale the
    registration works at, and seconds instead of minutes on a large CT. Reducing already reduced copies
    (``working_images``) gives the same anti-aliasing filter, as Gaussians compose; they are used when
    every axis of theirs is at least as fine as the report's grid.

    Args:
        fixed: the fixed image (first channel used).
        moving: the moving image (first channel used).
        transform: the fixed-to-moving transform; "before" is identity.
        metric: ``mse``, ``ncc``, ``lncc``, ``mi`` or ``mind``.
        fixed_mask: where the metric counts (on the fixed grid).
        warped: ``moving`` already resampled on the fixed grid through ``transform`` (linear); used for
            "after" when the report's grid is the fixed grid and the moving image needs no reduction for it.
        working_images: ``(fixed, moving)`` already smoothed and resampled to a coarser spacing
            (:attr:`~RegSegLib.registration.pipeline.RegistrationResult.working_images`).
    """
    grid = fixed.grid.within_voxels(SIMILARITY_VOXELS)
    finest = float(grid.spacing.min()) * (1.0 + 1e-3)
    fine_enough = working_images is not None and all(float(v.spacing.max()) <= finest for v in working_images)
    fixed_source, moving_source = working_images if fine_enough else (fixed, moving)
    fixed_scaled = robust_scale(resample(_first_smoothed(fixed_source, grid), grid).data)[None]
    moving_smoothed = _first_smoothed(moving_source, grid)
    mask = None if fixed_mask is None else (resample(fixed_mask, grid, mode="nearest").data[:1] != 0).float()[None]
    name, higher_is_better = METRICS[metric]
    reusable = warped is not None and grid.same_as(fixed.grid) and moving_smoothed.grid.same_as(moving.grid)
    after = warped.data[:1].float() if reusable else resample(moving_smoothed, grid, transform).data
    values = {
        "before": similarity(fixed_scaled, robust_scale(resample(moving_smoothed, grid).data)[None], metric, mask),
        "after": similarity(fixed_scaled, robust_scale(after)[None], metric, mask),
    }
    return {"metric": metric, "name": name, "higher_is_better": higher_is_better, **values}


def _first_smoothed(volume: Volume, grid: Grid) -> Volume:
    """The first channel as float, reduced to ``grid``'s spacing (:func:`downsample`)."""
    return downsample(volume.with_data(volume.data[:1].float(), kind="image"), grid.spacing)


def dice_report(fixed_labels: Volume, before: Volume, after: Volume, labels: Sequence[int] | None = None) -> dict[str, Any]:
    """Dice per label and its mean, after and before registration (labels on the fixed grid)."""
    dice_after = dice_per_label(fixed_labels.data[0], after.data[0], labels)
    dice_before = dice_per_label(fixed_labels.data[0], before.data[0], list(dice_after))
    return {
        "per_label": dice_after,
        "mean": mean_ignoring_nan(dice_after),
        "before_per_label": dice_before,
        "mean_before": mean_ignoring_nan(dice_before),
    }


def evaluate_registration(
    fixed: Volume,
    moving: Volume,
    transform: Transform,
    field: DisplacementField | None,
    metric: str,
    *,
    fixed_mask: Volume | None = None,
    fixed_labels: Volume | None = None,
    moving_labels: Volume | None = None,
    labels: Sequence[int] | None = None,
    working_images: tuple[Volume, Volume] | None = None,
) -> RegistrationOutcome:
    """Applies a registration result and measures it against the start.

    Args:
        fixed: the fixed image.
        moving: the moving image.
        transform: the whole fixed-to-moving transform.
        field: the deformable stage's displacement field, for the Jacobian statistics.
        metric: the similarity reported before and after.
        fixed_mask: where the similarity counts.
        fixed_labels: fixed label map (with ``moving_labels``: Dice before and after).
        moving_labels: moving label map.
        labels: the labels scored (default: every nonzero label present).
        working_images: the registration's reduced inputs, for the similarity report (:func:`similarity_report`).
    """
    warped = resample(moving, fixed, transform, mode="linear")
    measured = similarity_report(fixed, moving, transform, metric, fixed_mask, warped, working_images)
    report: dict[str, Any] = {"similarity": measured}
    warped_labels = None
    if fixed_labels is not None and moving_labels is not None:
        labels_before = resample(moving_labels, fixed, None, mode="nearest")
        warped_labels = resample(moving_labels, fixed, transform, mode="nearest")
        report["dice"] = dice_report(fixed_labels, labels_before, warped_labels, labels)
    if field is not None:
        report["jacobian"] = jacobian_statistics(field)
    return RegistrationOutcome(warped, warped_labels, report)


def json_ready(value: Any) -> Any:
    """A copy of nested dicts/lists of numbers with ``nan``/``inf`` as ``None`` and keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
