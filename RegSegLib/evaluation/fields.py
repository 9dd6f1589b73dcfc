"""Regularity of a displacement field: statistics of the Jacobian determinant (folding, SD log J)."""

from __future__ import annotations

import torch

from RegSegLib.evaluation.overlap import as_label_array
from RegSegLib.transforms import DisplacementField, jacobian_determinant


def jacobian_statistics(field: DisplacementField, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Regularity of a displacement field from the determinant of the Jacobian of ``x -> x + u(x)``.

    Args:
        field: displacement field ``[3, K, J, I]`` (RAS mm on its grid).
        mask: optional ``[K, J, I]`` (or ``[1, K, J, I]``) mask on the field's grid; nonzero voxels are used.

    Returns:
        ``{"folding_fraction"``: share of voxels with determinant ``<= 0``, ``"min"``, ``"max"``,
        ``"log_std"``: standard deviation of ``log(max(det, 1e-9))`` (the Learn2Reg SDlogJ)``}``.
    """
    det = jacobian_determinant(field).double()
    if mask is not None:
        selected = as_label_array(mask).to(det.device) != 0
        if selected.shape != det.shape:
            raise ValueError(f"mask shape {tuple(selected.shape)} does not fit the field grid {tuple(det.shape)}")
        det = det[selected]
    det = det.reshape(-1)
    if det.numel() == 0:
        raise ValueError("the mask selects no voxel")
    log_det = torch.log(det.clamp_min(1e-9))
    return {
        "folding_fraction": float((det <= 0).double().mean()),
        "min": float(det.min()),
        "max": float(det.max()),
        "log_std": float(log_det.std(unbiased=False)),
    }
