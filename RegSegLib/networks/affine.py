"""Affine registration networks on MONAI blocks: parameter regression (``affine_params``).

The network sees the moving and the fixed image on their *network grids*: axis-aligned RAS grids of the
model's shape with one isotropic spacing ``s``, each centred on its own image
(:func:`RegSegLib.training.data.network_grid`). Its prediction is a transform of the family in the
*network frame*, measured in network voxels from the grid centre: with ``p`` a fixed point and ``c_f``,
``c_m`` the two grid centres (RAS mm),

    T(p) = c_m + s t + A (p - c_f),     A = R S H

(rotation, scales, shears as in :mod:`RegSegLib.transforms.affine_params`; ``A`` is the same in voxels and
in mm because the spacing is isotropic), ``t`` in network voxels, predicted as a fraction of the half span
of the grid (seed 000's units). Nothing in the network depends on ``s``.

Rotations cover the whole sphere, so the head predicts two columns of ``R`` (the continuous 6D
representation of Zhou et al., CVPR 2019, orthonormalised by Gram-Schmidt) instead of three angles,
which wrap around at +-180 degrees and have no continuous inverse. Scales are predicted as log-scales,
shears directly. The last layer starts at zero with the identity as its bias, so an untrained network
predicts the identity.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from RegSegLib.transforms import fields
from RegSegLib.vocabulary import FAMILIES

HEAD_SIZES: dict[str, tuple[int, int, int]] = {
    "rigid": (0, 0, 0),
    "similarity": (1, 0, 0),
    "anisotropic": (3, 0, 0),
    "affine": (3, 3, 0),
}
"""Family -> (log-scales, shears, unused) predicted beside the 6D rotation and the translation."""
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def head_size(family: str) -> int:
    """Outputs of the head for a family: 6 (rotation) + 3 (translation) + scales + shears."""
    scales, shears, _ = HEAD_SIZES[family]
    return 9 + scales + shears


def rotation_from_6d(six: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[B, 3, 3]`` from two predicted columns ``[B, 6]`` (Gram-Schmidt)."""
    first = F.normalize(six[:, 0:3], dim=1)
    second = six[:, 3:6] - (first * six[:, 3:6]).sum(dim=1, keepdim=True) * first
    second = F.normalize(second, dim=1)
    third = torch.cross(first, second, dim=1)
    return torch.stack([first, second, third], dim=2)


class AffinePrediction(nn.Module):
    """Turns head outputs ``[B, head_size]`` into the parts of ``T``: ``(R [B,3,3], t [B,3], S [B,3], H [B,3,3])``
    with ``t`` as a fraction of the half extent."""

    def __init__(self, family: str) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown transform family {family!r}")
        self.family = family

    def forward(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rotation = rotation_from_6d(out[:, 0:6])
        translation = out[:, 6:9]
        batch = out.shape[0]
        if self.family == "rigid":
            scale = out.new_ones(batch, 3)
        elif self.family == "similarity":
            scale = torch.exp(out[:, 9:10]).expand(batch, 3)
        else:
            scale = torch.exp(out[:, 9:12])
        shear = torch.eye(3, dtype=out.dtype, device=out.device).repeat(batch, 1, 1)
        if self.family == "affine":
            shear[:, 0, 1], shear[:, 0, 2], shear[:, 1, 2] = out[:, 12], out[:, 13], out[:, 14]
        return rotation, translation, scale, shear


def linear_part(rotation: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """``A = R S H`` ``[B, 3, 3]``."""
    return rotation @ torch.diag_embed(scale) @ shear


def half_span(shape_dhw: Sequence[int]) -> torch.Tensor:
    """``[3]`` half the span between the first and last voxel centres along R, A, S of a network grid, in
    network voxels: the unit of ``grid_sample``'s ``align_corners=True`` coordinates (x, y, z = R, A, S)."""
    sizes_ras = torch.tensor([float(n) for n in shape_dhw][::-1], dtype=torch.float64)
    return (sizes_ras - 1).clamp(min=1) / 2.0


def network_theta(matrix: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """The normalised-to-normalised sampling affine ``[B, 3, 4]`` of network-frame matrices.

    Args:
        matrix: ``[B, 4, 4]`` network-frame transforms (translation in network voxels).
        span: ``[3]`` :func:`half_span` of the grid.
    """
    scale = span.to(matrix)
    theta_linear = matrix[:, :3, :3] * scale[None, None, :] / scale[None, :, None]
    return torch.cat([theta_linear, (matrix[:, :3, 3] / scale)[..., None]], dim=2)


def _head(in_features: int, family: str) -> nn.Linear:
    """The last layer: zero weights, the identity transform as bias."""
    layer = nn.Linear(in_features, head_size(family))
    nn.init.zeros_(layer.weight)
    bias = torch.zeros(head_size(family))
    bias[0:6] = torch.tensor(IDENTITY_6D)
    with torch.no_grad():
        layer.bias.copy_(bias)
    return layer


def _resnet18(in_channels: int, widen_factor: float, num_classes: int, feed_forward: bool) -> nn.Module:
    """MONAI's 3D ResNet-18, first convolution with stride 2."""
    from monai.networks.nets.resnet import ResNet

    return ResNet(
        "basic", [2, 2, 2, 2], [64, 128, 256, 512], spatial_dims=3, n_input_channels=in_channels,
        conv1_t_stride=2, widen_factor=widen_factor, num_classes=num_classes, feed_forward=feed_forward,
    )


class AffineParamsNet(nn.Module):
    """Parameter regression of a family's transform from a moving and a fixed image on network grids.

    Args:
        family: transform family.
        fusion: ``early`` (2-channel input) or ``late`` (shared encoder, concatenated features).
        widen_factor: ResNet channel multiplier.
        cascade: passes; pass n + 1 sees the moving image warped by the prediction so far.

    ``forward(moving [B, 1, D, H, W], fixed [B, 1, D, H, W])`` returns the composed network-frame matrices
    ``[B, 4, 4]`` (translation in network voxels) and, per pass, its parts
    (:class:`AffinePrediction`; the translation as a fraction of the half extent) with the composed
    transform of the passes before it (the identity for the first).
    """

    def __init__(self, family: str = "rigid", fusion: str = "early", widen_factor: float = 0.25, cascade: int = 1) -> None:
        super().__init__()
        self.family, self.fusion, self.cascade = family, fusion, cascade
        self.predict = AffinePrediction(family)
        if fusion == "early":
            self.encoder = _resnet18(2, widen_factor, 1, feed_forward=False)
        else:
            self.encoder = _resnet18(1, widen_factor, 1, feed_forward=False)
        width = int(512 * widen_factor)
        self.head = _head(width if fusion == "early" else 2 * width, family)

    def _features(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if self.fusion == "early":
            return self.encoder(torch.cat([moving, fixed], dim=1))
        both = self.encoder(torch.cat([moving, fixed], dim=0))
        return torch.cat(both.chunk(2, dim=0), dim=1)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, list]:
        batch = moving.shape[0]
        span = half_span(moving.shape[2:]).to(moving)
        total = torch.eye(4, dtype=moving.dtype, device=moving.device).repeat(batch, 1, 1)
        warped = moving
        passes = []
        for index in range(self.cascade):
            parts = self.predict(self.head(self._features(warped, fixed)))
            rotation, translation, scale, shear = parts
            step = torch.eye(4, dtype=moving.dtype, device=moving.device).repeat(batch, 1, 1)
            step[:, :3, :3] = linear_part(rotation, scale, shear)
            step[:, :3, 3] = translation * span
            passes.append((parts, total))
            total = total @ step
            if index + 1 < self.cascade:
                theta = network_theta(total, span)
                grids = torch.cat([fields.affine_sampling_grid(t, tuple(moving.shape[2:])) for t in theta])
                warped = F.grid_sample(moving, grids, mode="bilinear", padding_mode="zeros", align_corners=True)
        return total, passes
