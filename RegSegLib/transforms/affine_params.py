"""The four affine families and their parameters (ALGORITHMS.md section A).

Parameter vector layout ``[B, P]`` (rotations in radians, scales as deviation from 1, translations
in mm, shears dimensionless):

    =============== == ====================================================================
    family          P  layout
    =============== == ====================================================================
    rigid           6  rx, ry, rz, tx, ty, tz
    similarity      7  rx, ry, rz, tx, ty, tz, s
    anisotropic     9  rx, ry, rz, tx, ty, tz, sx, sy, sz
    affine          12 rx, ry, rz, tx, ty, tz, sx, sy, sz, hxy, hxz, hyz
    =============== == ====================================================================

Axes x, y, z are R, A, S. Composition order (about a centre ``c``, normally the fixed image
centre)::

    T(p) = c + t + R @ S @ H @ (p - c),   R = Rz(rz) @ Ry(ry) @ Rx(rx)

``H`` is upper triangular with ones on the diagonal (``H[0,1]=hxy, H[0,2]=hxz, H[1,2]=hyz``).
For networks, translations are also expressed as a fraction of the half image extent (PyTorch's
normalised convention) through :func:`translation_to_normalized` / :func:`translation_from_normalized`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from RegSegLib.validation import check_choice
from RegSegLib.vocabulary import FAMILIES


def num_parameters(family: str) -> int:
    """Number of parameters of a family name."""
    check_choice(family, FAMILIES, "transform family")
    return FAMILIES[family]


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``R = Rz @ Ry @ Rx`` from ``[B, 3]`` angles (radians about R, A, S), ``[B, 3, 3]``."""
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def parameters_to_matrix(
    params: torch.Tensor, family: str, centre: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """Homogeneous ``[B, 4, 4]`` matrices from ``[B, P]`` parameters of a family.

    Args:
        params: ``[B, P]`` parameters, layout in the module docstring.
        family: ``rigid``, ``similarity``, ``anisotropic`` or ``affine``.
        centre: ``[3]`` or ``[B, 3]`` RAS centre of rotation and scaling; origin when ``None``.

    Returns:
        ``[B, 4, 4]`` matrices mapping RAS points (same dtype and device as ``params``).
    """
    expected = num_parameters(family)
    if params.ndim != 2 or params.shape[1] != expected:
        raise ValueError(f"{family} needs parameters of shape [B, {expected}], got {tuple(params.shape)}")
    batch = params.shape[0]
    rotation = rotation_matrix(params[:, 0:3])
    translation = params[:, 3:6]
    if family == "rigid":
        scale = torch.ones(batch, 3, dtype=params.dtype, device=params.device)
    elif family == "similarity":
        scale = (1.0 + params[:, 6:7]).expand(batch, 3)
    else:
        scale = 1.0 + params[:, 6:9]
    linear = rotation @ torch.diag_embed(scale)
    if family == "affine":
        shear = torch.eye(3, dtype=params.dtype, device=params.device).repeat(batch, 1, 1)
        shear[:, 0, 1] = params[:, 9]
        shear[:, 0, 2] = params[:, 10]
        shear[:, 1, 2] = params[:, 11]
        linear = linear @ shear
    if centre is None:
        centre_t = torch.zeros(batch, 3, dtype=params.dtype, device=params.device)
    else:
        centre_t = torch.as_tensor(centre, dtype=params.dtype, device=params.device).reshape(-1, 3).expand(batch, 3)
    offset = centre_t + translation - (linear @ centre_t[..., None])[..., 0]
    matrix = torch.zeros(batch, 4, 4, dtype=params.dtype, device=params.device)
    matrix[:, :3, :3] = linear
    matrix[:, :3, 3] = offset
    matrix[:, 3, 3] = 1.0
    return matrix


def matrix_to_parameters(matrix: np.ndarray, family: str, centre: Sequence[float] | None = None) -> np.ndarray:
    """Inverse of :func:`parameters_to_matrix` for one matrix, ``[P]``.

    The linear part is split as ``R @ S @ H`` (QR decomposition with positive diagonal); for
    families without shear or anisotropic scale the closest member is returned (shear dropped,
    scales averaged).

    Args:
        matrix: ``[4, 4]`` RAS matrix.
        family: target family.
        centre: ``[3]`` RAS centre used by :func:`parameters_to_matrix`.

    Returns:
        ``[P]`` float64 parameters.
    """
    num_parameters(family)
    matrix = np.asarray(matrix, dtype=np.float64)
    linear = matrix[:3, :3]
    q, r = np.linalg.qr(linear)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q, r = q * signs, (r.T * signs).T
    if np.linalg.det(q) < 0:
        raise ValueError("matrix contains a reflection; no rotation family can represent it")
    scale = np.diag(r).copy()
    shear = r / scale[:, None]
    ry = np.arcsin(np.clip(-q[2, 0], -1.0, 1.0))
    rx = np.arctan2(q[2, 1], q[2, 2])
    rz = np.arctan2(q[1, 0], q[0, 0])
    c = np.zeros(3) if centre is None else np.asarray(centre, dtype=np.float64)
    translation = matrix[:3, 3] - c + linear @ c
    head = [rx, ry, rz, *translation]
    if family == "rigid":
        return np.array(head)
    if family == "similarity":
        return np.array(head + [float(np.cbrt(np.prod(scale))) - 1.0])
    if family == "anisotropic":
        return np.array(head + list(scale - 1.0))
    return np.array(head + list(scale - 1.0) + [shear[0, 1], shear[0, 2], shear[1, 2]])


def translation_to_normalized(translation_mm: torch.Tensor, extent_mm: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Translation in mm -> fraction of the half image extent (``[..., 3]``)."""
    extent = torch.as_tensor(extent_mm, dtype=translation_mm.dtype, device=translation_mm.device)
    return translation_mm / (extent / 2.0)


def translation_from_normalized(translation: torch.Tensor, extent_mm: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Fraction of the half image extent -> translation in mm (``[..., 3]``)."""
    extent = torch.as_tensor(extent_mm, dtype=translation.dtype, device=translation.device)
    return translation * (extent / 2.0)
