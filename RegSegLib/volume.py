"""The Volume: a ``[C, K, J, I]`` tensor and its IJK-to-RAS geometry (see :mod:`RegSegLib.geometry`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from RegSegLib import geometry


@dataclass
class Volume:
    """An image, label map, mask or vector field on a voxel grid.

    Attributes:
        data: ``[C, K, J, I]`` tensor. Label maps keep an integer dtype.
        ijk_to_ras: ``[4, 4]`` float64 IJK-to-RAS matrix (Slicer's IJKToRAS).
        meta: free-form information carried along (source path, ...).
    """

    data: torch.Tensor
    ijk_to_ras: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.data, torch.Tensor):
            self.data = torch.as_tensor(np.asarray(self.data))
        if self.data.ndim != 4:
            raise ValueError(f"Volume data must be [C, K, J, I], got shape {tuple(self.data.shape)}")
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if self.ijk_to_ras.shape != (4, 4):
            raise ValueError(f"ijk_to_ras must be 4x4, got shape {self.ijk_to_ras.shape}")
        if abs(np.linalg.det(self.ijk_to_ras[:3, :3])) < 1e-12:
            raise ValueError("ijk_to_ras is singular")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(K, J, I)``."""
        return tuple(int(s) for s in self.data.shape[1:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along (i, j, k) in mm, ``[3]``."""
        return geometry.spacing_of(self.ijk_to_ras)

    @property
    def is_integer(self) -> bool:
        return not (self.data.is_floating_point() or self.data.is_complex())

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    def with_data(self, data: torch.Tensor) -> "Volume":
        """A volume on the same grid with other data ``[C, K, J, I]``."""
        if tuple(data.shape[1:]) != self.shape:
            raise ValueError(f"data of spatial shape {tuple(data.shape[1:])} does not fit grid {self.shape}")
        return Volume(data, self.ijk_to_ras.copy(), dict(self.meta))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Volume":
        return Volume(self.data.to(device=device, dtype=dtype), self.ijk_to_ras.copy(), dict(self.meta))

    def channel(self, index: int) -> "Volume":
        """One channel as a single-channel volume."""
        if not -self.num_channels <= index < self.num_channels:
            raise IndexError(f"channel {index} out of range for a volume with {self.num_channels} channels")
        return self.with_data(self.data[index : index + 1])

    def same_grid(self, other: "Volume", tol: float = 1e-3) -> bool:
        """True when both volumes have the same spatial shape and geometry (to ``tol`` mm)."""
        return self.shape == other.shape and bool(np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tol))

    def world_grid(self, device: torch.device | str | None = None) -> torch.Tensor:
        """RAS coordinates of every voxel centre, ``[K, J, I, 3]`` float32."""
        return grid_points_ras(self.ijk_to_ras, self.shape, device=device)

    def ras_to_normalized(self) -> np.ndarray:
        """``[4, 4]`` matrix mapping RAS points to this grid's ``grid_sample`` coordinates."""
        return geometry.ras_to_normalized(self.ijk_to_ras, self.shape)


def grid_points_ras(
    ijk_to_ras: np.ndarray, shape_kji: tuple[int, int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    """RAS coordinates of the voxel centres of a grid, ``[K, J, I, 3]`` float32."""
    k, j, i = shape_kji
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in (k, j, i)]
    kk, jj, ii = torch.meshgrid(*axes, indexing="ij")
    ijk = torch.stack([ii, jj, kk], dim=-1)
    matrix = torch.as_tensor(ijk_to_ras, dtype=torch.float64, device=device)
    return (ijk @ matrix[:3, :3].T + matrix[:3, 3]).float()
