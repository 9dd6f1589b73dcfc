"""Voxel arrays and grids as they are read: real values, a size that fits in memory (checked before reading), a
dtype torch takes, and a voxel geometry RegSeg can represent (finite, non-singular, orthogonal axes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from RegSegLib.errors import InputError


def check_read_memory(shape: tuple[int, ...], itemsize: int, path: Path) -> None:
    """Refuses, before reading, a volume whose voxels (held as float32 or wider) exceed free host memory."""
    from RegSegLib.runtime import check_memory

    voxels = int(np.prod(shape, dtype=object))
    check_memory(
        voxels * max(itemsize, 4),
        torch.device("cpu"),
        f"reading this {dims(shape)} volume",
        hint="crop or downsample it, or free memory",
        path=path,
    )


def dims(shape: tuple[int, ...]) -> str:
    """``1024x1024x1024`` for messages."""
    return "x".join(str(n) for n in shape)


def check_real(array: np.ndarray, path: Path) -> None:
    """Refuses complex-valued voxels (RegSeg registers real intensities)."""
    if np.iscomplexobj(array):
        raise InputError(
            path, f"holds complex values ({array.dtype}); RegSeg needs a real-valued image (save its magnitude)"
        )


def torch_friendly(data: np.ndarray) -> np.ndarray:
    """Booleans as uint8, unsigned integers widened to a signed type torch has, other floats as float32."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype in (np.uint16, np.uint32, np.uint64):
        return data.astype(np.int64 if data.dtype != np.uint16 else np.int32)
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        return data.astype(np.float32)
    return data


SHEAR_TOLERANCE = 1e-4
"""Largest cosine between two voxel axes still taken as orthogonal (0.006 degrees; float32 headers
are exact to about 1e-7)."""


def check_voxel_geometry(ijk_to_ras: np.ndarray, path: str | None, source: str = "voxel-to-world matrix") -> None:
    """Checks that a voxel-to-world matrix is finite, non-singular and has orthogonal axes.

    RegSeg's geometry (:mod:`RegSegLib.geometry`) splits every grid into origin, spacing and
    orthonormal directions, as ITK and Slicer do; a sheared grid cannot be written back faithfully.

    Args:
        ijk_to_ras: ``[4, 4]`` IJK-to-RAS matrix as read.
        path: the file it came from (for messages).
        source: where in the file the matrix came from (``sform``, ``qform``, ``space directions``, ...).

    Raises:
        InputError: NaN or infinite entries, a zero-length or dependent axis, or non-orthogonal axes.
    """
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise InputError(path, f"{source} contains NaN or infinite values; the voxel geometry is undefined")
    linear = matrix[:3, :3]
    lengths = np.linalg.norm(linear, axis=0)
    if np.any(lengths == 0):
        axes = ", ".join("ijk"[n] for n in range(3) if lengths[n] == 0)
        raise InputError(path, f"{source} is singular: voxel axis {axes} has zero length (voxel size 0 mm)")
    directions = linear / lengths
    if abs(np.linalg.det(directions)) < 1e-6:
        raise InputError(
            path, f"{source} is singular: its voxel axes are parallel and do not span 3D space ({_rows(linear)})"
        )
    for a, b in ((0, 1), (0, 2), (1, 2)):
        cosine = float(abs(directions[:, a] @ directions[:, b]))
        if cosine > SHEAR_TOLERANCE:
            angle = float(np.degrees(np.arccos(min(cosine, 1.0))))
            raise InputError(
                path,
                f"{source} is sheared: voxel axes {'ijk'[a]} and {'ijk'[b]} are {90 - angle:.3g} degrees from "
                f"orthogonal; RegSeg needs orthogonal axes (resample the image onto an orthogonal grid first)",
            )


def _rows(linear: np.ndarray) -> str:
    return "; ".join(" ".join(f"{v:.4g}" for v in row) for row in linear)
