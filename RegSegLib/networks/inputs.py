"""What a network sees: images read onto *network grids*, axis-aligned isotropic RAS grids of the model's
shape centred on each image's field of view, robustly scaled to [0, 1]. Training (synthetic pairs) and
inference (:mod:`RegSegLib.registration.learned`) use these same functions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from RegSegLib.geometry import Grid
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.transforms import AffineTransform, resample
from RegSegLib.volume import Volume


def network_grid(centre_ras: np.ndarray, shape_dhw: Sequence[int], spacing_mm: float) -> Grid:
    """The axis-aligned RAS grid of the network input: ``shape`` (D, H, W) = (S, A, R) voxels of
    ``spacing_mm``, centred on ``centre_ras``."""
    shape = tuple(int(n) for n in shape_dhw)
    sizes_ras = np.array(shape[::-1], dtype=np.float64)
    matrix = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    matrix[:3, 3] = np.asarray(centre_ras, dtype=np.float64) - spacing_mm * (sizes_ras - 1) / 2.0
    return Grid.of(matrix, shape)


def network_spacing(grids: Sequence[Grid], shape_dhw: Sequence[int], spacing_mm: float | None) -> float:
    """The isotropic spacing of the network grids of a pair: ``spacing_mm`` when given, else the one that
    fits the largest extent of the images into the largest network size (the whole field of view, whatever
    the anatomy's scale: a 25 mm prostate crop and a 500 mm abdomen alike)."""
    if spacing_mm is not None:
        return float(spacing_mm)
    return max(float(np.max(grid.extent_mm)) for grid in grids) / max(int(n) for n in shape_dhw)


def prepared_for(volume: Volume, spacing_mm: float) -> Volume:
    """The first channel of ``volume`` smoothed and reduced for sampling at ``spacing_mm``
    (:func:`RegSegLib.ops.pyramid.downsample`: smoothing and sampling one axis at a time, which makes a
    1 mm brain cheap to bring to a network's few-mm grid); read it onto network grids with
    :func:`network_input`."""
    from RegSegLib.ops.pyramid import downsample

    first = Volume(volume.data[:1].float(), volume.ijk_to_ras)
    return downsample(first, np.full(3, spacing_mm))


def network_input(volume: Volume, grid: Grid, transform: AffineTransform | None = None) -> torch.Tensor:
    """The first channel of ``volume`` read through ``transform`` on a network grid, robustly scaled to
    [0, 1] (0.5 and 99.5 percentiles), ``[1, D, H, W]`` float32; zero outside the volume."""
    first = Volume(volume.data[:1].float(), volume.ijk_to_ras)
    image = resample(first, grid, transform, mode="linear").data
    return robust_scale(image[None])[0]
