"""Iterative deformable registration: ConvexAdam and a multi-resolution displacement grid.

Both methods return a :class:`~RegSegLib.transforms.DisplacementField` ``u`` on the fixed grid
(RAS mm) such that the full fixed-to-moving mapping is ``T(x) = initial(x + u(x))``; the caller
composes ``CompositeTransform([initial, field])``.

``method="convexadam"`` follows Siebert, Hansen and Heinrich, "Fast 3D registration with accurate
optimisation and little learning for Learn2Reg 2021" (ConvexAdam):

1. MIND-SSC features of both images on the working grid shrunk by ``search_shrink`` (average
   pooling; the discrete search compares cell averages of the features, which barely change when
   they are computed at half resolution, for an eighth of the cost).
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

``method="grid"`` optimises a control grid of displacements (upsampled trilinearly to a dense field,
B-spline-like) over an image pyramid with a diffusion or bending penalty and the chosen similarity.

``diffeomorphic=True`` treats the optimised field as a stationary velocity and integrates it by
scaling and squaring (for ConvexAdam: the Adam stage's field).

Internally displacements are ``[1, 3, K, J, I]`` tensors in voxels of the working grid with channels
``(i, j, k)``, the order of ``grid_sample``'s last axis.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from RegSegLib import geometry
from RegSegLib.registration import spatial
from RegSegLib.registration.common import Progress, check_memory, resolve_device
from RegSegLib.registration.mind import mind_ssc
from RegSegLib.transforms import AffineTransform, DisplacementField, resample
from RegSegLib.volume import Volume

SIMILARITIES = ("mind", "lncc", "ncc", "mse")
_TIE_BREAK = 1e-6
_ADAM_EPS = {"mind": 0.2, "mse": 0.2, "lncc": 0.3, "ncc": 0.3}
"""Adam's ``eps`` per loss, in per-cell gradient units (see :class:`_Adam`). Near the optimum, where
gradients are far below ``eps``, Adam is gradient descent with step ``lr / eps``; with ``eps=0.05``
that step is unstable on sharp full-resolution MIND features and an identical pair drifts by half a
voxel, with ``0.2`` it stays put. The correlation losses need a little more: their gradient is not
zero on an aligned pair (the variance guard of local NCC rewards contrast in flat regions)."""
METHODS = ("convexadam", "grid")


@dataclass(frozen=True)
class CoarseLevel:
    """One discrete search level of ConvexAdam.

    Sizes are in voxels of the search grid (the working grid shrunk by ``search_shrink``).

    Attributes:
        step: control point spacing (features are average-pooled over ``step``^3).
        radius: search radius in units of ``quantisation``; ``(2 radius + 1)^3`` candidates.
        quantisation: spacing of the candidate displacements.
    """

    step: int = 2
    radius: int = 3
    quantisation: int = 1


@dataclass(frozen=True)
class DeformableSettings:
    """Tuning of :func:`register_deformable` (every field can be passed as a keyword ``**tuning``).

    Attributes:
        search_shrink: the discrete search runs on the working grid shrunk by this factor.
        coarse_levels: ConvexAdam discrete levels, coarse to fine.
        coupling: coupled convex optimisation weights (cost units per squared quantisation step).
        cost_smoothing: 3x3x3 averaging passes over the cost volume before the argmin (aggregation).
        inverse_consistent: make forward and backward coarse solutions inverse consistent.
        inverse_iterations: fixed-point iterations of the inverse consistency step.
        adam_step: grid step in working voxels of the Adam stage.
        adam_iterations: Adam iterations (ConvexAdam) or per pyramid level (grid).
        fine_iterations: Adam iterations of ConvexAdam's last stage on the full working grid
            (0 skips it; only used when ``adam_step`` > 1).
        adam_lr: Adam learning rate in grid voxels.
        adam_smoothing: 3x3x3 averaging passes over the grid at every iteration.
        regularisation: weight of the diffusion (or bending) penalty, in grid voxel units.
        penalty: ``"diffusion"`` or ``"bending"`` (grid method).
        mind_radius: MIND-SSC patch radius in working voxels.
        mind_dilation: MIND-SSC neighbour distance in working voxels.
        presmooth_vox: Gaussian sigma (working voxels) applied to both images before the features.
        pyramid: shrink factors of the grid method, coarse to fine.
        control_step: control point spacing in voxels of each pyramid level (grid method).
        lncc_window: window width in voxels of local NCC.
        integration_steps: scaling-and-squaring steps of the diffeomorphic option.
        percentiles: intensity window mapped to [0, 1] before the similarity.
    """

    search_shrink: int = 2
    coarse_levels: tuple[CoarseLevel, ...] = (CoarseLevel(step=2, radius=3, quantisation=1),)
    coupling: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    cost_smoothing: int = 1
    inverse_consistent: bool = False
    inverse_iterations: int = 15
    adam_step: int = 2
    adam_iterations: int = 12
    fine_iterations: int = 8
    adam_lr: float = 1.0
    adam_smoothing: int = 3
    regularisation: float = 1.0
    penalty: str = "diffusion"
    mind_radius: int = 1
    mind_dilation: int = 2
    presmooth_vox: float = 0.0
    pyramid: tuple[int, ...] = (4, 2, 1)
    control_step: int = 2
    lncc_window: int = 7
    integration_steps: int = 7
    percentiles: tuple[float, float] = (0.5, 99.5)


PRESETS: dict[str, dict] = {
    "default": {},
    "large-motion": {
        "coarse_levels": (
            CoarseLevel(step=2, radius=4, quantisation=1),
            CoarseLevel(step=2, radius=2, quantisation=1),
        ),
        "presmooth_vox": 0.7,
    },
}
"""Named settings. ``large-motion`` searches twice, covering about +-12 working voxels (lung breathing at 2 mm)."""


def settings_from(preset: str = "default", **tuning) -> DeformableSettings:
    """Settings of a named preset, overridden by keyword arguments.

    Raises:
        ValueError: unknown preset or keyword.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown deformable preset {preset!r}; use one of {sorted(PRESETS)}")
    names = {f.name for f in fields(DeformableSettings)}
    values = {**PRESETS[preset], **tuning}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown deformable setting(s) {unknown}; known: {sorted(names)}")
    if "coarse_levels" in values:
        values["coarse_levels"] = tuple(
            level if isinstance(level, CoarseLevel) else CoarseLevel(*level) for level in values["coarse_levels"]
        )
    return replace(DeformableSettings(), **values)


# ----------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------


def register_deformable(
    fixed: Volume,
    moving: Volume,
    *,
    initial: AffineTransform | None = None,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    method: str = "convexadam",
    diffeomorphic: bool = False,
    similarity: str = "lncc",
    spacing_mm: float | None = None,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    preset: str = "default",
    **tuning,
) -> DisplacementField:
    """Deformable registration of ``moving`` to ``fixed``.

    Args:
        fixed: fixed image (first channel used), any grid.
        moving: moving image (first channel used), any grid.
        initial: fixed-to-moving affine applied before the deformation; ``None`` is identity.
        fixed_mask: region of the fixed image where the similarity counts (nonzero = inside).
        moving_mask: region of the moving image where the similarity counts.
        method: ``"convexadam"`` (discrete search + Adam) or ``"grid"`` (pyramid of control grids).
        diffeomorphic: optimise a stationary velocity field integrated by scaling and squaring.
        similarity: ``"mind"`` (MIND-SSC, multi-modal), ``"lncc"``, ``"ncc"`` or ``"mse"``. ConvexAdam's
            discrete search always uses MIND-SSC; the Adam stage uses ``similarity``.
        spacing_mm: isotropic working resolution; ``None`` works on the fixed grid.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: progress reporting and cancellation.
        preset: named settings from :data:`PRESETS`.
        **tuning: overrides of :class:`DeformableSettings` fields.

    Returns:
        Displacement field ``u`` on the fixed grid, ``[3, K, J, I]`` RAS mm, ``T(x) = initial(x + u(x))``.

    Raises:
        ValueError: unknown method, similarity or setting.
        RegSegLib.registration.common.Cancelled: the progress' cancel event was set.
        RegSegLib.errors.RegSegError: not enough memory for the cost volume.
    """
    if method not in METHODS:
        raise ValueError(f"unknown deformable method {method!r}; use one of {METHODS}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; use one of {SIMILARITIES}")
    settings = settings_from(preset, **tuning)
    progress = progress or Progress()
    dev = resolve_device(device)
    progress.update(0.0, "deformable: preparing images")

    grid_matrix, grid_shape = _working_grid(fixed, spacing_mm)
    fixed_image, moving_image, weight = _prepare_images(
        fixed, moving, initial, fixed_mask, moving_mask, grid_matrix, grid_shape, settings, dev
    )
    if method == "convexadam":
        disp = _convex_adam(fixed_image, moving_image, weight, settings, similarity, diffeomorphic, progress)
    else:
        disp = _grid_registration(fixed_image, moving_image, weight, settings, similarity, diffeomorphic, progress)
    progress.update(0.98, "deformable: writing the field")
    result = _field_on_fixed_grid(disp, grid_matrix, fixed)
    progress.update(1.0, "deformable: done")
    return result


# ----------------------------------------------------------------------------------------------
# preparation
# ----------------------------------------------------------------------------------------------


def _working_grid(fixed: Volume, spacing_mm: float | None) -> tuple[np.ndarray, tuple[int, int, int]]:
    if spacing_mm is None:
        return fixed.ijk_to_ras.copy(), fixed.shape
    return geometry.resampled_grid(fixed.ijk_to_ras, fixed.shape, float(spacing_mm))


def _antialiased(volume: Volume, target_spacing: np.ndarray) -> Volume:
    """Gaussian pre-filter of a float volume before it is sampled on a coarser grid."""
    ratio = np.asarray(target_spacing, dtype=np.float64) / volume.spacing
    sigma_ijk = 0.5 * np.sqrt(np.clip(ratio**2 - 1.0, 0.0, None))
    if np.all(sigma_ijk < 0.2):
        return volume
    data = spatial.gaussian_smooth(volume.data[None].float(), tuple(float(s) for s in sigma_ijk[::-1]))[0]
    return volume.with_data(data)


def _on_grid(
    volume: Volume, transform: AffineTransform | None, matrix: np.ndarray, shape: tuple[int, int, int], dev
) -> torch.Tensor:
    """First channel of ``volume`` read through ``transform`` on a grid, ``[1, 1, K, J, I]`` float."""
    first = Volume(volume.data[:1].float().to(dev), volume.ijk_to_ras)
    first = _antialiased(first, geometry.spacing_of(matrix))
    return resample(first, (matrix, shape), transform, mode="linear").data[None]


def _normalise(image: torch.Tensor, percentiles: tuple[float, float]) -> torch.Tensor:
    """Maps the robust intensity window ``percentiles`` to [0, 1] and clips."""
    flat = image.flatten()
    stride = max(1, flat.numel() // 2_000_000)
    sample = flat[::stride].float()
    low, high = torch.quantile(sample, torch.tensor(percentiles, device=sample.device) / 100.0)
    if float(high - low) <= 1e-8:
        return torch.zeros_like(image)
    return ((image - low) / (high - low)).clamp(0.0, 1.0)


def _prepare_images(
    fixed: Volume,
    moving: Volume,
    initial: AffineTransform | None,
    fixed_mask: Volume | None,
    moving_mask: Volume | None,
    matrix: np.ndarray,
    shape: tuple[int, int, int],
    settings: DeformableSettings,
    dev: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Fixed image, moving image pre-warped by ``initial`` and fixed-space mask weight on the working grid.

    Returns:
        ``([1, 1, K, J, I], [1, 1, K, J, I], [1, 1, K, J, I] or None)``; images normalised to [0, 1].
        The weight is the product of the fixed mask and the pre-warped moving mask.
    """
    fixed_image = _normalise(_on_grid(fixed, None, matrix, shape, dev), settings.percentiles)
    moving_image = _normalise(_on_grid(moving, initial, matrix, shape, dev), settings.percentiles)
    if settings.presmooth_vox > 0:
        fixed_image = spatial.gaussian_smooth(fixed_image, settings.presmooth_vox)
        moving_image = spatial.gaussian_smooth(moving_image, settings.presmooth_vox)
    weight = None
    for mask, transform in ((fixed_mask, None), (moving_mask, initial)):
        if mask is None:
            continue
        binary = Volume((mask.data[:1] != 0).float(), mask.ijk_to_ras)
        on_grid = (_on_grid(binary, transform, matrix, shape, dev) > 0.5).float()
        weight = on_grid if weight is None else weight * on_grid
    return fixed_image, moving_image, weight


def _field_on_fixed_grid(disp: torch.Tensor, matrix: np.ndarray, fixed: Volume) -> DisplacementField:
    """Working-grid voxel displacement ``[1, 3, K, J, I]`` -> RAS mm field on the fixed grid."""
    linear = torch.as_tensor(matrix[:3, :3], dtype=disp.dtype, device=disp.device)
    field_mm = torch.einsum("rc,bckji->brkji", linear, disp)[0]
    working = DisplacementField(field_mm.contiguous(), matrix)
    if working.shape == fixed.shape and np.allclose(matrix, fixed.ijk_to_ras, atol=1e-6):
        return DisplacementField(field_mm.cpu().contiguous(), fixed.ijk_to_ras.copy())
    grid = spatial.identity_grid(fixed.shape, disp.device)
    to_working = geometry.ras_to_normalized(matrix, working.shape) @ fixed.ijk_to_ras
    to_working = to_working @ np.linalg.inv(geometry.ijk_to_normalized(fixed.shape))
    theta = torch.as_tensor(to_working[:3], dtype=torch.float32, device=disp.device)[None]
    k, j, i = fixed.shape
    grid = F.affine_grid(theta, [1, 1, k, j, i], align_corners=geometry.ALIGN_CORNERS)
    sampled = spatial.warp(field_mm[None], grid, padding_mode="border")[0]
    return DisplacementField(sampled.cpu().contiguous(), fixed.ijk_to_ras.copy())


# ----------------------------------------------------------------------------------------------
# voxel-displacement helpers
# ----------------------------------------------------------------------------------------------


def _voxel_to_normalized(disp: torch.Tensor) -> torch.Tensor:
    """Voxel displacement ``[B, 3, K, J, I]`` (channels i, j, k) -> normalised ``[B, K, J, I, 3]``."""
    k, j, i = disp.shape[2:]
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in (i, j, k)], dtype=disp.dtype, device=disp.device)
    return disp.permute(0, 2, 3, 4, 1) * scale


def _normalized_to_voxel(disp: torch.Tensor) -> torch.Tensor:
    """Normalised ``[B, K, J, I, 3]`` -> voxel displacement ``[B, 3, K, J, I]``."""
    k, j, i = disp.shape[1:4]
    scale = torch.tensor([max(n - 1, 1) / 2.0 for n in (i, j, k)], dtype=disp.dtype, device=disp.device)
    return (disp * scale).permute(0, 4, 1, 2, 3)


@functools.lru_cache(maxsize=8)
def _identity(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    return spatial.identity_grid(shape, device)


def _warp_voxel(image: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """``image(x + disp(x))`` for ``[B, C, K, J, I]`` and a voxel displacement on the same grid."""
    grid = _identity(tuple(disp.shape[2:]), disp.device) + _voxel_to_normalized(disp)
    return spatial.warp(image, grid, padding_mode="border")


def _compose_voxel(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Voxel displacement of ``(id + outer) o (id + inner)`` on one grid."""
    return inner + _warp_voxel(outer, inner)


def _integrate_voxel(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Scaling and squaring of a voxel velocity field ``[B, 3, K, J, I]``."""
    disp = spatial.integrate_velocity_normalized(_voxel_to_normalized(velocity), steps)
    return _normalized_to_voxel(disp)


def _upsample_cells(disp: torch.Tensor, factor: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Field on cell centres of a grid pooled by ``factor`` -> fine grid ``shape``, values scaled by ``factor``.

    Cell ``c`` of the pooled grid sits at fine voxel ``c * factor + (factor - 1) / 2``; ``interpolate``
    with ``align_corners=False`` and an exact integer scale uses exactly that correspondence (the one
    place where the library's ``align_corners=True`` does not apply: it is a pooling relation, not a
    grid geometry). Voxels beyond the last full cell repeat the border.
    """
    if factor == 1 and tuple(disp.shape[2:]) == tuple(shape):
        return disp
    size = [n * factor for n in disp.shape[2:]]
    out = F.interpolate(disp * factor, size=size, mode="trilinear", align_corners=False)
    pads = []
    for have, want in zip(reversed(size), reversed(shape)):
        pads += [0, max(want - have, 0)]
    out = F.pad(out, pads, mode="replicate")
    return out[:, :, : shape[0], : shape[1], : shape[2]]


class _Adam:
    """Adam (Kingma and Ba, 2015) on one tensor, updated in place.

    Written out because ``torch.optim``'s first use imports the compiler stack, which costs seconds
    on a small CPU machine, longer than a whole registration. Gradients are taken per grid cell
    (the gradient of a voxel-averaged loss times the number of cells) and ``eps`` is set well above
    float rounding noise and the residual gradient of an aligned pair in those units: with the
    textbook ``eps=1e-8`` Adam turns them into full ``lr`` steps.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 0.05):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.first = torch.zeros_like(param)
        self.second = torch.zeros_like(param)
        self.count = 0

    def step(self, grad: torch.Tensor, lr_scale: float = 1.0) -> None:
        """One update with the gradient of the loss; ``lr_scale`` scales the learning rate (schedules)."""
        beta1, beta2 = self.betas
        self.count += 1
        grad = grad * (self.param.numel() / self.param.shape[1])
        self.first.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        self.second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = (self.second / (1.0 - beta2**self.count)).sqrt_().add_(self.eps)
        with torch.no_grad():
            self.param.addcdiv_(self.first, denom, value=-self.lr * lr_scale / (1.0 - beta1**self.count))


def _cosine(iteration: int, total: int) -> float:
    """Cosine learning-rate decay from 1 to 0.05: damps Adam's oscillation around the optimum."""
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * iteration / max(total, 1)))


def _pool_cells(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool3d(x, factor, stride=factor)


def _diffusion(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of ``[B, 3, K, J, I]`` along the three axes (sum of axes)."""
    total = disp.new_zeros(())
    for dim in (2, 3, 4):
        if disp.shape[dim] > 1:
            total = total + torch.diff(disp, dim=dim).pow(2).mean()
    return total


def _bending(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared second derivatives (pure and mixed) of ``[B, 3, K, J, I]``."""
    total = disp.new_zeros(())
    dims = [d for d in (2, 3, 4) if disp.shape[d] > 2]
    for a in dims:
        total = total + torch.diff(disp, n=2, dim=a).pow(2).mean()
        for b in dims:
            if b > a:
                total = total + 2 * torch.diff(torch.diff(disp, dim=a), dim=b).pow(2).mean()
    return total


# ----------------------------------------------------------------------------------------------
# similarities (dense, masked)
# ----------------------------------------------------------------------------------------------


def _weighted_mean(values: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def _dissimilarity(
    similarity: str, fixed: torch.Tensor, weight: Optional[torch.Tensor], window: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Loss to minimise between ``fixed`` and a warped moving ``[B, C, K, J, I]`` (features for ``mind``).

    The terms that depend on the fixed image alone are computed once here.

    Returns:
        A function of the warped moving image returning the scalar loss.
    """
    if similarity in ("mind", "mse"):
        return lambda warped: _weighted_mean((fixed - warped).pow(2).sum(dim=1, keepdim=True), weight)
    if similarity == "lncc":
        box = functools.partial(spatial.box_mean, window=window)
        mean_f = box(fixed)
        var_f = (box(fixed * fixed) - mean_f**2).clamp(min=0.0)

        def local_ncc(warped: torch.Tensor) -> torch.Tensor:
            mean_w = box(warped)
            cov = box(fixed * warped) - mean_f * mean_w
            var_w = (box(warped * warped) - mean_w**2).clamp(min=0.0)
            return -_weighted_mean(cov * cov / (var_f * var_w + 1e-5), weight)

        return local_ncc
    w = torch.ones_like(fixed) if weight is None else weight.expand_as(fixed)
    total = w.sum().clamp(min=1.0)
    f = fixed - (fixed * w).sum() / total
    f_norm = (f * f * w).sum()

    def ncc(warped: torch.Tensor) -> torch.Tensor:
        m = warped - (warped * w).sum() / total
        return -(f * m * w).sum() / torch.sqrt(f_norm * (m * m * w).sum() + 1e-8)

    return ncc


# ----------------------------------------------------------------------------------------------
# ConvexAdam
# ----------------------------------------------------------------------------------------------


def _features(image: torch.Tensor, settings: DeformableSettings) -> torch.Tensor:
    return mind_ssc(image, radius=settings.mind_radius, dilation=settings.mind_dilation)


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
    fixed_cells = _pool_cells(fixed_feat, step)[0]
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
    """Coupled convex optimisation over a cost volume ``[N, Kc, Jc, Ic]`` -> voxel field ``[1, 3, Kc, Jc, Ic]``."""
    if settings.cost_smoothing > 0:
        cost = spatial.smooth_average(cost[None], 3, settings.cost_smoothing)[0]
    shape = cost.shape[1:]
    cand = candidates / q
    cand_sq = cand.pow(2).sum(dim=1)[:, None]
    # a vanishing preference for short displacements breaks ties (flat, featureless regions) towards zero
    cost = cost + _TIE_BREAK * cand_sq[:, :, None, None]
    disp = candidates[cost.argmin(dim=0).flatten()].T.reshape(1, 3, *shape)
    flat_cost = cost.reshape(cost.shape[0], -1)
    for alpha in settings.coupling:
        smoothed = spatial.smooth_average(disp, 3, 1).reshape(3, -1) / q
        distance = cand_sq - 2.0 * cand @ smoothed + smoothed.pow(2).sum(dim=0)[None]
        coupled = torch.addcmul(flat_cost, distance, torch.tensor(alpha, device=cost.device))
        disp = candidates[coupled.argmin(dim=0)].T.reshape(1, 3, *shape)
    return spatial.smooth_average(disp, 3, 1)


def _inverse_consistent(forward: torch.Tensor, backward: torch.Tensor, iterations: int) -> torch.Tensor:
    """Fixed-point symmetrisation: ``u <- (u - v o (id + u)) / 2`` and vice versa, returns the forward field."""
    for _ in range(iterations):
        new_forward = 0.5 * (forward - _warp_voxel(backward, forward))
        new_backward = 0.5 * (backward - _warp_voxel(forward, backward))
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
    cell_weight = None if weight is None else _pool_cells(weight, level.step)[0]

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
    return _upsample_cells(forward / level.step, level.step, tuple(fixed_feat.shape[2:]))


def _convex_adam(
    fixed_image: torch.Tensor,
    moving_image: torch.Tensor,
    weight: Optional[torch.Tensor],
    settings: DeformableSettings,
    similarity: str,
    diffeomorphic: bool,
    progress: Progress,
) -> torch.Tensor:
    """ConvexAdam on the working grid; returns the voxel displacement ``[1, 3, K, J, I]``."""
    shape = tuple(fixed_image.shape[2:])
    shrink = settings.search_shrink
    fixed_feat = _features(_pool_cells(fixed_image, shrink), settings)
    moving_feat = _features(_pool_cells(moving_image, shrink), settings)
    search_weight = None if weight is None else _pool_cells(weight, shrink)
    disp = torch.zeros(1, 3, *fixed_feat.shape[2:], device=fixed_image.device)
    levels = settings.coarse_levels
    for index, level in enumerate(levels):
        progress.update(0.05 + 0.4 * index / max(len(levels), 1), f"deformable: discrete search level {index + 1}")
        warped_feat = moving_feat if index == 0 else _warp_voxel(moving_feat, disp)
        delta = _coarse_level(fixed_feat, warped_feat, search_weight, level, settings)
        disp = delta if index == 0 else _compose_voxel(disp, delta)
    disp = _upsample_cells(disp, shrink, shape)
    if similarity == "mind" and shrink > 1:
        fixed_adam, moving_adam = _features(fixed_image, settings), _features(moving_image, settings)
    elif similarity == "mind":
        fixed_adam, moving_adam = fixed_feat, moving_feat
    else:
        fixed_adam, moving_adam = fixed_image, moving_image
    stages = [(settings.adam_step, settings.adam_iterations)]
    if settings.adam_step > 1 and settings.fine_iterations > 0:
        stages.append((1, settings.fine_iterations))
    total = sum(step**-3 * iterations for step, iterations in stages) or 1.0
    start = 0.45
    for step, iterations in stages:
        share = 0.53 * step**-3 * iterations / total
        disp = _adam_refine(
            fixed_adam, moving_adam, weight, disp, step, iterations, settings, similarity, diffeomorphic,
            progress.sub(start, share),
        )
        start += share
    return _integrate_voxel(disp, settings.integration_steps) if diffeomorphic else disp


def _adam_refine(
    fixed_data: torch.Tensor,
    moving_data: torch.Tensor,
    weight: Optional[torch.Tensor],
    init: torch.Tensor,
    step: int,
    iterations: int,
    settings: DeformableSettings,
    similarity: str,
    diffeomorphic: bool,
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
        similarity: name of the loss (see :func:`_dissimilarity`).
        diffeomorphic: the field is a stationary velocity integrated by scaling and squaring.
        progress: progress of this stage.

    Returns:
        The smoothed optimised field ``[1, 3, K, J, I]`` in working voxels (the velocity when
        ``diffeomorphic``; the caller integrates it).
    """
    shape = tuple(fixed_data.shape[2:])
    fixed_cells = _pool_cells(fixed_data, step)
    moving_cells = _pool_cells(moving_data, step)
    weight_cells = None if weight is None else _pool_cells(weight, step)
    params = (_pool_cells(init, step) / step).requires_grad_(True)
    optimizer = _Adam(params, lr=settings.adam_lr, eps=_ADAM_EPS[similarity])
    loss_of = _dissimilarity(similarity, fixed_cells, weight_cells, max(3, settings.lncc_window // step | 1))

    def smoothed() -> torch.Tensor:
        return spatial.smooth_average(params, 3, settings.adam_smoothing)

    for iteration in range(iterations):
        if iteration % 5 == 0:
            progress.update(iteration / iterations, f"deformable: Adam (grid step {step}) {iteration}")
        field = smoothed()
        disp = _integrate_voxel(field, settings.integration_steps) if diffeomorphic else field
        loss = loss_of(_warp_voxel(moving_cells, disp)) + settings.regularisation * _diffusion(disp)
        optimizer.step(torch.autograd.grad(loss, params)[0], _cosine(iteration, iterations))
    with torch.no_grad():
        return _upsample_cells(smoothed(), step, shape)


# ----------------------------------------------------------------------------------------------
# multi-resolution control grid
# ----------------------------------------------------------------------------------------------


def _grid_registration(
    fixed_image: torch.Tensor,
    moving_image: torch.Tensor,
    weight: Optional[torch.Tensor],
    settings: DeformableSettings,
    similarity: str,
    diffeomorphic: bool,
    progress: Progress,
) -> torch.Tensor:
    """Pyramid of control grids (trilinear upsampling) optimised with Adam; working-grid voxel field."""
    shape = tuple(fixed_image.shape[2:])
    if similarity == "mind":
        fixed_data, moving_data = _features(fixed_image, settings), _features(moving_image, settings)
    else:
        fixed_data, moving_data = fixed_image, moving_image
    params: Optional[torch.Tensor] = None
    levels = settings.pyramid
    penalty = _bending if settings.penalty == "bending" else _diffusion
    for index, factor in enumerate(levels):
        level_shape = tuple(max(int(math.ceil(n / factor)), 4) for n in shape)
        fixed_level = _resize(fixed_data, level_shape, factor)
        moving_level = _resize(moving_data, level_shape, factor)
        weight_level = None if weight is None else (_resize(weight, level_shape, 1) > 0.5).float()
        control_shape = tuple(max(int(math.ceil(n / settings.control_step)) + 1, 2) for n in level_shape)
        if params is None:
            start = torch.zeros(1, 3, *control_shape, device=fixed_image.device)
        else:
            start = _resize_voxel(params.detach(), control_shape)
        params = start.requires_grad_(True)
        optimizer = _Adam(params, lr=settings.adam_lr / settings.control_step, eps=_ADAM_EPS[similarity])
        level_progress = progress.sub(0.05 + 0.9 * index / len(levels), 0.9 / len(levels))
        loss_of = _dissimilarity(similarity, fixed_level, weight_level, max(3, settings.lncc_window // factor | 1))
        for iteration in range(settings.adam_iterations):
            if iteration % 5 == 0:
                level_progress.update(iteration / settings.adam_iterations, f"deformable: level {index + 1}")
            disp = _dense_field(params, level_shape, diffeomorphic, settings.integration_steps)
            warped = _warp_voxel(moving_level, disp)
            loss = loss_of(warped) + settings.regularisation * penalty(disp)
            optimizer.step(torch.autograd.grad(loss, params)[0], _cosine(iteration, settings.adam_iterations))
    with torch.no_grad():
        final_shape = tuple(max(int(math.ceil(n / levels[-1])), 4) for n in shape)
        return _resize_voxel(_dense_field(params, final_shape, diffeomorphic, settings.integration_steps), shape)


def _dense_field(
    params: torch.Tensor, shape: tuple[int, int, int], diffeomorphic: bool, integration_steps: int
) -> torch.Tensor:
    """Control grid ``[1, 3, k, j, i]`` -> smooth dense voxel field on ``shape`` (integrated when diffeomorphic)."""
    dense = spatial.smooth_average(_resize_voxel(params, shape), 3, 1)
    return _integrate_voxel(dense, integration_steps) if diffeomorphic else dense


def _resize(x: torch.Tensor, shape: tuple[int, int, int], factor: int) -> torch.Tensor:
    """Anti-aliased resize of ``[B, C, K, J, I]`` to another grid of the same extent (corner-aligned)."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    if factor > 1:
        x = spatial.gaussian_smooth(x, 0.5 * math.sqrt(factor**2 - 1))
    return F.interpolate(x, size=shape, mode="trilinear", align_corners=geometry.ALIGN_CORNERS)


def _resize_voxel(disp: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resizes a voxel displacement to another grid of the same (corner-aligned) extent, rescaling vectors."""
    return _normalized_to_voxel(spatial.resize_displacement(_voxel_to_normalized(disp), shape))
