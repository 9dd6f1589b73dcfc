"""Deformable registration: recovery of known smooth deformations of a real brain volume at 4 mm."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from RegSegLib import geometry
from RegSegLib.io.volumes import read_volume
from RegSegLib.runtime import Cancelled, Progress
from RegSegLib.registration.deformable import register_deformable
from RegSegLib.registration.settings import DeformableSettings, SettingsError
from RegSegLib.registration.deformable import working_grid
from RegSegLib.transforms import DisplacementField, field_from_transform, jacobian_determinant, resample
from RegSegLib.volume import Volume

SPACING_MM = 4.0


@pytest.fixture(scope="module")
def brain(shared_data) -> Volume:
    """Subject A's T1 resampled to a 4 mm grid (40 x 48 x 56)."""
    volume = read_volume(shared_data / "brain-mr" / "subject_a_t1.nii.gz")
    matrix, shape = geometry.resampled_grid(volume.ijk_to_ras, volume.shape, SPACING_MM)
    smoothed = volume.with_data(
        F.avg_pool3d(volume.data[None].float(), 3, stride=1, padding=1, count_include_pad=False)[0]
    )
    return resample(smoothed, (matrix, shape), None, mode="linear")


def smooth_field(volume: Volume, amplitude_mm: float, control: int = 5, seed: int = 0) -> DisplacementField:
    """A random smooth RAS displacement on the volume's grid (cubic upsampling of a coarse grid)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, control, control, control, generator=generator)
    coarse[..., 0, :, :] = coarse[..., -1, :, :] = 0.0
    dense = F.interpolate(coarse, size=volume.shape, mode="trilinear", align_corners=True)[0]
    dense = dense / dense.abs().amax() * amplitude_mm
    return DisplacementField(dense, volume.ijk_to_ras.copy())


def inverse_field(field: DisplacementField, iterations: int = 30) -> DisplacementField:
    """Fixed-point inverse ``v(y) = -u(y + v(y))`` of a small smooth displacement on its own grid."""
    points = field.grid.points_ras()
    inverse = torch.zeros_like(points)
    for _ in range(iterations):
        inverse = -field.displacement_at(points + inverse)
    return DisplacementField(inverse.permute(3, 0, 1, 2).contiguous(), field.ijk_to_ras.copy())


def deformed_pair(volume: Volume, truth: DisplacementField) -> Volume:
    """Moving image with ``moving(x + truth(x)) = volume(x)``: ``moving = volume o truth^-1``."""
    return resample(volume, volume, inverse_field(truth), mode="linear")


def mean_error(result: DisplacementField, truth: DisplacementField, region: torch.Tensor) -> float:
    """Mean distance (mm) between recovered and true mappings over a boolean ``[K, J, I]`` region of the
    truth's grid (the result is read there as ITK reads it, whatever grid it was estimated on)."""
    on_truth_grid = field_from_transform(result, truth.grid)
    return float((on_truth_grid.field - truth.field).norm(dim=0)[region].mean())


def foreground(volume: Volume) -> torch.Tensor:
    return volume.data[0] > 0.1 * float(volume.data.max())


@pytest.mark.parametrize(("similarity", "bound_mm"), [("mind", 0.25), ("lncc", 0.55)])
def test_identity_pair_gives_zero_field(brain: Volume, similarity: str, bound_mm: float) -> None:
    """An identical pair stays put to within a small fraction of the 4 mm voxel.

    Local NCC's optimum is not exactly the identity in flat regions (its variance guard rewards
    contrast), hence its larger bound, about an eighth of a voxel with the default single averaging pass
    per Adam step: 0.50 mm with the default six full-resolution Adam iterations (0.46 with eight, 0.62
    with none: the drift comes from the coarser Adam stage and the last one takes part of it back). Three
    averaging passes, an earlier default, kept it under 0.3 mm but lost Dice on real pairs.
    """
    result = register_deformable(brain, brain, similarity=similarity, device="cpu")
    assert result.shape == brain.shape
    assert float(result.field.norm(dim=0)[foreground(brain)].mean()) < bound_mm


def test_convexadam_recovers_smooth_deformation(brain: Volume) -> None:
    truth = smooth_field(brain, amplitude_mm=12.0)
    moving = deformed_pair(brain, truth)
    region = foreground(brain)
    initial_error = mean_error(DisplacementField(torch.zeros_like(truth.field), truth.ijk_to_ras), truth, region)
    result = register_deformable(brain, moving, device="cpu")
    error = mean_error(result, truth, region)
    assert initial_error > 2.0
    assert error < 0.6 * initial_error
    assert error < 1.5
    assert float((jacobian_determinant(result) <= 0).float().mean()) == 0.0


def test_grid_method_recovers_smooth_deformation(brain: Volume) -> None:
    truth = smooth_field(brain, amplitude_mm=6.0)
    moving = deformed_pair(brain, truth)
    region = foreground(brain)
    initial_error = mean_error(DisplacementField(torch.zeros_like(truth.field), truth.ijk_to_ras), truth, region)
    result = register_deformable(
        brain, moving, method="grid", similarity="mind", regularisation=1.0, spacing_mm=6.0, pyramid=(2, 1),
        adam_iterations=40, device="cpu",
    )
    assert mean_error(result, truth, region) < 0.7 * initial_error


def test_diffeomorphic_option_does_not_fold_large_deformation(brain: Volume) -> None:
    truth = smooth_field(brain, amplitude_mm=14.0, control=4, seed=2)
    moving = deformed_pair(brain, truth)
    result = register_deformable(
        brain,
        moving,
        method="grid",
        similarity="mse",
        diffeomorphic=True,
        regularisation=0.02,
        spacing_mm=6.0,
        pyramid=(2, 1),
        adam_iterations=40,
        device="cpu",
    )
    assert float((jacobian_determinant(result) <= 0).float().mean()) < 1e-4


def test_fixed_mask_restricts_the_similarity(brain: Volume) -> None:
    truth = smooth_field(brain, amplitude_mm=8.0, seed=3)
    moving = deformed_pair(brain, truth)
    region = foreground(brain)
    half = torch.zeros(brain.shape, dtype=torch.bool)
    half[:, :, : brain.shape[2] // 2] = True
    mask = Volume(half[None].to(torch.uint8), brain.ijk_to_ras.copy())
    masked = register_deformable(brain, moving, fixed_mask=mask, device="cpu")
    unmasked = register_deformable(brain, moving, device="cpu")
    inside, outside = region & half, region & ~half
    far_outside = outside.clone()
    far_outside[:, :, : brain.shape[2] * 3 // 4] = False
    # inside the mask, as good as without it up to the half-image cut's border effect (1.22x with the
    # default single averaging pass per Adam step on this smooth synthetic field)
    assert mean_error(masked, truth, inside) < 1.3 * mean_error(unmasked, truth, inside)
    assert mean_error(masked, truth, far_outside) > 1.5 * mean_error(unmasked, truth, far_outside)


def test_cancel_event_stops_registration(brain: Volume) -> None:
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        register_deformable(brain, brain, device="cpu", progress=Progress(cancel=event))


def test_working_resolution_and_initial_affine(brain: Volume) -> None:
    """A pure shift handled by the initial affine leaves a near-zero field, returned on the working grid,
    which covers every fixed voxel centre.

    MIND keeps an aligned pair exactly in place (see the identity test for local NCC's small drift).
    """
    from RegSegLib.transforms import AffineTransform

    shift = np.eye(4)
    shift[:3, 3] = [6.0, -4.0, 2.0]
    moving = Volume(brain.data.clone(), shift @ brain.ijk_to_ras)
    result = register_deformable(
        brain, moving, initial=AffineTransform(shift), spacing_mm=6.0, similarity="mind", device="cpu"
    )
    assert np.allclose(result.grid.spacing, 6.0)
    assert result.grid.same_as(working_grid(brain.grid, DeformableSettings(spacing_mm=6.0)))
    first, last = (geometry.transform_points(brain.ijk_to_ras, np.array(corner, dtype=float)) for corner in ([0, 0, 0], np.array(brain.shape[::-1]) - 1))
    to_field = np.linalg.inv(result.ijk_to_ras)
    for corner in (first, last):
        assert np.all(np.abs(geometry.transform_points(to_field, corner) - (np.array(result.shape[::-1]) - 1) / 2) <= np.array(result.shape[::-1]) / 2)
    on_fixed = field_from_transform(result, brain.grid)
    assert float(on_fixed.field.norm(dim=0)[foreground(brain)].mean()) < 0.5


def test_automatic_working_resolution_follows_the_voxel_budget(brain: Volume) -> None:
    settings = DeformableSettings(max_working_voxels=brain.grid.num_voxels)
    assert working_grid(brain.grid, settings).same_as(brain.grid)
    budget = brain.grid.num_voxels // 8
    coarse = working_grid(brain.grid, DeformableSettings(max_working_voxels=budget))
    assert np.allclose(coarse.spacing, coarse.spacing[0])
    assert budget <= coarse.num_voxels <= 1.3 * budget
    assert np.all(coarse.extent_mm >= brain.grid.extent_mm - 1e-6)


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown deformable setting"):
        DeformableSettings.from_preset(learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown deformable preset"):
        DeformableSettings.from_preset("nope")


def test_search_radius_in_mm_follows_the_working_resolution() -> None:
    """The default capture range is about the same in mm whatever the working grid (lung at 2.9 mm, brain at
    2 mm), and a fine grid keeps a bounded number of candidates."""
    from RegSegLib.registration.deformable import with_search_in_voxels
    from RegSegLib.registration.settings import MAX_SEARCH_RADIUS, CoarseLevel

    first, second = DeformableSettings().coarse_levels
    assert (first.radius_mm, second.radius_mm) == (16.0, 8.0)
    assert first.in_voxels(5.8).radius == 3 and first.in_voxels(4.0).radius == 4
    assert CoarseLevel(radius=5).in_voxels(1.0).radius == 5
    assert first.in_voxels(0.8).radius == MAX_SEARCH_RADIUS
    grid = geometry.Grid(np.diag([2.9, 2.9, 2.9, 1.0]), (100, 80, 110))
    levels = with_search_in_voxels(DeformableSettings(search_shrink=2), grid).coarse_levels
    assert [(level.radius, level.radius_mm) for level in levels] == [(3, None), (2, None)]
    assert all(level.radius * 2 * 2.9 >= mm for level, mm in zip(levels, (16.0, 8.0)))


def test_the_search_shrink_follows_the_working_grid_size() -> None:
    """Large working grids are searched at a third of their resolution, small ones (prostate ultrasound) at
    half; the radii in mm follow the search grid, and a shrink the user gives is kept."""
    from RegSegLib.registration.deformable import with_search_in_voxels
    from RegSegLib.registration.settings import COARSER_SEARCH_VOXELS

    assert DeformableSettings().resolved_search_shrink(COARSER_SEARCH_VOXELS) == 3
    assert DeformableSettings().resolved_search_shrink(COARSER_SEARCH_VOXELS - 1) == 2
    assert DeformableSettings(search_shrink=1).resolved_search_shrink(10**8) == 1
    brain = geometry.Grid(np.diag([2.0, 2.0, 2.0, 1.0]), (80, 96, 112))
    ultrasound = geometry.Grid(np.diag([0.8, 0.8, 0.8, 1.0]), (44, 59, 41))
    on_brain = with_search_in_voxels(DeformableSettings(), brain)
    on_ultrasound = with_search_in_voxels(DeformableSettings(), ultrasound)
    assert (on_brain.search_shrink, on_ultrasound.search_shrink) == (3, 2)
    assert [level.radius for level in on_brain.coarse_levels] == [3, 2]  # 16 and 8 mm on a 6 mm search grid
    assert [level.radius for level in on_ultrasound.coarse_levels] == [6, 5]  # at most 6 steps of 1.6 mm
    with pytest.raises(SettingsError, match="search shrink"):
        DeformableSettings(search_shrink=0)


def test_the_regularisation_default_follows_the_similarity() -> None:
    assert DeformableSettings().resolved_regularisation == 0.75
    assert DeformableSettings().resolved_adam_smoothing == 1
    assert DeformableSettings(similarity="mind").resolved_adam_smoothing == 3
    assert DeformableSettings(similarity="mind", adam_smoothing=0).resolved_adam_smoothing == 0
    assert DeformableSettings(similarity="mind").resolved_regularisation == 8.0
    assert DeformableSettings(similarity="mind", regularisation=2.0).resolved_regularisation == 2.0
    from RegSegLib.registration.settings import RegistrationSettings

    recorded = RegistrationSettings.create(method="deformable", metric="mind").as_dict()
    assert recorded["deformable"]["regularisation"] == 8.0 and recorded["affine"]["iterations"] == (60, 20, 10)
    assert recorded["deformable"]["adam_smoothing"] == 3
