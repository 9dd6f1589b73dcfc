"""``--metric auto``: the similarity measures chosen for a pair of images.

Nothing in a NIfTI or NRRD header says which modality an image is, and the intensity distributions do
not tell either: on ``../shared/data`` the distance between the robustly scaled intensity distributions
of two T1 brains or of two prostate MRs is as large as that of a prostate MR and its ultrasound. What
does tell is whether the intensities of the two images are linearly related once their grids are
centred on each other: the normalised cross-correlation of the two images smoothed to a coarse grid
(about :data:`CHECK_VOXELS` voxels), which tolerates the misalignment registration is for. Measured on
``../shared/data`` (``python Scripts/modality_check.py`` prints the table):

* same modality: brain T1 0.95, lung vessel masks 0.55-0.82, prostate MR-MR 0.36-0.53 and US-US
  0.40-0.75 (different patients);
* different modalities: prostate MR-US -0.30 to 0.24, T2-DWI -0.03, abdominal CT-MR 0.33.

At or above :data:`SAME_MODALITY_NCC` the pair is registered with the same-modality measures (NCC for
the affine stage, local NCC for the deformable stage, the most accurate on same-modality pairs in
bench/results suites 1 and 3); below it with MIND-SSC, which works across modalities. A same-modality
pair classified as different (two CTs of different extents scored 0.27) loses little with MIND; the
guard (:mod:`~RegSegLib.registration.guard`, MIND-based) catches a stage that goes wrong either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from RegSegLib import geometry
from RegSegLib.losses.image import global_ncc
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.ops.pyramid import downsample
from RegSegLib.transforms import AffineTransform, resample
from RegSegLib.volume import Volume

CHECK_VOXELS = 30_000
"""Voxels of the coarse grid the correlation is measured on."""
SAME_MODALITY_NCC = 0.35
"""Correlation at or above which two images are taken to share a modality."""
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
    """

    affine: str
    deformable: str
    correlation: float
    same_modality: bool

    @property
    def reason(self) -> str:
        """One sentence for ``metrics.json``."""
        relation = "at or above" if self.same_modality else "below"
        kind = "the same modality" if self.same_modality else "different modalities"
        return (
            f"auto: coarse correlation of the centred images {self.correlation:.2f}, {relation} {SAME_MODALITY_NCC}, "
            f"so {kind}: {self.affine} (affine), {self.deformable} (deformable)"
        )


def centred_correlation(fixed: Volume, moving: Volume) -> float:
    """Normalised cross-correlation of the two images on a coarse grid, their grid centres put together.

    Args:
        fixed: the fixed image (first channel used).
        moving: the moving image (first channel used).

    Returns:
        NCC in [-1, 1] over the coarse fixed grid.
    """
    grid = fixed.grid.within_voxels(CHECK_VOXELS)
    images = []
    for volume in (fixed, moving):
        scaled = volume.with_data(robust_scale(volume.data[:1]), kind="image")
        images.append(downsample(scaled, grid.spacing))
    centring = np.eye(4)
    centring[:3, 3] = geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape) - geometry.grid_centre_ras(
        fixed.ijk_to_ras, fixed.shape
    )
    fixed_coarse = resample(images[0], grid).data[None]
    moving_coarse = resample(images[1], grid, AffineTransform(centring)).data[None]
    return float(global_ncc(fixed_coarse, moving_coarse))


def choose_metric(fixed: Volume, moving: Volume) -> MetricChoice:
    """The similarity measures for registering ``moving`` to ``fixed`` (see the module's description)."""
    correlation = centred_correlation(fixed, moving)
    same = correlation >= SAME_MODALITY_NCC
    affine, deformable = SAME_MODALITY if same else CROSS_MODALITY
    return MetricChoice(affine, deformable, correlation, same)
