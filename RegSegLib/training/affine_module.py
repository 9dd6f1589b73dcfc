"""The Lightning module of learned affine registration: loss, validation metrics, optimiser.

Loss (seed 000's units): the squared Frobenius distance between predicted and true rotation matrices
(for rotations over the whole sphere: no wrap-around, unlike a squared angle difference), plus the squared
error of the translation as a fraction of the half image extent, of the scales as deviations from 1 and of
the shears, summed over the cascade's passes (pass n against the residual the earlier passes left). A
network that fits a linear part (``predicts_linear``, the keypoint network) is compared on the whole
linear part instead of rotation, scales and shears.

Validation metrics (:data:`RegSegLib.training.callbacks.METRIC_DIRECTIONS`): ``loss``,
``rotation_error_deg`` (the angle of ``R_true^T R_pred``), ``translation_error_mm``, and
``target_error_mm``: the mean distance between where the predicted and the true transform send the
points of a 5 x 5 x 5 lattice over the central 80 % of the fixed network grid (network voxels times the
pair's spacing).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from RegSegLib.networks.affine import build_affine_network, closest_rotation, half_span
from RegSegLib.training.config import BaseConfig
from RegSegLib.training.modules import TrainingModule


def rotation_angle_deg(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Angle ``[B]`` in degrees of the rotation between ``[B, 3, 3]`` rotation matrices."""
    relative = true.transpose(1, 2) @ predicted
    cosine = ((relative.diagonal(dim1=1, dim2=2).sum(dim=1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosine))


def lattice_points(span: torch.Tensor, per_axis: int = 5, fraction: float = 0.8) -> torch.Tensor:
    """``[per_axis^3, 3]`` points (relative to the grid centre) over the central ``fraction`` of a grid whose
    half span along R, A, S is ``span``."""
    axis = torch.linspace(-fraction, fraction, per_axis, dtype=span.dtype)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid * span


def target_error(predicted: torch.Tensor, true: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean distance ``[B]`` between ``predicted`` and ``true`` ``[B, 4, 4]`` network-frame transforms at
    ``points`` ``[N, 3]`` (in the frame's units)."""
    homogeneous = torch.cat([points, torch.ones_like(points[:, :1])], dim=1).to(predicted)
    difference = (predicted - true.to(predicted)) @ homogeneous.T
    return difference[:, :3].norm(dim=1).mean(dim=1)


def parameter_loss(parts: tuple, target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Seed 000's parameter loss of one pass, ``[B]``."""
    rotation, translation, scale, shear = parts
    loss = (rotation - target["rotation"]).pow(2).sum(dim=(1, 2))
    loss = loss + (translation - target["translation"]).pow(2).sum(dim=1)
    loss = loss + (scale - target["scale"]).pow(2).sum(dim=1)
    return loss + (shear - target["shear"]).pow(2).sum(dim=(1, 2))


def residual_target(done: torch.Tensor, matrix: torch.Tensor, span: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the next cascade pass should predict after the passes so far (``done``, ``[B, 4, 4]``):
    ``done^-1 o true``, as the parts of the rigid or affine decomposition (rotation by polar decomposition
    of the linear part, scales from the singular values, no shear)."""
    residual = torch.linalg.solve(done, matrix)
    linear = residual[:, :3, :3]
    rotation, singular = closest_rotation(linear)
    return {
        "rotation": rotation,
        "translation": residual[:, :3, 3] / span.to(residual),
        "scale": singular.abs(),
        "shear": torch.eye(3, dtype=residual.dtype, device=residual.device).expand_as(linear),
    }


class AffineRegistrationModule(TrainingModule):
    """Trains an affine network (:func:`~RegSegLib.networks.affine.build_affine_network`) on synthetic pairs.

    Args:
        config: the run's configuration (its ``model_config.model_args`` builds the network).
    """

    batch_key = "moving"
    progress_metric = "target_error_mm"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__()
        self.config = config
        self.network = build_affine_network(config.model_config.name, asdict(config.model_config.model_args))
        self.register_buffer("span", half_span(config.data.shape).float(), persistent=False)
        self.register_buffer("points", lattice_points(self.span.double()).float(), persistent=False)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, list]:
        return self.network(moving, fixed)

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair loss ``[B]`` (summed over passes) and the composed prediction ``[B, 4, 4]``."""
        total, passes = self(batch["moving"], batch["fixed"])
        target = batch
        if getattr(self.network, "predicts_linear", False):
            linear = batch["matrix"][:, :3, :3]
            target = {**batch, "rotation": linear, "scale": torch.ones_like(batch["scale"]), "shear": torch.eye(3, device=linear.device).expand_as(linear)}
        loss = parameter_loss(passes[0][0], target)
        for parts, done in passes[1:]:
            loss = loss + parameter_loss(parts, residual_target(done.detach(), batch["matrix"], self.span))
        return loss, total

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._losses(batch)
        loss = loss.mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["moving"].shape[0])
        return loss

    def _metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-pair validation metrics ``{name: [B]}``."""
        loss, total = self._losses(batch)
        rotation, _ = closest_rotation(total[:, :3, :3])
        return {
            "loss": loss,
            "rotation_error_deg": rotation_angle_deg(rotation, batch["rotation"]),
            "translation_error_mm": (total[:, :3, 3] - batch["matrix"][:, :3, 3]).norm(dim=1) * batch["spacing"],
            "target_error_mm": target_error(total, batch["matrix"], self.points) * batch["spacing"],
        }

    def configure_optimizers(self) -> Any:
        trainable = [parameter for parameter in self.network.parameters() if parameter.requires_grad]
        return self.with_scheduler(torch.optim.Adam(trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay))

