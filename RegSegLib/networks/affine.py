"""Affine registration networks on MONAI blocks: parameter regression (``affine_params``, :class:`AffineParamsNet`)
and matrix estimation from keypoints (``affine_matrix``, :class:`AffineMatrixNet`).

The network sees the moving and the fixed image on their *network grids*: axis-aligned RAS grids of the
model's shape with one isotropic spacing ``s``, each centred on its own image
(:func:`RegSegLib.networks.inputs.network_grid`). Its prediction is a transform of the family in the
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
from RegSegLib.vocabulary import AFFINE_ARCHITECTURES, FAMILIES

HEAD_SIZES: dict[str, tuple[int, int]] = {"rigid": (0, 0), "similarity": (1, 0), "anisotropic": (3, 0), "affine": (3, 3)}
"""Family -> (log-scales, shears) predicted beside the 6D rotation and the translation."""
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def head_size(family: str) -> int:
    """Outputs of the head for a family: 6 (rotation) + 3 (translation) + scales + shears."""
    scales, shears = HEAD_SIZES[family]
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


def weighted_barycentres(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints of feature maps ``[B, K, D, H, W]``: the barycentre of each channel's spatial softmax, in
    network voxels from the grid centre (x, y, z = R, A, S), ``[B, K, 3]``, and its confidence ``[B, K]``,
    the inverse of the softmax's spatial variance (a sharp map is a precise keypoint)."""
    batch, count = heatmaps.shape[:2]
    shape = heatmaps.shape[2:]
    probabilities = torch.softmax(heatmaps.reshape(batch, count, -1).float(), dim=2)
    axes = [torch.arange(n, dtype=probabilities.dtype, device=heatmaps.device) - (n - 1) / 2.0 for n in shape]
    k, j, i = torch.meshgrid(*axes, indexing="ij")
    coordinates = torch.stack([i, j, k], dim=-1).reshape(-1, 3)
    centres = probabilities @ coordinates
    spread = probabilities @ coordinates.pow(2).sum(dim=1) - centres.pow(2).sum(dim=2)
    return centres, 1.0 / (spread.clamp(min=0.0) + 1.0)


def closest_rotation(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation closest to each ``[B, 3, 3]`` matrix (Frobenius norm; a reflection is never returned) and
    its singular values ``[B, 3]``, the last with the sign that the reflection correction gave it.

    ``U diag(1, 1, det(U V^T)) V^T`` of the singular value decomposition ``U S V^T``: the polar rotation of a
    linear part, and Kabsch's rotation when ``matrix`` is a cross-covariance of target and source points.
    """
    left, singular, right_t = torch.linalg.svd(matrix)
    sign = torch.sign(torch.linalg.det(left @ right_t))
    correction = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], dim=1)
    return left @ torch.diag_embed(correction) @ right_t, singular * correction


def fit_affine(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, family: str, ridge: float = 0.0) -> torch.Tensor:
    """The weighted least-squares transform ``[B, 4, 4]`` of a family mapping points ``source`` onto
    ``target`` (``[B, K, 3]``, weights ``[B, K]``): Kabsch for ``rigid``, Umeyama's scale for
    ``similarity``, the linear least-squares solution for ``anisotropic`` and ``affine`` (both general
    affine; an anisotropic fit is not closed-form). ``ridge`` (affine only) adds that fraction of the
    points' mean squared spread to the normal matrix's diagonal, so that points that have not spread out
    yet (an untrained network) give a small transform instead of an ill-conditioned one."""
    w = (weights / weights.sum(dim=1, keepdim=True))[..., None]
    source_mean, target_mean = (w * source).sum(dim=1), (w * target).sum(dim=1)
    x, y = source - source_mean[:, None], target - target_mean[:, None]
    if family in ("rigid", "similarity"):
        linear, signed_singular = closest_rotation((w * y).transpose(1, 2) @ x)
        if family == "similarity":
            scale = signed_singular.sum(dim=1) / (w[..., 0] * x.pow(2).sum(dim=2)).sum(dim=1)
            linear = linear * scale[:, None, None]
    else:
        normal = (w * x).transpose(1, 2) @ x
        spread = normal.diagonal(dim1=1, dim2=2).mean(dim=1)
        normal = normal + (ridge * spread + 1e-9)[:, None, None] * torch.eye(3, dtype=x.dtype, device=x.device)
        linear = ((w * y).transpose(1, 2) @ x) @ torch.linalg.inv(normal)
    matrix = torch.eye(4, dtype=source.dtype, device=source.device).repeat(source.shape[0], 1, 1)
    matrix[:, :3, :3] = linear
    matrix[:, :3, 3] = target_mean - (linear @ source_mean[..., None])[..., 0]
    return matrix


def project(matrix: torch.Tensor, family: str) -> torch.Tensor:
    """Matrices ``[B, 4, 4]`` with their linear part projected onto a family: the rotation of its polar
    decomposition (``rigid``), times the mean singular value (``similarity``); unchanged otherwise."""
    if family not in ("rigid", "similarity"):
        return matrix
    linear, signed_singular = closest_rotation(matrix[:, :3, :3])
    if family == "similarity":
        linear = linear * signed_singular.abs().mean(dim=1)[:, None, None]
    out = matrix.clone()
    out[:, :3, :3] = linear
    return out


class AffineMatrixNet(nn.Module):
    """Matrix estimation from feature maps (KeyMorph-style): a shared MONAI U-Net turns each image into
    ``keypoints`` heat maps, their barycentres are corresponding points in the two images, and the
    transform is their weighted least-squares fit (:func:`fit_affine`), weighted by the keypoints'
    confidences in both images, symmetrised (the forward fit and the inverse of the backward fit are
    averaged) and projected onto the family (the rotation of the polar decomposition for ``rigid``, times
    the mean singular value for ``similarity``). The fit holds for any rotation, which a regression head
    must learn angle by angle.

    Training compares the symmetrised affine fit itself (its linear part and translation,
    :attr:`predicts_linear`) with the true transform: the gradient of a projection through a singular value
    decomposition is unbounded while the keypoints have not spread out.

    Args:
        family: transform family of the fit.
        keypoints: heat maps (keypoints) per image.
        features: channels of the U-Net's first level (doubled at each of its three downsamplings).

    ``forward(moving, fixed)`` returns what :class:`AffineParamsNet` returns (one pass).
    """

    predicts_linear = True

    def __init__(self, family: str = "rigid", keypoints: int = 32, features: int = 8) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if family not in FAMILIES:
            raise ValueError(f"unknown transform family {family!r}")
        self.family = family
        self.unet = UNet(3, 1, keypoints, channels=(features, 2 * features, 4 * features, 8 * features), strides=(2, 2, 2))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, list]:
        span = half_span(moving.shape[2:]).to(moving)
        maps = self.unet(torch.cat([moving, fixed], dim=0))
        moving_points, moving_confidence = weighted_barycentres(maps[: moving.shape[0]])
        fixed_points, fixed_confidence = weighted_barycentres(maps[moving.shape[0] :])
        weights = (moving_confidence * fixed_confidence).sqrt()
        forward = fit_affine(fixed_points, moving_points, weights, "affine", ridge=1e-3)
        backward = fit_affine(moving_points, fixed_points, weights, "affine", ridge=1e-3)
        fitted = 0.5 * (forward + torch.linalg.inv(backward))
        batch = fitted.shape[0]
        parts = (fitted[:, :3, :3], fitted[:, :3, 3] / span, fitted.new_ones(batch, 3), torch.eye(3, dtype=fitted.dtype, device=fitted.device).expand(batch, 3, 3))
        identity = torch.eye(4, dtype=fitted.dtype, device=fitted.device).expand_as(fitted)
        return project(fitted, self.family), [(parts, identity)]


class _Composed(nn.Module):
    """The composed transform alone: what inference needs, in a form ``torch.jit.trace`` records."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return self.network(moving, fixed)[0]


def torchscript_bytes(network: nn.Module, shape_dhw: Sequence[int]) -> bytes:
    """The network traced for inputs of one shape, as a TorchScript archive: inference then needs torch
    alone (importing MONAI takes seconds), and the archive holds no pickled Python objects.

    The archive maps ``(moving [B, 1, D, H, W], fixed [B, 1, D, H, W])`` to the composed network-frame
    matrices ``[B, 4, 4]``; ``D, H, W`` must be ``shape_dhw``.
    """
    import io
    import warnings

    example = torch.zeros(1, 1, *(int(n) for n in shape_dhw))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(_Composed(network.eval()), (example, example))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def build_affine_network(name: str, args: dict) -> nn.Module:
    """The network of a ``model_config``: ``affine_params`` or ``affine_matrix`` with its arguments."""
    regression, keypoints = AFFINE_ARCHITECTURES
    if name == regression:
        return AffineParamsNet(args["family"], args["fusion"], args["widen_factor"], args["cascade"])
    if name == keypoints:
        return AffineMatrixNet(args["family"], args["keypoints"], args["features"])
    raise ValueError(f"unknown affine architecture {name!r}; choose one of {', '.join(AFFINE_ARCHITECTURES)}")
