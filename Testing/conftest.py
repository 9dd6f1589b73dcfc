"""Shared pytest fixtures: the real-data folder and tiny synthetic volumes with chosen geometry.

The suites: ``lib/`` (RegSegLib), ``cli/`` (the ``regseg`` command), ``slicer/`` (the Slicer modules on
real MRML scenes and stand-in widgets); ``support/`` holds what they share (geometry cases, stand-ins).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
import torch

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support"
for folder in (REPOSITORY_ROOT, SUPPORT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from RegSegLib.volume import Volume  # noqa: E402

SHARED_DATA = REPOSITORY_ROOT.parent / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``, the real data the tests run on (CI clones the project beside it)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA}: real data folder not found; clone RegSeg beside ../shared (see shared/data/README.md)")
    return SHARED_DATA




@pytest.fixture
def make_volume() -> Callable[..., Volume]:
    """Factory of small synthetic volumes: a Gaussian blob (plus optional texture) on a chosen grid.

    Call as ``make_volume(shape=(K, J, I), ijk_to_ras=..., blob_ras=None, sigma_mm=2.5, texture=False,
    dtype=torch.float32)``. The blob is centred at ``blob_ras`` (RAS mm; the grid centre when ``None``).
    ``texture=True`` adds smooth sinusoids in RAS so that any misplacement changes the image.
    """

    def factory(
        shape: Sequence[int] = (16, 18, 20),
        ijk_to_ras: np.ndarray | None = None,
        blob_ras: Sequence[float] | None = None,
        sigma_mm: float = 2.5,
        texture: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> Volume:
        matrix = np.eye(4) if ijk_to_ras is None else np.asarray(ijk_to_ras, dtype=np.float64)
        k, j, i = (int(s) for s in shape)
        ijk = np.stack(np.meshgrid(np.arange(i), np.arange(j), np.arange(k), indexing="ij"), -1)
        ijk = np.transpose(ijk, (2, 1, 0, 3)).astype(np.float64)
        ras = ijk @ matrix[:3, :3].T + matrix[:3, 3]
        if blob_ras is None:
            blob_ras = matrix[:3, :3] @ (np.array([i - 1, j - 1, k - 1]) / 2.0) + matrix[:3, 3]
        distance2 = np.sum((ras - np.asarray(blob_ras)) ** 2, axis=-1)
        data = 100.0 * np.exp(-distance2 / (2.0 * sigma_mm**2))
        if texture:
            data = data + 20.0 * (
                np.sin(ras[..., 0] / 3.0) * np.cos(ras[..., 1] / 4.0) + np.sin(ras[..., 2] / 5.0 + 0.3)
            )
        tensor = torch.as_tensor(data[None], dtype=torch.float64)
        if not dtype.is_floating_point:
            tensor = torch.round(tensor)
        return Volume(tensor.to(dtype), matrix)

    return factory
