"""ConvexAdam (Siebert, Hansen and Heinrich, "Fast 3D registration with accurate optimisation and little
learning for Learn2Reg 2021"), the default deformable engine.

1. MIND-SSC features of both images on the working grid shrunk by ``search_shrink`` (average
   pooling; by 2, or 3 on large working grids: the discrete search compares cell averages of the
   features, which barely change when they are computed at half resolution, for an eighth of the cost).
2. One or more coarse levels: a dense cost volume (sum of squared differences of average-pooled
   features) for every control point of a grid of step ``coarse_step`` voxels over a discrete search
   window of ``(2 radius + 1)^3`` displacements spaced ``quantisation`` voxels apart, solved by coupled
   convex optimisation: starting from the per-point argmin, each round smooths the displacements
   (3x3x3 averaging) and takes ``argmin_d cost(d) + alpha ||d - smoothed||^2`` for coupling weights
   ``alpha`` rising from 0.003 to 1. Optionally the forward and backward solutions are made inverse
   consistent by fixed-point iterations. Later levels search around the result of earlier ones.
3. Adam refinement of a displacement grid at step ``adam_step`` with a diffusion penalty, the grid
   being smoothed by repeated 3x3x3 box filtering at every iteration.
4. A short Adam stage on the full working grid (step 1, ``fine_iterations``): the step-``adam_step``
   stage compares cell averages and cannot align structures smaller than a cell.

Fields are voxel fields ``[1, 3, K, J, I]`` of the working grid (:mod:`RegSegLib.transforms.fields`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from RegSegLib.losses import diffusion
from RegSegLib.ops.filters import pool_cells, smooth_average
from RegSegLib.registration.dense import ADAM_EPS, ADAM_FLOOR, features, stage_data, stage_loss
from RegSegLib.registration.optim import run_adam
from RegSegLib.registration.settings import CoarseLevel, DeformableSettings
from RegSegLib.runtime import Progress, check_memory
from RegSegLib.transforms import fields

TIE_BREAK = 1e-6
"""A vanishing preference for short displacements: ties (flat, featureless regions) go towards zero."""


def _candidates(level: CoarseLevel, device: torch.device) -> torch.Tensor:
    """Candidate displacements ``[N, 3]`` in working voxels, channels ``(i, j, k)``, k slowest."""
    offsets = torch.arange(-level.radius, level.radius + 1, device=device, dtype=torch.float32)
    kk, jj, ii = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    return torch.stack([ii, jj, kk], dim=-1).reshape(-1, 3) * level.quantisation


def _cost_volume(fixed_feat: torch.Tensor, moving_feat: torch.Tensor, level: CoarseLevel) -> torch.Tensor:
    """Feature SSD for every control point and candidate, ``[N, Kc, Jc, Ic]``.

    Control point ``c`` averages features over the fine cell ``[c*step, (c+1)*step)``; candidate ``d``
    compares it with the moving features averaged over the same cell shifted by ``d``.
    """
    step, q, r = level.step, level.quantisation, level.radius
    fixed_cells = pool_cells(fixed_feat, step)[0]
    kc, jc, ic = fixed_cells.shape[1:]
    reach = r * q
    moving_pad = F.pad(moving_feat, [reach] * 6, mode="replicate")
    moving_cells = F.avg_pool3d(moving_pad, step, stride=1)[0]
    n = (2 * r + 1) ** 3
    check_memory(int(n * kc * jc * ic * 4 * 3), fixed_feat.device, "ConvexAdam cost volume")
    cost = fixed_feat.new_empty((n, kc, jc, ic))
    span_k, span_j, span_i = (kc - 1) * step + 1, (jc - 1) * step + 1, (ic - 1) * step + 1
    index = 0
    for dk in range(-r, r + 1):
        sk = reach + dk * q
        for dj in range(-r, r + 1):
            sj = reach + dj * q
            slab = moving_cells[:, sk : sk + span_k : step, sj : sj + span_j : step]
            for di in range(-r, r + 1):
                si = reach + di * q
                shifted = slab[:, :, :, si : si + span_i : step]
                cost[index] = (fixed_cells - shifted).pow(2).sum(dim=0)
                index += 1
    return cost


def _coupled_convex(cost: torch.Tensor, candidates: torch.Tensor, settings: DeformableSettings, q: int) -> torch.Tensor:
    """Coupled convex optimisation over a cost volume ``[N, Kc, Jc, Ic]`` -> voxel field ``[1, 3, Kc, Jc, Ic]``.

    Each round takes ``argmin_d cost(d) + alpha ||d - s||^2`` per control point; ``||s||^2`` is the same
    for every candidate of a point and is left out, so a round is one ``addmm`` and one ``argmin`` over a
    cells-by-candidates table (each point's candidates contiguous).
    """
    if settings.cost_smoothing > 0:
        cost = smooth_average(cost[None], 3, settings.cost_smoothing)[0]
    shape = cost.shape[1:]
    cand = candidates / q
    cand_sq = cand.pow(2).sum(dim=1)
    table = cost.reshape(cost.shape[0], -1).T.contiguous().add_(cand_sq, alpha=TIE_BREAK)
    disp = candidates[table.argmin(dim=1)].T.reshape(1, 3, *shape)
    coupled = torch.empty_like(table)
    for alpha in settings.coupling:
        smoothed = smooth_average(disp, 3, 1).reshape(3, -1) / q
        torch.add(table, cand_sq, alpha=alpha, out=coupled).addmm_(smoothed.T, cand.T, alpha=-2.0 * alpha)
        disp = candidates[coupled.argmin(dim=1)].T.reshape(1, 3, *shape)
    return smooth_average(disp, 3, 1)


def _inverse_consistent(forward: torch.Tensor, backward: torch.Tensor, iterations: int) -> torch.Tensor:
    """Fixed-point symmetrisation: ``u <- (u - v o (id + u)) / 2`` and vice versa, returns the forward field."""
    for _ in range(iterations):
        new_forward = 0.5 * (forward - fields.warp(backward, forward))
        new_backward = 0.5 * (backward - fields.warp(forward, backward))
        forward, backward = new_forward, new_backward
    return forward


def _coarse_level(
    fixed_feat: torch.Tensor,
    moving_feat: torch.Tensor,
    weight: Optional[torch.Tensor],
    level: CoarseLevel,
    settings: DeformableSettings,
) -> torch.Tensor:
    """One discrete level: voxel displacement ``[1, 3, K, J, I]`` at working resolution.

    Control points outside the mask weight get no data cost; the coupling fills them in smoothly.
    """
    candidates = _candidates(level, fixed_feat.device)
    cell_weight = None if weight is None else pool_cells(weight, level.step)[0]

    def solve(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cost = _cost_volume(source, target, level)
        if cell_weight is not None:
            cost = cost * cell_weight
        return _coupled_convex(cost, candidates, settings, level.quantisation)

    forward = solve(fixed_feat, moving_feat)
    if settings.inverse_consistent:
        backward = solve(moving_feat, fixed_feat)
        forward = _inverse_consistent(forward / level.step, backward / level.step, settings.inverse_iterations)
        forward = forward * level.step
    return fields.upsample_cells(forward / level.step, level.step, tuple(fixed_feat.shape[2:]))


def convex_adam(
    fixed_image: torch.Tensor,
    moving_image: torch.Tensor,
    weight: Optional[torch.Tensor],
    settings: DeformableSettings,
    progress: Progress,
) -> torch.Tensor:
    """ConvexAdam on the working grid: an :data:`~RegSegLib.registration.dense.Engine` (arguments and result there)."""
    shape = tuple(fixed_image.shape[2:])
    shrink = settings.resolved_search_shrink(fixed_image[0, 0].numel())
    fixed_feat = features(pool_cells(fixed_image, shrink), settings)
    moving_feat = features(pool_cells(moving_image, shrink), settings)
    search_weight = None if weight is None else pool_cells(weight, shrink)
    disp = torch.zeros(1, 3, *fixed_feat.shape[2:], device=fixed_image.device)
    levels = settings.coarse_levels
    for index, level in enumerate(levels):
        progress.update(0.05 + 0.4 * index / max(len(levels), 1), f"deformable: discrete search level {index + 1}")
        warped_feat = moving_feat if index == 0 else fields.warp(moving_feat, disp)
        delta = _coarse_level(fixed_feat, warped_feat, search_weight, level, settings)
        disp = delta if index == 0 else fields.compose(disp, delta)
    disp = fields.upsample_cells(disp, shrink, shape)
    if settings.similarity == "mind" and shrink == 1:
        fixed_adam, moving_adam = fixed_feat, moving_feat
    else:
        fixed_adam, moving_adam = stage_data(fixed_image, moving_image, settings)
    stages = [(settings.adam_step, settings.adam_iterations)]
    if settings.adam_step > 1 and settings.fine_iterations > 0:
        stages.append((1, settings.fine_iterations))
    total = sum(step**-3 * iterations for step, iterations in stages) or 1.0
    start = 0.45
    for step, iterations in stages:
        share = 0.53 * step**-3 * iterations / total
        disp = _adam_refine(fixed_adam, moving_adam, weight, disp, step, iterations, settings, progress.sub(start, share))
        start += share
    return fields.integrate_velocity(disp, settings.integration_steps) if settings.diffeomorphic else disp


def _adam_refine(
    fixed_data: torch.Tensor,
    moving_data: torch.Tensor,
    weight: Optional[torch.Tensor],
    init: torch.Tensor,
    step: int,
    iterations: int,
    settings: DeformableSettings,
    progress: Progress,
) -> torch.Tensor:
    """Adam on a grid of ``step`` working voxels with smoothing and diffusion penalty.

    Args:
        fixed_data: fixed image or features ``[1, C, K, J, I]`` on the working grid.
        moving_data: moving image or features ``[1, C, K, J, I]``.
        weight: mask weight ``[1, 1, K, J, I]`` or ``None``.
        init: starting voxel field ``[1, 3, K, J, I]`` (a velocity when ``diffeomorphic``).
        step: grid step in working voxels; data are cell-averaged over ``step``^3.
        iterations: Adam iterations.
        settings: learning rate, smoothing, regularisation, LNCC window, integration steps.
        progress: progress of this stage.

    Returns:
        The smoothed optimised field ``[1, 3, K, J, I]`` in working voxels (the velocity when
        ``diffeomorphic``; the caller integrates it).
    """
    shape = tuple(fixed_data.shape[2:])
    fixed_cells = pool_cells(fixed_data, step)
    moving_cells = pool_cells(moving_data, step)
    weight_cells = None if weight is None else pool_cells(weight, step)
    params = (pool_cells(init, step) / step).requires_grad_(True)
    loss_of = stage_loss(settings.similarity, max(3, settings.lncc_window // step | 1))

    def smoothed() -> torch.Tensor:
        return smooth_average(params, 3, settings.resolved_adam_smoothing)

    def total_loss() -> torch.Tensor:
        field = smoothed()
        disp = fields.integrate_velocity(field, settings.integration_steps) if settings.diffeomorphic else field
        return loss_of(fixed_cells, fields.warp(moving_cells, disp), weight_cells) + settings.resolved_regularisation * diffusion(disp)

    def report(iteration: int) -> None:
        if iteration % 5 == 0:
            progress.update(iteration / iterations, f"deformable: Adam (grid step {step}) {iteration}")

    run_adam(
        params, total_loss, iterations, settings.adam_lr,
        floor=ADAM_FLOOR, eps=ADAM_EPS[settings.similarity], per_cell=True, on_iteration=report,
    )
    with torch.no_grad():
        return fields.upsample_cells(smoothed(), step, shape)
