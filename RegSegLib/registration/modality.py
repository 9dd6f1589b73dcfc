"""``--metric auto``: the similarity measures chosen for a pair of images.

Nothing in a NIfTI or NRRD header says which modality an image is, and the intensity distributions do
not tell either: on ``../shared/data`` the distance between the robustly scaled intensity distributions
of two T1 brains or of two prostate MRs is as large as that of a prostate MR and its ultrasound (the
Kolmogorov-Smirnov distance of their foreground intensities: the same T2 image rotated 0.04-0.09, a
prostate MR and its ultrasound from 0.06). What does tell is whether the intensities of the two images
are linearly related once they are put on each other: the normalised cross-correlation of the two images
smoothed to a coarse grid (about :data:`CHECK_VOXELS` voxels). It is measured twice, at most:

1. with the grid centres put together, which tolerates the misalignment registration is for. Measured on
   ``../shared/data`` (``python Scripts/modality_check.py`` prints the table): same modality: brain T1
   0.95, lung vessel masks 0.53-0.82, prostate MR-MR 0.36-0.81 and US-US 0.40-0.92 (different patients);
   different modalities: prostate MR-US -0.30 to 0.24, T2-DWI -0.03, abdominal CT-MR 0.33. At or above
   :data:`SAME_MODALITY_NCC` the pair shares a modality.
2. below that, after a quick rigid alignment by NCC on a coarse grid (:data:`QUICK_ALIGNMENT`, a
   fraction of a second): an image against a moved copy of itself, or a rescan with the same protocol,
   is rotated and shifted too far for the first test (a prostate T2 against itself rotated by up to 15
   degrees: 0.08-0.54) but correlates almost perfectly once aligned (0.82-0.99), while NCC can only
   squeeze a loose correlation out of two modalities (prostate MR-US 0.33-0.74, T2-DWI 0.22, CT-MR
   0.33). At or above :data:`ALIGNED_SAME_MODALITY_NCC` the pair shares a modality.

A pair that shares a modality is registered with the same-modality measures (NCC for the affine stage,
local NCC for the deformable stage, the most accurate on same-modality pairs in bench/results suites 1, 3
and 4: MIND-SSC's capture range is narrower, and it fails on half of the rotated prostate T2 pairs);
otherwise with MIND-SSC, which works across modalities. A same-modality pair classified as different
(two CTs of different extents score 0.27, then 0.37) loses little with MIND; the guard
(:mod:`~RegSegLib.registration.guard`, MIND-based) catches a stage that goes wrong either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from RegSegLib import geometry
from RegSegLib.geometry import Grid
from RegSegLib.losses.image import global_ncc
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.ops.pyramid import downsample
from RegSegLib.registration.affine import register_affine
from RegSegLib.registration.settings import AffineSettings
from RegSegLib.transforms import AffineTransform, resample
from RegSegLib.validation import SettingsError
from RegSegLib.volume import Volume

CHECK_VOXELS = 30_000
"""Voxels of the coarse grid the correlation is measured on."""
SAME_MODALITY_NCC = 0.35
"""Correlation of the centred images at or above which two images are taken to share a modality."""
ALIGNED_SAME_MODALITY_NCC = 0.78
"""Correlation after the quick rigid alignment at or above which two images are taken to share a modality."""
QUICK_ALIGNMENT = AffineSettings(family="rigid", metric="ncc", levels=(4.0,), iterations=(60,))
"""The quick rigid alignment of the second test: one coarse pyramid level."""
SAME_MODALITY = ("ncc", "lncc")
"""(affine metric, deformable similarity) for images of the same modality."""
CROSS_MODALITY = ("mind", "mind")
"""(affine metric, deformable similarity) for images of different modalities."""


@dataclass(frozen=True)
class MetricChoice:
    """What ``auto`` chose and why.

    Attributes:
        affine: the affine stage's metric.
        deformable: the deformable stage's similarity.
        correlation: the coarse correlation of the centred images.
        same_modality: whether the pair was taken to share a modality.
        aligned_correlation: the coarse correlation after the quick rigid alignment (``None`` when the
            first test decided, or when the image is too small for the alignment's coarse level).
    """

    affine: str
    deformable: str
    correlation: float
    same_modality: bool
    aligned_correlation: float | None = None

    @property
    def reason(self) -> str:
        """One sentence for ``metrics.json``."""
        kind = "the same modality" if self.same_modality else "different modalities"
        measured = f"auto: coarse correlation of the centred images {self.correlation:.2f}"
        if self.correlation >= SAME_MODALITY_NCC:
            measured += f", at or above {SAME_MODALITY_NCC}"
        else:
            measured += f", below {SAME_MODALITY_NCC}"
            if self.aligned_correlation is not None:
                relation = "at or above" if self.same_modality else "below"
                measured += (
                    f"; after a quick rigid alignment {self.aligned_correlation:.2f}, {relation} {ALIGNED_SAME_MODALITY_NCC}"
                )
        return f"{measured}, so {kind}: {self.affine} (affine), {self.deformable} (deformable)"


@dataclass(frozen=True)
class CoarsePair:
    """The two images robustly scaled and smoothed for a coarse copy of the fixed grid (about
    :data:`CHECK_VOXELS` voxels), made once and correlated through several transforms.

    Attributes:
        grid: the coarse grid.
        fixed: the fixed image's first channel, scaled, smoothed and resampled on ``grid``.
        moving: the moving image's first channel, scaled and smoothed for ``grid``'s spacing.
    """

    grid: Grid
    fixed: Volume
    moving: Volume

    @classmethod
    def of(cls, fixed: Volume, moving: Volume) -> "CoarsePair":
        grid = fixed.grid.within_voxels(CHECK_VOXELS)
        images = []
        for volume in (fixed, moving):
            scaled = volume.with_data(robust_scale(volume.data[:1]), kind="image")
            images.append(downsample(scaled, grid.spacing))
        return cls(grid, resample(images[0], grid), images[1])

    def correlation(self, transform: AffineTransform) -> float:
        """NCC in [-1, 1] over the coarse grid, the moving image read through the fixed-to-moving ``transform``."""
        moving = resample(self.moving, self.grid, transform).data[None]
        return float(global_ncc(self.fixed.data[None], moving))


def centring(fixed: Volume, moving: Volume) -> AffineTransform:
    """The translation that puts the two grid centres together (fixed to moving)."""
    matrix = np.eye(4)
    matrix[:3, 3] = geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape) - geometry.grid_centre_ras(
        fixed.ijk_to_ras, fixed.shape
    )
    return AffineTransform(matrix)


def quick_rigid(fixed: Volume, moving: Volume) -> AffineTransform | None:
    """The quick rigid NCC alignment of the second test (:data:`QUICK_ALIGNMENT`), or ``None`` when the
    fixed image is too small for its coarse level."""
    first = [volume.with_data(volume.data[:1].float(), kind="image") for volume in (fixed, moving)]
    try:
        return register_affine(*first, QUICK_ALIGNMENT, device=fixed.data.device)
    except SettingsError:
        return None


def choose_metric(fixed: Volume, moving: Volume) -> MetricChoice:
    """The similarity measures for registering ``moving`` to ``fixed`` (see the module's description)."""
    coarse = CoarsePair.of(fixed, moving)
    correlation = coarse.correlation(centring(fixed, moving))
    aligned = None
    same = correlation >= SAME_MODALITY_NCC
    if not same:
        rigid = quick_rigid(fixed, moving)
        aligned = None if rigid is None else coarse.correlation(rigid)
        same = aligned is not None and aligned >= ALIGNED_SAME_MODALITY_NCC
    affine, deformable = SAME_MODALITY if same else CROSS_MODALITY
    return MetricChoice(affine, deformable, correlation, same, aligned)
