"""Deformable registration with a multi-resolution control grid.

A grid of displacements every ``control_step`` voxels is upsampled trilinearly to a dense field
(B-spline-like after a 3x3x3 box smoothing) and optimised with Adam over an image pyramid
(``pyramid`` shrink factors, coarse to fine), with a diffusion or bending penalty and the chosen
similarity. Fields are voxel fields ``[1, 3, K, J, I]`` (:mod:`RegSegLib.transforms.fields`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from RegSegLib.losses import penalty
from RegSegLib.ops.filters import smooth_average
from RegSegLib.ops.pyramid import level_shape, resize_image
from RegSegLib.registration.dense import ADAM_EPS, ADAM_FLOOR, stage_data, stage_loss
from RegSegLib.registration.optim import run_adam
from RegSegLib.registration.settings import DeformableSettings
from RegSegLib.runtime import Progress
from RegSegLib.transforms import fields


def control_grid(
    fixed_image: torch.Tensor,
    moving_image: torch.Tensor,
    weight: Optional[torch.Tensor],
    settings: DeformableSettings,
    progress: Progress,
) -> torch.Tensor:
    """A pyramid of control grids optimised with Adam: an :data:`~RegSegLib.registration.dense.Engine`."""
    shape = tuple(fixed_image.shape[2:])
    fixed_data, moving_data = stage_data(fixed_image, moving_image, settings)
    params: Optional[torch.Tensor] = None
    levels = settings.pyramid
    smoothness = penalty(settings.penalty)
    for index, factor in enumerate(levels):
        shape_level = level_shape(shape, factor)
        fixed_level = resize_image(fixed_data, shape_level, factor)
        moving_level = resize_image(moving_data, shape_level, factor)
        weight_level = None if weight is None else (resize_image(weight, shape_level, 1) > 0.5).float()
        control_shape = tuple(max(int(math.ceil(n / settings.control_step)) + 1, 2) for n in shape_level)
        if params is None:
            start = torch.zeros(1, 3, *control_shape, device=fixed_image.device)
        else:
            start = fields.resize(params.detach(), control_shape)
        params = start.requires_grad_(True)
        level_progress = progress.sub(0.05 + 0.9 * index / len(levels), 0.9 / len(levels))
        loss_of = stage_loss(settings.similarity, max(3, settings.lncc_window // factor | 1))

        def total_loss() -> torch.Tensor:
            disp = _dense_field(params, shape_level, settings)
            return loss_of(fixed_level, fields.warp(moving_level, disp), weight_level) + settings.resolved_regularisation * smoothness(disp)

        def report(iteration: int) -> None:
            if iteration % 5 == 0:
                level_progress.update(iteration / settings.adam_iterations, f"deformable: level {index + 1}")

        run_adam(
            params, total_loss, settings.adam_iterations, settings.adam_lr / settings.control_step,
            floor=ADAM_FLOOR, eps=ADAM_EPS[settings.similarity], per_cell=True, on_iteration=report,
        )
    with torch.no_grad():
        return fields.resize(_dense_field(params, level_shape(shape, levels[-1]), settings), shape)


def _dense_field(params: torch.Tensor, shape: tuple[int, int, int], settings: DeformableSettings) -> torch.Tensor:
    """Control grid ``[1, 3, k, j, i]`` -> smooth dense voxel field on ``shape`` (integrated when diffeomorphic)."""
    dense = smooth_average(fields.resize(params, shape), 3, 1)
    return fields.integrate_velocity(dense, settings.integration_steps) if settings.diffeomorphic else dense
