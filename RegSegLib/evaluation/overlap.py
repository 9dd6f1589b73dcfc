"""Label overlap and surface distance of label maps on one grid.

Label maps are ``[K, J, I]`` integer tensors on one grid (a leading channel axis of size 1 is accepted).
A metric that is undefined (a label absent from both maps for Dice, absent from either map for HD95) is
``nan``; :func:`RegSegLib.evaluation.report.json_ready` turns ``nan`` into ``None`` for JSON files.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch



def as_label_array(labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    tensor = torch.as_tensor(labels)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise ValueError(f"label maps must be [K, J, I], got shape {tuple(tensor.shape)}")
    return tensor


def _check_pair(fixed_labels: torch.Tensor, warped_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fixed = as_label_array(fixed_labels)
    warped = as_label_array(warped_labels).to(fixed.device)
    if fixed.shape != warped.shape:
        raise ValueError(f"label maps differ in shape: {tuple(fixed.shape)} and {tuple(warped.shape)}")
    return fixed, warped


def _label_counts(values: torch.Tensor) -> dict[int, int]:
    """Voxel count of every value present (one pass instead of one per label)."""
    found, counts = np.unique(values.cpu().numpy(), return_counts=True)
    return dict(zip(found.tolist(), counts.tolist()))


def _labels_to_use(fixed_counts: dict[int, int], warped_counts: dict[int, int], labels: Sequence[int] | None) -> list[int]:
    if labels is not None:
        return [int(label) for label in labels]
    return sorted(label for label in set(fixed_counts) | set(warped_counts) if label != 0)


def dice_per_label(
    fixed_labels: torch.Tensor, warped_labels: torch.Tensor, labels: Sequence[int] | None = None
) -> dict[int, float]:
    """Dice overlap ``2 |A n B| / (|A| + |B|)`` of each label.

    Args:
        fixed_labels: ``[K, J, I]`` integer label map of the fixed image.
        warped_labels: ``[K, J, I]`` integer label map of the moving image resampled onto the fixed grid.
        labels: labels to evaluate; ``None`` means every nonzero label present in either map.

    Returns:
        ``{label: dice}``; ``nan`` for a label absent from both maps.
    """
    fixed, warped = _check_pair(fixed_labels, warped_labels)
    fixed_counts = _label_counts(fixed)
    warped_counts = _label_counts(warped)
    overlap_counts = _label_counts(fixed[fixed == warped])
    result: dict[int, float] = {}
    for label in _labels_to_use(fixed_counts, warped_counts, labels):
        total = fixed_counts.get(label, 0) + warped_counts.get(label, 0)
        result[label] = 2.0 * overlap_counts.get(label, 0) / total if total else math.nan
    return result


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    return mask & ~eroded


def hd95_per_label(
    fixed_labels: torch.Tensor,
    warped_labels: torch.Tensor,
    spacing: Sequence[float],
    labels: Sequence[int] | None = None,
    percentile: float = 95.0,
) -> dict[int, float]:
    """Robust (95th percentile) Hausdorff distance of each label, in mm.

    The surfaces are the boundary voxels of each label (voxels with a 6-neighbour outside it). For each
    direction (fixed surface to warped surface and back) the ``percentile`` of the distances from one
    surface to the other is taken, from a Euclidean distance transform with the voxel spacing; the
    larger of the two is returned (the definition of MONAI's ``compute_hausdorff_distance``).

    Args:
        fixed_labels: ``[K, J, I]`` integer label map.
        warped_labels: ``[K, J, I]`` integer label map on the same grid.
        spacing: voxel size along ``(i, j, k)`` in mm (``Volume.spacing``).
        labels: labels to evaluate; ``None`` means every nonzero label present in either map.
        percentile: 95 for HD95, 100 for the classic Hausdorff distance.

    Returns:
        ``{label: distance_mm}``; ``nan`` for a label missing from either map.
    """
    from scipy import ndimage

    fixed, warped = _check_pair(fixed_labels, warped_labels)
    sampling = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64)[::-1])
    fixed_np = fixed.cpu().numpy()
    warped_np = warped.cpu().numpy()
    result: dict[int, float] = {}
    for label in _labels_to_use(_label_counts(fixed), _label_counts(warped), labels):
        in_fixed = fixed_np == label
        in_warped = warped_np == label
        if not in_fixed.any() or not in_warped.any():
            result[label] = math.nan
            continue
        surface_fixed = _surface(in_fixed)
        surface_warped = _surface(in_warped)
        to_warped = ndimage.distance_transform_edt(~surface_warped, sampling=sampling)
        to_fixed = ndimage.distance_transform_edt(~surface_fixed, sampling=sampling)
        result[label] = float(
            max(np.percentile(to_warped[surface_fixed], percentile), np.percentile(to_fixed[surface_warped], percentile))
        )
    return result


def mean_ignoring_nan(values: dict[int, float]) -> float:
    """Mean of the finite values of a per-label dict; ``nan`` when there is none."""
    finite = [v for v in values.values() if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
