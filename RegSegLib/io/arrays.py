"""Voxel arrays as they are read: checked to be real and to fit in memory (before reading), and in a dtype torch takes."""

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
