"""Iterative affine registration (ALGORITHMS.md section A): a multi-resolution, gradient-based engine.

The transform is ``T = T_init @ T(p)``: ``T_init`` is the initialisation (identity, grid centres,
intensity centres of mass or a given transform) and ``T(p)`` a member of one of the four families of
:mod:`RegSegLib.transforms.affine_params`, about the centre of the fixed image. The parameters are scaled so
that one unit moves the image by about one millimetre (rotations, scales and shears are divided by
the RMS radius of the fixed grid), which lets one Adam learning rate, given in mm, serve all of
them.

Each pyramid level has a working grid: the fixed image's grid resampled to ``spacing * level``
(never finer than the image itself), on which the smoothed fixed image lives. The moving image is
smoothed and downsampled on its own grid, and every step warps it with one ``grid_sample`` whose
``theta`` is ``N_moving @ inv(A_moving) @ T @ A_work @ inv(N_work)`` (``A`` the IJK-to-RAS
matrices, ``N`` the voxel-to-``grid_sample`` maps). A validity channel and the moving mask travel
through the same ``grid_sample``; the loss is weighted by the fixed mask, the warped moving mask and
the overlap of the images.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.geometry import Grid
from RegSegLib.losses import descriptor_distance, make_loss
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.ops.mind import mind_ssc
from RegSegLib.ops.pyramid import build_pyramid
from RegSegLib.registration.optim import run_adam, run_lbfgs
from RegSegLib.registration.settings import AffineSettings, SettingsError
from RegSegLib.runtime import Progress, check_memory, resolve_device
from RegSegLib.transforms import AffineTransform, affine_params, fields, resample
from RegSegLib.volume import Volume

MIN_LEVEL_VOXELS: int = 256
"""Fewest fixed voxels (inside the fixed mask) a pyramid level needs to be used."""
MIND_EXTRA_ROUNDS: int = 2
"""Extra rounds of the finest level for ``mind``, each with descriptors recomputed in the latest frame."""
ADAM_FLOOR: float = 0.01
"""The coarsest round's Adam step decays (cosine) to this fraction of the learning rate."""


def _levels_with_enough_voxels(
    levels: Sequence[float],
    iterations: Sequence[int],
    fixed_levels: list[Volume],
    moving_levels: list[Volume],
    fixed_mask: Volume | None,
) -> tuple[list[float], list[int], list[Volume], list[Volume]]:
    """Drops the coarse levels where the fixed region holds fewer than :data:`MIN_LEVEL_VOXELS` voxels.

    A small mask (a prostate gland on a 3 mm grid holds a few dozen voxels) gives the coarsest levels
    too few samples for a stable measure, and the first round, which takes the largest steps, runs
    away. The first level kept takes over the coarsest level's iteration count. The finest level is
    always kept.
    """
    counts = [
        level.num_voxels if fixed_mask is None else int((resample(fixed_mask, level, mode="linear").data[0] > 0.5).sum())
        for level in fixed_levels
    ]
    finest = int(np.argmin(levels))
    keep = [n for n in range(len(levels)) if counts[n] >= MIN_LEVEL_VOXELS or n == finest]
    if len(keep) == len(levels):
        return list(levels), list(iterations), fixed_levels, moving_levels
    coarsest = int(np.argmax(levels))
    kept_iterations = [iterations[n] for n in keep]
    first = int(np.argmax([levels[n] for n in keep]))
    kept_iterations[first] = max(kept_iterations[first], iterations[coarsest])
    return (
        [levels[n] for n in keep],
        kept_iterations,
        [fixed_levels[n] for n in keep],
        [moving_levels[n] for n in keep],
    )


AUTO_MAX_VOXELS: int = 2_000_000
"""Voxel budget of the finest affine pyramid level when no working spacing is given."""


def base_spacing(fixed: Grid, settings: AffineSettings) -> float:
    """The finest level's working spacing (mm): the settings' spacing, else the fixed grid's finest spacing,
    coarsened until an isotropic grid of that spacing over the fixed extent holds at most
    :data:`AUTO_MAX_VOXELS` voxels."""
    if settings.spacing is not None:
        return float(settings.spacing)
    return float(max(fixed.spacing.min(), np.cbrt(np.prod(fixed.extent_mm) / AUTO_MAX_VOXELS)))


def _size_text(extent_mm: np.ndarray) -> str:
    return "x".join(f"{float(v):.0f}" for v in extent_mm)


def _centre_of_mass(volume: Volume, weights: torch.Tensor) -> np.ndarray:
    """Intensity-weighted centre ``[3]`` (RAS) of ``[K, J, I]`` weights on a volume's grid."""
    total = float(weights.sum())
    if total <= 0:
        return geometry.grid_centre_ras(volume.ijk_to_ras, volume.shape)
    k, j, i = (torch.arange(n, dtype=torch.float64, device=weights.device) for n in weights.shape)
    w = weights.double()
    ijk = np.array(
        [
            float((w.sum(dim=(0, 1)) * i).sum()) / total,
            float((w.sum(dim=(0, 2)) * j).sum()) / total,
            float((w.sum(dim=(1, 2)) * k).sum()) / total,
        ]
    )
    return geometry.transform_points(volume.ijk_to_ras, ijk)


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


class _Level:
    """One pyramid level: the fixed image on the working grid and the moving stack on its own coarse grid.

    For ``lncc`` (a neighbourhood measure) and for small grids the whole working grid is compared;
    otherwise a fixed random subset of at most ``max_samples`` working voxels (inside the fixed
    mask) is, which makes a step cost independent of the image size.

    MIND-SSC descriptors are computed once per level and then compared voxel by voxel. They depend
    on the orientation and spacing of the grid they are computed on, so for ``mind`` the moving
    image is first resampled onto the working grid through the current estimate
    (``moving_frame``); the level then refines the transform relative to that frame.
    """

    def __init__(
        self,
        fixed: Volume,
        moving: Volume,
        fixed_mask: Volume | None,
        moving_mask: Volume | None,
        metric: str,
        max_samples: int,
        device: torch.device,
        moving_frame: np.ndarray | None = None,
    ) -> None:
        self.spacing = float(np.mean(fixed.spacing))
        self.work_shape = fixed.shape
        target = fixed.data[None].to(device)
        mask = None
        if fixed_mask is not None:
            mask = resample(fixed_mask, fixed, mode="linear").data[None, :1].to(device)
        parts = [moving.data, torch.ones_like(moving.data[:1])]
        if moving_mask is not None:
            parts.append(resample(moving_mask, moving, mode="linear").data[:1])
        stack = Volume(torch.cat(parts, dim=0), moving.ijk_to_ras)
        if moving_frame is None:
            to_moving = geometry.ras_to_normalized(moving.ijk_to_ras, moving.shape)
        else:
            stack = resample(stack, fixed, AffineTransform(moving_frame))
            to_moving = geometry.ras_to_normalized(fixed.ijk_to_ras, fixed.shape) @ np.linalg.inv(moving_frame)
        moving_data = stack.data[None, : moving.num_channels].to(device)
        if metric == "mind":
            target, moving_data = mind_ssc(target), mind_ssc(moving_data)
        self.num_channels = moving_data.shape[1]
        self.moving = torch.cat([moving_data, stack.data[None, moving.num_channels :].to(device)], dim=1)
        self.has_moving_mask = moving_mask is not None
        from_work = fixed.grid.normalized_to_ras()
        self.left = torch.as_tensor(to_moving, dtype=torch.float64, device=device)
        self.right = torch.as_tensor(from_work, dtype=torch.float64, device=device)
        self.points: torch.Tensor | None = None
        num_voxels = int(np.prod(self.work_shape))
        if metric == "lncc" or num_voxels <= max_samples:
            self.target, self.mask = target, mask
            return
        candidates = torch.arange(num_voxels, device=device)
        if mask is not None:
            candidates = candidates[mask.reshape(-1) > 0]
        generator = torch.Generator().manual_seed(0)
        chosen = torch.randperm(candidates.numel(), generator=generator)[:max_samples].to(device)
        index = candidates[chosen].sort().values
        _, j, i = self.work_shape
        ijk = torch.stack([index % i, (index // i) % j, index // (i * j), torch.ones_like(index)], dim=1).double()
        to_normalized = torch.as_tensor(geometry.ijk_to_normalized(self.work_shape), dtype=torch.float64, device=device)
        self.points = ijk @ to_normalized.T
        self.target = target.reshape(1, target.shape[1], -1)[..., index].reshape(1, target.shape[1], 1, 1, -1)
        self.mask = None if mask is None else mask.reshape(1, 1, -1)[..., index].reshape(1, 1, 1, 1, -1)

    def warp(self, transform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warps the moving stack through a ``[4, 4]`` float64 RAS transform (one ``grid_sample``).

        Returns:
            ``(warped [1, C, K, J, I], weights [1, 1, K, J, I])`` on the working grid, or
            ``[1, C, 1, 1, N]`` and ``[1, 1, 1, 1, N]`` at the sampled voxels.
        """
        theta = (self.left @ transform @ self.right)[:3]
        if self.points is None:
            grid = fields.affine_sampling_grid(theta, self.work_shape)
        else:
            grid = (self.points @ theta.T).float().reshape(1, 1, 1, -1, 3)
        sampled = fields.sample(self.moving, grid, padding_mode="zeros")
        warped = sampled[:, : self.num_channels]
        weights = sampled[:, self.num_channels : self.num_channels + 1].detach().clamp(0.0, 1.0)
        if self.has_moving_mask:
            weights = weights * (sampled[:, self.num_channels + 1 :].detach() > 0.99)
        if self.mask is not None:
            weights = weights * self.mask
        return warped, weights


def _parameter_scales(family: str, radius: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Physical parameter per unit of the optimised parameter: about 1 mm of motion at ``radius``."""
    scales = torch.ones(affine_params.num_parameters(family), dtype=dtype, device=device)
    scales[0:3] = 1.0 / radius
    scales[6:] = 1.0 / radius
    return scales


def initial_alignment(
    fixed: Volume,
    moving: Volume,
    init: str,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
) -> AffineTransform:
    """The translation the affine stage starts from (``init`` of :class:`AffineSettings`).

    Args:
        fixed: the fixed image (first channel used), robustly scaled to [0, 1] or scaled here.
        moving: the moving image (first channel used).
        init: ``identity``, ``centres`` (grid centres) or ``moments`` (intensity centres of mass).
        fixed_mask: optional mask on the fixed grid.
        moving_mask: optional mask on the moving grid; the masks weight the moments only when both are
            given: a region on one side only (a gland mask on the fixed image) has a centre of mass that
            nothing on the other side corresponds to.

    Returns:
        The fixed-to-moving start.
    """
    if init == "identity":
        return AffineTransform.identity()
    if init == "centres":
        return AffineTransform(
            _translation(
                geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape) - geometry.grid_centre_ras(fixed.ijk_to_ras, fixed.shape)
            )
        )
    fixed_weights, moving_weights = robust_scale(fixed.data[0]), robust_scale(moving.data[0])
    if fixed_mask is not None and moving_mask is not None:
        fixed_weights = fixed_weights * (resample(fixed_mask, fixed, mode="linear").data[0] > 0.5)
        moving_weights = moving_weights * (resample(moving_mask, moving, mode="linear").data[0] > 0.5)
    return AffineTransform(_translation(_centre_of_mass(moving, moving_weights) - _centre_of_mass(fixed, fixed_weights)))


def _check_inputs(fixed: Volume, moving: Volume, fixed_mask: Volume | None, moving_mask: Volume | None) -> None:
    if fixed.num_channels != moving.num_channels:
        raise ValueError(f"fixed has {fixed.num_channels} channels but moving has {moving.num_channels}")
    for mask, image, which in ((fixed_mask, fixed, "fixed mask"), (moving_mask, moving, "moving mask")):
        if mask is not None:
            mask.require_same_grid(image, which)


def _loss(settings: AffineSettings):
    """The measure compared at each step (MIND: the distance of precomputed descriptors)."""
    if settings.metric == "mind":
        return descriptor_distance
    if settings.metric == "lncc":
        return make_loss("lncc", window=settings.window)
    if settings.metric == "mi":
        return make_loss("mi", num_bins=settings.num_bins, max_samples=None)
    return make_loss(settings.metric)


def register_affine(
    fixed: Volume,
    moving: Volume,
    settings: AffineSettings | None = None,
    *,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    initial: AffineTransform | None = None,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    **options: Any,
) -> AffineTransform:
    """Affine registration of ``moving`` to ``fixed``.

    Args:
        fixed: the reference image ``[C, K, J, I]``; the result maps its points to ``moving``.
        moving: the image to align, ``[C, K, J, I]`` (same channel count).
        settings: family, metric, pyramid and optimiser settings (:class:`AffineSettings`); the
            defaults when ``None``.
        fixed_mask: optional mask on the fixed grid; zero excludes voxels.
        moving_mask: optional mask on the moving grid, warped with the moving image.
        initial: a starting fixed-to-moving transform (e.g. a network prediction); it replaces the
            settings' initialisation.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress reporter; its cancel event stops the job with ``Cancelled``.
        **options: fields of :class:`AffineSettings` that override ``settings`` (``family="rigid"``, ...).

    Returns:
        The fixed-to-moving :class:`AffineTransform` (``warped(x) = moving(T(x))``).

    Raises:
        SettingsError: a bad setting (before any work).
        ValueError: mismatched inputs or a mask on another grid.
        Cancelled: the progress reporter's cancel event was set.
    """
    settings = (settings or AffineSettings()).overridden(**options)
    _check_inputs(fixed, moving, fixed_mask, moving_mask)
    metric, levels, iterations = settings.metric, settings.levels, settings.resolved_iterations
    progress = progress or Progress()
    torch_device = resolve_device(device)
    progress.update(0.0, "affine: preparing")
    base = base_spacing(fixed.grid, settings)
    fixed_n = fixed.with_data(robust_scale(fixed.data))
    moving_n = moving.with_data(robust_scale(moving.data))
    fixed_mask_f = None if fixed_mask is None else fixed_mask.with_data((fixed_mask.data[:1] != 0).float(), kind="image")
    moving_mask_f = None if moving_mask is None else moving_mask.with_data((moving_mask.data[:1] != 0).float(), kind="image")
    order = np.argsort(levels)
    fixed_levels = build_pyramid(fixed_n, [np.full(3, base * levels[i]) for i in order], fixed_mask_f)
    moving_levels = build_pyramid(
        moving_n, [np.full(3, float(fixed_levels[n].spacing.min())) for n in range(len(order))], moving_mask_f
    )
    fixed_levels = [fixed_levels[n] for n in np.argsort(order)]
    moving_levels = [moving_levels[n] for n in np.argsort(order)]
    levels, iterations, fixed_levels, moving_levels = _levels_with_enough_voxels(
        levels, iterations, fixed_levels, moving_levels, fixed_mask_f
    )
    finest = int(np.argmin(levels))
    finest_grid = fixed_levels[finest].grid
    if finest_grid.num_voxels < min(MIN_LEVEL_VOXELS, fixed.grid.num_voxels):
        raise SettingsError(
            f"the finest affine pyramid level ({levels[finest]:g}) works at {float(finest_grid.spacing.max()):g} mm, "
            f"which leaves {finest_grid.num_voxels} voxels of the {_size_text(fixed.grid.extent_mm)} mm fixed image "
            f"(at least {MIN_LEVEL_VOXELS} needed): choose smaller --levels"
        )
    image_voxels = fixed_levels[finest].num_voxels + moving_levels[finest].num_voxels
    compared = fixed_levels[finest].num_voxels if metric == "lncc" else settings.max_samples
    required = 4 * image_voxels * (26 if metric == "mind" else 4) + 4 * compared * (40 if metric in ("lncc", "mi") else 16)
    check_memory(required, torch_device, "affine registration")

    if initial is not None:
        start = np.asarray(initial.matrix, dtype=np.float64)
    else:
        coarse = int(np.argmax(levels))
        start = initial_alignment(
            fixed_levels[coarse], moving_levels[coarse], settings.resolved_init, fixed_mask_f, moving_mask_f
        ).matrix

    centre = fixed.grid.centre_ras
    radius = float(np.sqrt(np.sum(fixed.grid.extent_mm**2) / 12.0))
    dtype = torch.float64
    scales = _parameter_scales(settings.family, radius, dtype, torch_device)
    start_t = torch.as_tensor(start, dtype=dtype, device=torch_device)
    centre_t = torch.as_tensor(centre, dtype=dtype, device=torch_device)
    params = torch.zeros(1, scales.numel(), dtype=dtype, device=torch_device, requires_grad=True)

    # The coarsest round frees only the rigid parameters (as ANTs and elastix run rigid before
    # affine): scale and shear fitted to a coarse, poorly matching image drift into wrong minima.
    active = torch.ones_like(scales)
    active[6:] = 0.0

    def current_matrix() -> torch.Tensor:
        return start_t @ affine_params.parameters_to_matrix(params * scales * active, settings.family, centre_t)[0]

    loss_fn = _loss(settings)
    schedule = [(index, count) for index, count in enumerate(iterations) if count > 0]
    if metric == "mind" and schedule:
        schedule += [schedule[-1]] * MIND_EXTRA_ROUNDS
    total_iterations = float(sum(count for _, count in schedule))
    for round_index, (level_index, count) in enumerate(schedule):
        with torch.no_grad():
            frame = current_matrix().cpu().numpy() if metric == "mind" else None
            level = _Level(
                fixed_levels[level_index],
                moving_levels[level_index],
                fixed_mask_f,
                moving_mask_f,
                metric,
                settings.max_samples,
                torch_device,
                frame,
            )
        done_before = sum(count for _, count in schedule[:round_index])
        evaluations = 0

        def evaluate() -> torch.Tensor:
            nonlocal evaluations
            warped, weights = level.warp(current_matrix())
            loss = loss_fn(level.target, warped, weights)
            evaluations += 1
            progress.update(
                (done_before + min(evaluations, count)) / total_iterations,
                f"affine level {level_index + 1}/{len(levels)}: step {min(evaluations, count)}/{count}",
            )
            return loss

        if round_index == 0:
            run_adam(params, evaluate, count, settings.resolved_learning_rate * level.spacing, floor=ADAM_FLOOR)
            active.fill_(1.0)
        else:
            run_lbfgs(params, evaluate, count, 0.5 * level.spacing)
    progress.update(1.0, "affine: done")
    with torch.no_grad():
        return AffineTransform(current_matrix().cpu().numpy())
