"""The registration pipeline behind ``regseg register``: affine stage, then an optional deformable stage.

As in ANTs and elastix, a deformable registration starts with an affine stage and refines it with a dense
displacement field; the result maps fixed points to moving points (``warped(x) = moving(T(x))``).

Before the stages run, a metric left to ``auto`` is chosen from the images
(:func:`~RegSegLib.registration.modality.choose_metric`). After each stage the guard
(:mod:`~RegSegLib.registration.guard`) scores the alignment; a stage that made it worse is undone and the
result says so in :attr:`RegistrationResult.warnings`.

*Segmentation-guided* registration (``guidance``: segmentations of both images, e.g. the prostate gland in
MR and ultrasound) makes the label term the similarity: every stage registers the smoothed foregrounds of the
two segmentations (mean squared difference unless a metric is given), which are alike whatever the
modalities, and the guard scores those and checks the segmentations' overlap (they are its masks), so that a
stage that moves the structures apart is undone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dataclass_field, replace
from typing import Any, Optional

import numpy as np
import torch

from RegSegLib.geometry import Grid
from RegSegLib.ops.pyramid import downsample
from RegSegLib.registration.affine import base_spacing, initial_alignment, register_affine
from RegSegLib.registration.deformable import (
    check_deformable_memory,
    register_deformable,
    with_search_in_voxels,
    working_grid,
)
from RegSegLib.registration.guard import Guard, Score, Verdict, scoring_grid
from RegSegLib.registration.modality import choose_metric
from RegSegLib.registration.settings import AUTO_METRIC, NETWORK_METHOD, RegistrationSettings, SettingsError
from RegSegLib.runtime import Progress, resolve_device
from RegSegLib.transforms import AffineTransform, CompositeTransform, DisplacementField, Transform, resample
from RegSegLib.volume import Volume

AFFINE_SHARE_OF_DEFORMABLE = 0.25
"""Share of the progress bar given to the affine stage of a deformable registration."""
GUIDANCE_SIGMA_VOXELS = 1.0
"""Gaussian smoothing (voxels) of a guiding segmentation's foreground: the label term then has gradients a
voxel beyond the boundaries. Measured with the true gland masks of the MR -> US test pairs as guidance
(registered deformably, MSE): mean gland Dice 0.96."""
GUIDED_METRIC = "mse"
"""The label term's measure (two smoothed binary maps: same values where they agree, any modality)."""


def guidance_image(segmentation: Volume) -> Volume:
    """A segmentation's foreground (every nonzero label) as a float image smoothed by
    :data:`GUIDANCE_SIGMA_VOXELS`, ``[1, K, J, I]``."""
    from RegSegLib.ops.filters import gaussian_smooth

    foreground = (segmentation.data[:1] != 0).float()
    return Volume(gaussian_smooth(foreground[None], GUIDANCE_SIGMA_VOXELS)[0], segmentation.ijk_to_ras.copy())


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        transform: the whole fixed-to-moving mapping: an :class:`AffineTransform`, or a
            :class:`CompositeTransform` in ITK order (``[affine, field]``, preceded by the parts of an
            initial transform that held a displacement field).
        affine: the affine stage's result (when the guard undid the stage: the initial transform, or the
            better of identity and the stage's initialisation).
        field: the deformable stage's displacement field on the grid it was estimated on, ``None`` for
            affine only or when the guard undid the stage.
        settings: the settings actually used (the metric chosen when it was ``auto``, search radii in voxels).
        metric_reason: why the metric was chosen (``"given"`` when the user chose it).
        verdicts: the guard's verdict on each stage, in order.
        seconds: wall time per stage (``"prepare"``: reducing the inputs and choosing the metric,
            ``"affine"``, ``"deformable"``, ``"guard"``).
        working_images: ``(fixed, moving)`` smoothed and resampled once to the finest spacing any stage works
            at (the inputs themselves when they are not finer): what every stage started from. A report on
            a coarse grid reduces these instead of the full-resolution images again.
    """

    transform: Transform
    affine: AffineTransform
    field: Optional[DisplacementField]
    settings: RegistrationSettings
    metric_reason: str = "given"
    verdicts: list[Verdict] = dataclass_field(default_factory=list)
    seconds: dict[str, float] = dataclass_field(default_factory=dict)
    working_images: Optional[tuple[Volume, Volume]] = None

    @property
    def warnings(self) -> list[str]:
        """Sentences for the user about stages the guard undid (empty when every stage was kept)."""
        return [verdict.warning for verdict in self.verdicts if verdict.warning]


def split_initial(initial: Transform | None) -> tuple[AffineTransform | None, list]:
    """Splits an initial transform into an affine start and the parts that must be pre-composed.

    Args:
        initial: any fixed-to-moving transform, or ``None``.

    Returns:
        ``(affine_start, pre_parts)``: an affine (or purely affine composite) initial transform becomes
        ``(affine, [])``; one holding a displacement field becomes ``(None, parts)`` in ITK order.
    """
    if initial is None:
        return None, []
    simplified = initial.simplified() if isinstance(initial, CompositeTransform) else initial
    if isinstance(simplified, AffineTransform):
        return simplified, []
    parts = simplified.flattened() if isinstance(simplified, CompositeTransform) else [simplified]
    return None, parts


def _best_start(
    guard: Guard,
    affine_start: AffineTransform | None,
    fixed: Volume,
    moving: Volume,
    settings: RegistrationSettings,
    fixed_mask: Volume | None,
    moving_mask: Volume | None,
    pre_composed: bool,
) -> tuple[AffineTransform, Score]:
    """What an undone affine stage falls back to, and its score: the given initial transform, else the
    better of identity and the affine stage's own initialisation (grid or intensity centres), which is a
    result in its own right (two scans of one patient with distant grid origins)."""
    if affine_start is not None:
        return affine_start, guard.score(affine_start)
    candidates = [AffineTransform.identity()]
    if not pre_composed and settings.affine.resolved_init != "identity":
        candidates.append(initial_alignment(fixed, moving, settings.affine.resolved_init, fixed_mask, moving_mask))
    scored = [(candidate, guard.score(candidate)) for candidate in candidates]
    best = scored[0]
    for candidate, score in scored[1:]:
        if best[1].worse_than(score):
            best = (candidate, score)
    return best


def _finest_working_spacing(fixed: Grid, settings: RegistrationSettings, deformable_grid: Grid | None) -> float:
    """The finest spacing (mm) any stage works at: the affine stage's finest pyramid level, the deformable
    working grid or the guard's scoring grid."""
    spacings = [base_spacing(fixed, settings.affine) * min(settings.affine.levels), float(scoring_grid(fixed).spacing.min())]
    if deformable_grid is not None:
        spacings.append(float(deformable_grid.spacing.min()))
    return min(spacings)


def _reduced_image(image: Volume, spacing: float) -> Volume:
    """An image smoothed and resampled to ``spacing`` mm on every axis that is finer
    (:func:`~RegSegLib.ops.pyramid.downsample`); the image itself when no axis is."""
    target = np.full(3, spacing)
    if np.all(image.spacing >= target * (1.0 - 1e-3)):
        return image
    return downsample(image.with_data(image.data.float(), kind="image"), target)


def _reduced_mask(mask: Volume | None, spacing: float) -> Volume | None:
    """A mask (nonzero = inside) reduced as :func:`_reduced_image` and thresholded at one half."""
    if mask is None:
        return None
    binary = mask.with_data((mask.data != 0).float(), kind="image")
    coarse = _reduced_image(binary, spacing)
    return mask if coarse is binary else coarse.with_data((coarse.data >= 0.5).to(torch.uint8), kind="mask")


def register(
    fixed: Volume,
    moving: Volume,
    settings: RegistrationSettings | None = None,
    *,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    initial: Transform | None = None,
    guidance: tuple[Volume, Volume] | None = None,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    **options: Any,
) -> RegistrationResult:
    """Registers ``moving`` to ``fixed``.

    An affine ``initial`` transform (or a composite of affine parts) starts the affine stage. An initial
    transform holding a displacement field ``P`` is pre-composed: the moving image (and mask) is first
    resampled through ``P`` onto the fixed grid, that image is registered starting from identity, and the
    result is ``T = P o R`` (ITK order ``[*P, affine, field]``).

    Args:
        fixed: single-channel float image ``[1, K, J, I]`` (the reference grid of the result).
        moving: single-channel float image ``[1, K', J', I']``.
        settings: the method and each stage's settings (:class:`RegistrationSettings`); when ``None``
            they are made from ``options`` with :meth:`RegistrationSettings.create`.
        fixed_mask: optional mask on the fixed grid.
        moving_mask: optional mask on the moving grid.
        initial: optional fixed-to-moving start transform.
        guidance: optional ``(fixed segmentation, moving segmentation)`` label maps on the fixed and moving
            grids: segmentation-guided registration (module docstring); the images are then used for the
            report only.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: progress reporter; the affine stage takes all of it for ``method="affine"`` and
            :data:`AFFINE_SHARE_OF_DEFORMABLE` of it otherwise.
        **options: the user-level options of :meth:`RegistrationSettings.create` (``method``,
            ``family``, ``metric``, ``diffeomorphic``, ``preset``, ...) when ``settings`` is ``None``.

    Returns:
        :class:`RegistrationResult`.

    Raises:
        SettingsError: a bad setting (before any work).
        RegSegError: device not available, job too large; ``Cancelled`` when the progress cancel event is set.
    """
    if settings is None:
        settings = RegistrationSettings.create(**options)
    elif options:
        raise TypeError(f"give either settings or options, not both (options: {sorted(options)})")
    progress = progress or Progress()
    torch_device = resolve_device(device)
    if guidance is not None:
        for segmentation, image, which in ((guidance[0], fixed, "fixed segmentation"), (guidance[1], moving, "moving segmentation")):
            segmentation.require_same_grid(image, which)
        fixed, moving = guidance_image(guidance[0]), guidance_image(guidance[1])
        if settings.metric == AUTO_METRIC:
            settings = settings.with_stage_metrics(GUIDED_METRIC, GUIDED_METRIC)
    if settings.deformable is not None:  # refuse a working grid that cannot fit before the affine stage runs
        check_deformable_memory(fixed, settings.deformable, torch_device)
    deformable_grid = None
    if settings.deformable is not None:
        deformable_grid = working_grid(fixed.grid, settings.deformable)
        settings = replace(settings, deformable=with_search_in_voxels(settings.deformable, deformable_grid))
    start = time.perf_counter()
    # every stage works at or above this spacing: the inputs are smoothed and resampled to it once
    spacing = _finest_working_spacing(fixed.grid, settings, deformable_grid)
    fixed, moving = _reduced_image(fixed, spacing), _reduced_image(moving, spacing)
    working_images = (fixed, moving)
    fixed_mask, moving_mask = _reduced_mask(fixed_mask, spacing), _reduced_mask(moving_mask, spacing)
    guides = None if guidance is None else [_reduced_mask(segmentation, spacing) for segmentation in guidance]
    reason = "given" if guidance is None else "segmentation-guided: the label term"
    if settings.metric == AUTO_METRIC:
        choice = choose_metric(fixed, moving)
        settings, reason = settings.with_stage_metrics(choice.affine, choice.deformable), choice.reason
    affine_start, pre_parts = split_initial(initial)
    if pre_parts:
        pre = CompositeTransform(pre_parts)
        moving = resample(moving, fixed, pre, mode="linear")
        if moving_mask is not None:
            moving_mask = resample(moving_mask, fixed, pre, mode="nearest")
        if guides is not None:
            guides[1] = resample(guides[1], fixed, pre, mode="nearest")
    affine_share = 1.0 if settings.method != "deformable" else AFFINE_SHARE_OF_DEFORMABLE
    seconds: dict[str, float] = {"prepare": time.perf_counter() - start, "guard": 0.0}

    start = time.perf_counter()
    guard = Guard(fixed, moving, *(guides or (fixed_mask, moving_mask)), device=torch_device)
    fallback, current = _best_start(guard, affine_start, fixed, moving, settings, fixed_mask, moving_mask, bool(pre_parts))
    seconds["guard"] += time.perf_counter() - start

    if settings.method == NETWORK_METHOD:
        if affine_start is None:
            raise SettingsError("the network method keeps a network's prediction: give it as the initial transform (--model)")
        start = time.perf_counter()
        verdict, current = guard.judge(NETWORK_METHOD, guard.score(None), affine_start)
        affine = AffineTransform.identity() if verdict.rolled_back else affine_start
        verdicts = [verdict]
        seconds["guard"] += time.perf_counter() - start
    else:
        start = time.perf_counter()
        affine = register_affine(
            fixed,
            moving,
            settings.affine,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            initial=affine_start,
            device=torch_device,
            progress=progress.sub(0.0, affine_share),
            **({"init": "identity"} if pre_parts else {}),
        )
        seconds["affine"] = time.perf_counter() - start
        start = time.perf_counter()
        verdict, current = guard.judge("affine", current, affine)
        verdicts = [verdict]
        if verdict.rolled_back:
            affine = fallback
        seconds["guard"] += time.perf_counter() - start

    displacement = None
    if settings.deformable is not None:
        start = time.perf_counter()
        displacement = register_deformable(
            fixed,
            moving,
            settings.deformable,
            initial=affine,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            grid=deformable_grid,
            device=torch_device,
            progress=progress.sub(affine_share, 1.0 - affine_share),
        )
        seconds["deformable"] = time.perf_counter() - start
        start = time.perf_counter()
        verdict, current = guard.judge("deformable", current, CompositeTransform([affine, displacement]))
        verdicts.append(verdict)
        if verdict.rolled_back:
            displacement = None
        seconds["guard"] += time.perf_counter() - start

    parts = [*pre_parts, affine] + ([displacement] if displacement is not None else [])
    transform: Transform = affine if len(parts) == 1 else CompositeTransform(parts)
    progress.update(1.0, "registration done")
    return RegistrationResult(
        transform=transform,
        affine=affine,
        field=displacement,
        settings=settings,
        metric_reason=reason,
        verdicts=verdicts,
        seconds=seconds,
        working_images=working_images,
    )
