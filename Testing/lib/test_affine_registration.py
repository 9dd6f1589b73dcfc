"""Iterative affine registration: known-transform recovery on real volumes (RegSegLib.registration.affine).

Protocol (RegSegLib.testing.known_transforms): moving = a real volume, fixed = moving resampled
through a random known fixed-to-moving affine (up to 15 degrees, 15 mm, 10 % scale, 0.05 shear);
the error is |T_est(x) - T_true(x)| over the fixed image's foreground voxels. Volumes are
downsampled to keep the suite fast; the bars are the product's (mean <= 0.5 mm, max <= 1.5 mm).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from RegSegLib import geometry
from RegSegLib.io.volumes import read_volume
from RegSegLib.registration.affine import register_affine
from RegSegLib.runtime import Cancelled, Progress
from RegSegLib.evaluation.points import mapping_error_mm
from RegSegLib.testing.known_transforms import foreground_points, random_affine, synthetic_affine_pair
from RegSegLib.transforms import AffineTransform, resample
from RegSegLib.volume import Volume

MEAN_BAR_MM = 0.5
MAX_BAR_MM = 1.5


def downsampled(volume: Volume, spacing: float | tuple[float, float, float]) -> Volume:
    matrix, shape = geometry.resampled_grid(volume.ijk_to_ras, volume.shape, spacing)
    return resample(volume.to(dtype=torch.float32), (matrix, shape))


@pytest.fixture(scope="module")
def brain(shared_data) -> Volume:
    return downsampled(read_volume(shared_data / "brain-mr" / "subject_a_t1.nii.gz"), 4.0)


@pytest.fixture(scope="module")
def prostate_t2(shared_data) -> Volume:
    return downsampled(read_volume(shared_data / "prostate-t2-dwi" / "test_0000_t2_tse_tra_4.nii.gz"), (1.5, 1.5, 3.0))


def recovery_error(fixed: Volume, moving: Volume, truth: AffineTransform, **options) -> dict[str, float]:
    estimate = register_affine(fixed, moving, device="cpu", **options)
    return mapping_error_mm(estimate, truth, foreground_points(fixed))


@pytest.mark.parametrize("family", ["rigid", "similarity", "anisotropic", "affine"])
def test_known_affine_recovery_on_brain(brain, family):
    fixed, truth = synthetic_affine_pair(brain, family, np.random.default_rng(7))
    assert mapping_error_mm(np.eye(4), truth, foreground_points(fixed))["mean"] > 5.0
    error = recovery_error(fixed, brain, truth, family=family)
    assert error["mean"] <= MEAN_BAR_MM and error["max"] <= MAX_BAR_MM, error


@pytest.mark.parametrize("family", ["rigid", "affine"])
def test_known_affine_recovery_on_anisotropic_oblique_prostate(prostate_t2, family):
    fixed, truth = synthetic_affine_pair(prostate_t2, family, np.random.default_rng(3))
    error = recovery_error(fixed, prostate_t2, truth, family=family)
    assert error["mean"] <= MEAN_BAR_MM and error["max"] <= MAX_BAR_MM, error


@pytest.mark.parametrize(("metric", "family"), [("mi", "affine"), ("mind", "rigid")])
def test_multimodal_recovery_against_inverted_contrast(prostate_t2, metric, family):
    fixed, truth = synthetic_affine_pair(prostate_t2, family, np.random.default_rng(5))
    inverted = fixed.with_data(fixed.data.max() - fixed.data)
    error = recovery_error(inverted, prostate_t2, truth, family=family, metric=metric, init="centres")
    assert error["mean"] <= MEAN_BAR_MM and error["max"] <= MAX_BAR_MM, error


def test_fixed_mask_excludes_a_corrupted_region(brain):
    fixed, truth = synthetic_affine_pair(brain, "rigid", np.random.default_rng(11))
    corrupted = fixed.data.clone()
    k, j, i = fixed.shape
    block = (slice(None), slice(k // 4, k // 2), slice(j // 4, 3 * j // 4), slice(i // 4, 3 * i // 4))
    corrupted[block] = corrupted.max() * torch.rand(corrupted[block].shape, generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(fixed.data, dtype=torch.uint8)
    mask[block] = 0
    fixed_corrupted = fixed.with_data(corrupted)
    masked = recovery_error(fixed_corrupted, brain, truth, family="rigid", fixed_mask=fixed.with_data(mask))
    assert masked["mean"] <= MEAN_BAR_MM and masked["max"] <= MAX_BAR_MM, masked


def test_moving_mask_restricts_the_comparison(brain):
    fixed, truth = synthetic_affine_pair(brain, "similarity", np.random.default_rng(13))
    k, j, i = brain.shape
    mask = torch.zeros_like(brain.data, dtype=torch.uint8)
    mask[:, k // 6 : 5 * k // 6, j // 6 : 5 * j // 6, i // 6 : 5 * i // 6] = 1
    moving = brain.with_data(torch.where(mask.bool(), brain.data, brain.data.max() * 0.7))
    error = recovery_error(fixed, moving, truth, family="similarity", moving_mask=brain.with_data(mask))
    assert error["mean"] <= MEAN_BAR_MM and error["max"] <= MAX_BAR_MM, error


def test_initial_transform_starts_the_search(brain):
    centre = geometry.grid_centre_ras(brain.ijk_to_ras, brain.shape)
    truth = AffineTransform(random_affine("rigid", np.random.default_rng(17), centre, max_rot_deg=40.0))
    fixed = resample(brain, brain, truth)
    near = truth.matrix.copy()
    near[:3, 3] += [3.0, -2.0, 2.0]
    error = recovery_error(fixed, brain, truth, family="rigid", initial=AffineTransform(near), iterations=(0, 10, 10))
    assert error["mean"] <= MEAN_BAR_MM and error["max"] <= MAX_BAR_MM, error


def test_initialisations_translate_centres(brain):
    shift = np.eye(4)
    shift[:3, 3] = [6.0, -4.0, 3.0]
    moved_grid = Volume(brain.data, shift @ brain.ijk_to_ras)
    for init in ("centres", "moments"):
        estimate = register_affine(brain, moved_grid, family="rigid", init=init, iterations=(0, 0, 0), device="cpu")
        assert np.allclose(estimate.matrix, shift, atol=1e-3), init


def test_progress_reaches_one_and_cancellation_raises(brain):
    fixed, _ = synthetic_affine_pair(brain, "rigid", np.random.default_rng(19))
    fractions: list[float] = []
    register_affine(fixed, brain, family="rigid", iterations=(5, 3, 2), device="cpu", progress=Progress(lambda f, m: fractions.append(f)))
    assert fractions[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    cancel = threading.Event()

    def cancel_after_a_few(fraction: float, message: str) -> None:
        if fraction > 0.1:
            cancel.set()

    with pytest.raises(Cancelled):
        register_affine(fixed, brain, family="rigid", device="cpu", progress=Progress(cancel_after_a_few, cancel))


def test_random_affine_stays_in_its_family_and_ranges():
    rng = np.random.default_rng(0)
    centre = np.array([10.0, -20.0, 5.0])
    rigid = random_affine("rigid", rng, centre)
    assert np.allclose(rigid[:3, :3] @ rigid[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.norm(rigid[:3, 3] + rigid[:3, :3] @ centre - centre) <= 15.0 * np.sqrt(3) + 1e-9
    similarity = random_affine("similarity", rng, centre)
    singular_values = np.linalg.svd(similarity[:3, :3], compute_uv=False)
    assert np.allclose(singular_values, singular_values[0]) and abs(singular_values[0] - 1.0) <= 0.1
    error = mapping_error_mm(rigid, rigid @ np.diag([1.0, 1.0, 1.0, 1.0]), np.zeros((4, 3)))
    assert error == {"mean": 0.0, "p95": 0.0, "max": 0.0}


def test_bad_options_raise():
    volume = Volume(torch.rand(1, 8, 8, 8), np.eye(4))
    with pytest.raises(ValueError, match="family"):
        register_affine(volume, volume, family="projective", device="cpu")
    with pytest.raises(ValueError, match="metric"):
        register_affine(volume, volume, metric="cc", device="cpu")
    with pytest.raises(ValueError, match="initialisation"):
        register_affine(volume, volume, init="principal", device="cpu")


def test_a_small_fixed_mask_does_not_derail_the_coarse_levels(shared_data):
    """Two patients' prostate MR at 0.8 mm, the fixed mask exactly the gland (about 37 voxels at the
    coarsest level): the levels with too few masked voxels are skipped, and the gland overlap improves."""
    from RegSegLib.evaluation import dice_per_label

    folder = shared_data / "prostate-mr-us"
    fixed, moving = (downsampled(read_volume(folder / "mr" / f"case00000{n}.nii.gz"), 0.8) for n in (0, 1))
    glands = [read_volume(folder / "mr_labels" / f"case00000{n}.nii.gz").channel(0) for n in (0, 1)]
    fixed_gland = resample(glands[0].to(dtype=torch.float32), fixed).data[0] > 0.5
    moving_gland = glands[1].to(dtype=torch.float32)

    def gland_dice(transform) -> float:
        warped = resample(moving_gland, fixed, transform).data[0] > 0.5
        return dice_per_label(fixed_gland.long(), warped.long(), [1])[1]

    mask = Volume(fixed_gland[None].float(), fixed.ijk_to_ras)
    estimate = register_affine(fixed, moving, fixed_mask=mask, device="cpu")
    before, after = gland_dice(None), gland_dice(estimate)
    assert 0.7 < before < 0.78
    assert after > before + 0.01  # without the level check the first round derails (0.59)
