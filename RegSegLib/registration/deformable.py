"""Iterative deformable registration: preparation on a working grid, then ConvexAdam or a control grid.

Both methods return a :class:`~RegSegLib.transforms.DisplacementField` ``u`` (RAS mm) on the grid it was
estimated on (:func:`working_grid`: the fixed grid, or a coarser grid covering it), such that the full
fixed-to-moving mapping is ``T(x) = initial(x + u(x))``; the caller composes
``CompositeTransform([initial, field])``. Reading the field with linear interpolation, as ITK and Slicer
do, gives its value at every fixed voxel: storing it at the resolution it was estimated at loses nothing.

The methods (:data:`ENGINES`) are siblings: :mod:`~RegSegLib.registration.convexadam` (discrete
search, coupled convex optimisation and Adam; the default) and
:mod:`~RegSegLib.registration.control_grid` (a pyramid of control grids). Each takes the prepared
working-grid images and returns a voxel displacement field ``[1, 3, K, J, I]`` of the working grid
(channels ``(i, j, k)``, the layout of :mod:`RegSegLib.transforms.fields`).

``diffeomorphic=True`` treats the optimised field as a stationary velocity and integrates it by
scaling and squaring.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from RegSegLib.geometry import Grid
from RegSegLib.ops.filters import gaussian_smooth
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.ops.pyramid import antialiased
from RegSegLib.registration.control_grid import control_grid
from RegSegLib.registration.convexadam import convex_adam
from RegSegLib.registration.dense import Engine
from RegSegLib.registration.settings import DeformableSettings, SettingsError
from RegSegLib.runtime import Progress, check_memory, resolve_device
from RegSegLib.transforms import AffineTransform, DisplacementField, fields, resample
from RegSegLib.volume import Volume


ENGINES: dict[str, Engine] = {"convexadam": convex_adam, "grid": control_grid}
"""Deformable method name -> engine ``(fixed, moving, weight, settings, progress) -> voxel field``."""

MIN_WORKING_VOXELS_PER_AXIS = 4
"""Fewest working-grid voxels along an axis (the discrete search halves it twice: one search cell)."""
BYTES_PER_WORKING_VOXEL = 300
BYTES_PER_FIXED_VOXEL = 48
"""Peak memory of the deformable stage: ``300 B`` per working-grid voxel (features, cost volume, fields,
Adam state) plus ``48 B`` per fixed-grid voxel (float copies of the input, the field resampled onto the
fixed grid and its sampling coordinates). Calibrated on CPU from the rise of ``ru_maxrss`` across one
:func:`register_deformable` call (brain MR, fixed grid 160x192x224 = 6.9 M voxels, default settings):
2 mm working grid (0.86 M voxels) +536 MiB with ConvexAdam, +418 MiB with the grid method; 1.5 mm
(2.04 M voxels) +849 MiB with ConvexAdam. A line through the ConvexAdam points gives 278 B per working
voxel and 323 MB fixed (about 47 B per fixed voxel); the constants round that up (estimates 561 and
899 MiB)."""


def deformable_memory_bytes(fixed: Volume, settings: DeformableSettings) -> int:
    """Estimated peak memory of :func:`register_deformable` (:data:`BYTES_PER_WORKING_VOXEL`), from the
    grids alone: nothing is allocated."""
    grid = working_grid(fixed.grid, settings)
    return BYTES_PER_WORKING_VOXEL * grid.num_voxels + BYTES_PER_FIXED_VOXEL * fixed.grid.num_voxels


def check_deformable_memory(fixed: Volume, settings: DeformableSettings, device: torch.device) -> None:
    """Refuses, before any work, a deformable stage whose working grid will not fit in free memory.

    Raises:
        SettingsError: the working resolution leaves fewer than :data:`MIN_WORKING_VOXELS_PER_AXIS` voxels
            along an axis that has more in the fixed image.
        RegSegError: the estimate exceeds the device's free memory; the message names both and the
            working grid, and asks for a coarser ``--spacing``.
    """
    grid = working_grid(fixed.grid, settings)
    spacing = float(grid.spacing.min())
    if min(grid.shape) < MIN_WORKING_VOXELS_PER_AXIS <= min(fixed.shape):
        raise SettingsError(
            f"a deformable working resolution of {spacing:g} mm leaves a {'x'.join(map(str, grid.shape[::-1]))} "
            f"working grid on the {'x'.join(f'{v:.0f}' for v in fixed.grid.extent_mm)} mm fixed image (at least "
            f"{MIN_WORKING_VOXELS_PER_AXIS} voxels per axis needed): choose a finer --spacing"
        )
    check_memory(
        deformable_memory_bytes(fixed, settings),
        device,
        f"deformable registration on a {'x'.join(map(str, grid.shape[::-1]))} working grid "
        f"({grid.num_voxels / 1e6:,.1f} M voxels at {spacing:g} mm)",
        hint="choose a coarser working resolution (--spacing, in mm)",
    )


def with_search_in_voxels(settings: DeformableSettings, grid: Grid) -> DeformableSettings:
    """The settings as the engine uses them on the working grid ``grid``: the search shrink resolved
    (:meth:`DeformableSettings.resolved_search_shrink`) and every search radius given in mm turned into
    voxels of the search grid (``grid`` shrunk by it)."""
    shrink = settings.resolved_search_shrink(grid.num_voxels)
    search_spacing = float(grid.spacing.min()) * shrink
    levels = tuple(level.in_voxels(search_spacing) for level in settings.coarse_levels)
    return settings.overridden(search_shrink=shrink, coarse_levels=levels)


def working_grid(fixed: Grid, settings: DeformableSettings) -> Grid:
    """The grid the deformable stage works on and its field is defined on.

    The isotropic grid of ``settings.spacing_mm`` when given; otherwise the fixed grid when it holds at
    most ``settings.max_working_voxels`` voxels, else the isotropic grid holding about that many
    (:meth:`Grid.within_voxels`). A coarser grid covers every fixed voxel centre.
    """
    if settings.spacing_mm is not None:
        return fixed.resampled(float(settings.spacing_mm), cover=True)
    return fixed.within_voxels(settings.max_working_voxels, cover=True)


def register_deformable(
    fixed: Volume,
    moving: Volume,
    settings: DeformableSettings | None = None,
    *,
    initial: AffineTransform | None = None,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    grid: Grid | None = None,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    **options: Any,
) -> DisplacementField:
    """Deformable registration of ``moving`` to ``fixed``.

    Args:
        fixed: fixed image (first channel used).
        moving: moving image (first channel used).
        settings: method, similarity, working resolution and tuning (:class:`DeformableSettings`);
            the default preset when ``None``.
        initial: fixed-to-moving affine applied before the deformation; ``None`` is identity.
        fixed_mask: region of the fixed image where the similarity counts (nonzero = inside), on
            the fixed grid.
        moving_mask: region of the moving image where the similarity counts, on the moving grid.
        grid: the working grid, on which the field is estimated and returned; ``None``:
            :func:`working_grid` of the fixed grid. (The registration pipeline passes the working grid of
            the full-resolution fixed image with reduced copies of the images.)
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: progress reporting and cancellation.
        **options: fields of :class:`DeformableSettings` that override ``settings``.

    Returns:
        Displacement field ``u`` on the working grid (:func:`working_grid`), ``[3, K, J, I]`` RAS mm,
        ``T(x) = initial(x + u(x))``.

    Raises:
        SettingsError: a bad setting (before any work).
        ValueError: a mask on another grid.
        RegSegLib.runtime.Cancelled: the progress' cancel event was set.
        RegSegLib.errors.RegSegError: not enough memory for the working grid (checked before any work)
            or the cost volume.
    """
    settings = (settings or DeformableSettings()).overridden(**options)
    for mask, image, which in ((fixed_mask, fixed, "fixed mask"), (moving_mask, moving, "moving mask")):
        if mask is not None:
            mask.require_same_grid(image, which)
    progress = progress or Progress()
    dev = resolve_device(device)
    check_deformable_memory(fixed, settings, dev)
    progress.update(0.0, "deformable: preparing images")
    grid = grid or working_grid(fixed.grid, settings)
    settings = with_search_in_voxels(settings, grid)
    fixed_image, moving_image, weight = _prepare_images(fixed, moving, initial, fixed_mask, moving_mask, grid, settings, dev)
    disp = ENGINES[settings.method](fixed_image, moving_image, weight, settings, progress)
    field_mm = fields.voxel_to_mm(disp, grid.ijk_to_ras)[0]
    progress.update(1.0, "deformable: done")
    return DisplacementField(field_mm.cpu().contiguous(), grid.ijk_to_ras.copy())


def _on_grid(volume: Volume, transform: AffineTransform | None, grid: Grid, dev: torch.device) -> torch.Tensor:
    """First channel of ``volume`` read through ``transform`` on a grid, ``[1, 1, K, J, I]`` float."""
    first = Volume(volume.data[:1].float().to(dev), volume.ijk_to_ras)
    first = antialiased(first, grid.spacing)
    return resample(first, grid, transform, mode="linear").data[None]


def _prepare_images(
    fixed: Volume,
    moving: Volume,
    initial: AffineTransform | None,
    fixed_mask: Volume | None,
    moving_mask: Volume | None,
    grid: Grid,
    settings: DeformableSettings,
    dev: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Fixed image, moving image pre-warped by ``initial`` and fixed-space mask weight on the working grid.

    Returns:
        ``([1, 1, K, J, I], [1, 1, K, J, I], [1, 1, K, J, I] or None)``; images robustly scaled to
        [0, 1]. The weight is the product of the fixed mask and the pre-warped moving mask.
    """
    low, high = (p / 100.0 for p in settings.percentiles)
    fixed_image = robust_scale(_on_grid(fixed, None, grid, dev), low, high)
    moving_image = robust_scale(_on_grid(moving, initial, grid, dev), low, high)
    if settings.presmooth_vox > 0:
        fixed_image = gaussian_smooth(fixed_image, settings.presmooth_vox)
        moving_image = gaussian_smooth(moving_image, settings.presmooth_vox)
    weight = None
    for mask, transform in ((fixed_mask, None), (moving_mask, initial)):
        if mask is None:
            continue
        binary = Volume((mask.data[:1] != 0).float(), mask.ijk_to_ras)
        on_grid = (_on_grid(binary, transform, grid, dev) > 0.5).float()
        weight = on_grid if weight is None else weight * on_grid
    return fixed_image, moving_image, weight
