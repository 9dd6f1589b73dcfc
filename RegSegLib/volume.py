"""The Volume: a ``[C, K, J, I]`` tensor on a voxel grid (see :mod:`RegSegLib.geometry`), and what it holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.geometry import Grid

KINDS: tuple[str, ...] = ("image", "labels", "mask")
"""What a volume holds: intensities (resampled linearly), a label map or a mask (both integer, resampled
with nearest neighbour)."""


@dataclass
class Volume:
    """An image, label map, mask or vector field on a voxel grid.

    Attributes:
        data: ``[C, K, J, I]`` tensor. Label maps and masks keep an integer dtype.
        ijk_to_ras: ``[4, 4]`` float64 IJK-to-RAS matrix (Slicer's IJKToRAS).
        meta: free-form information carried along (source path, ...).
        kind: ``image``, ``labels`` or ``mask`` (see :data:`KINDS`); a label map or mask must have
            an integer dtype.
    """

    data: torch.Tensor
    ijk_to_ras: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "image"

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
        if self.kind not in KINDS:
            raise ValueError(f"unknown volume kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind != "image" and not self.is_integer:
            raise ValueError(f"a {self.kind} volume needs an integer dtype, got {self.data.dtype}")

    def __repr__(self) -> str:
        return (
            f"Volume({self.kind}, channels={self.num_channels}, {self.grid!r}, "
            f"dtype={str(self.data.dtype).replace('torch.', '')}, device={self.data.device.type})"
        )

    @property
    def grid(self) -> Grid:
        """The voxel grid (IJK-to-RAS matrix and ``(K, J, I)``)."""
        return Grid(self.ijk_to_ras, self.shape)

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

    def with_data(self, data: torch.Tensor, kind: str | None = None) -> "Volume":
        """A volume on the same grid with other data ``[C, K, J, I]`` (of this volume's kind unless given)."""
        if tuple(data.shape[1:]) != self.shape:
            raise ValueError(f"data of spatial shape {tuple(data.shape[1:])} does not fit grid {self.shape}")
        return Volume(data, self.ijk_to_ras.copy(), dict(self.meta), self.kind if kind is None else kind)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Volume":
        """The volume on another device or with another dtype (a float dtype makes it an image)."""
        data = self.data.to(device=device, dtype=dtype)
        kind = "image" if data.is_floating_point() else self.kind
        return Volume(data, self.ijk_to_ras.copy(), dict(self.meta), kind)

    def channel(self, index: int) -> "Volume":
        """One channel as a single-channel volume."""
        if not -self.num_channels <= index < self.num_channels:
            raise IndexError(f"channel {index} out of range for a volume with {self.num_channels} channels")
        return self.with_data(self.data[index : index + 1])

    def same_grid(self, other: "Volume", tol: float = geometry.GRID_TOLERANCE_MM) -> bool:
        """True when both volumes lie on the same grid (:meth:`RegSegLib.geometry.Grid.same_as`)."""
        return self.grid.same_as(other.grid, tol)

    def require_same_grid(self, other: "Volume", what: str) -> None:
        """Raises ``ValueError`` naming ``what`` unless this volume lies on ``other``'s grid (a mask on its image's)."""
        if not self.same_grid(other):
            raise ValueError(f"the {what} {self.grid!r} does not lie on its image's grid {other.grid!r}")

    def ras_to_normalized(self) -> np.ndarray:
        """``[4, 4]`` matrix mapping RAS points to this grid's ``grid_sample`` coordinates."""
        return self.grid.ras_to_normalized()
