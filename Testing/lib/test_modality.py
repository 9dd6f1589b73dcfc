"""``--metric auto`` on real images: which pairs are taken to share a modality, and why."""

from __future__ import annotations

import numpy as np
import pytest

from RegSegLib.io import read_volume
from RegSegLib.registration.modality import ALIGNED_SAME_MODALITY_NCC, SAME_MODALITY_NCC, choose_metric
from RegSegLib.testing.known_transforms import synthetic_affine_pair


@pytest.fixture(scope="module")
def prostate_t2(shared_data):
    return read_volume(shared_data / "prostate-t2-dwi" / "test_0000_t2_tse_tra_4.nii.gz")


def test_a_moved_copy_of_an_image_shares_its_modality_once_aligned(prostate_t2):
    # rotated and shifted too far for the centred test (benchmark suite 4's pairs fail with MIND)
    moved, _ = synthetic_affine_pair(prostate_t2, "affine", np.random.default_rng(0), max_rot_deg=15.0, max_shift_mm=15.0, max_scale=0.1)
    choice = choose_metric(moved, prostate_t2)
    assert choice.correlation < SAME_MODALITY_NCC
    assert choice.aligned_correlation is not None and choice.aligned_correlation > 0.9
    assert choice.same_modality and (choice.affine, choice.deformable) == ("ncc", "lncc")
    assert "after a quick rigid alignment" in choice.reason and "the same modality" in choice.reason


@pytest.mark.parametrize(("fixed_path", "moving_path"), [
    ("prostate-mr-us/us/case000000.nii.gz", "prostate-mr-us/mr/case000000.nii.gz"),
    ("prostate-t2-dwi/test_0000_t2_tse_tra_4.nii.gz", "prostate-t2-dwi/test_0000_ep2d_diff_tra_7.nii.gz"),
])  # fmt: skip
def test_two_modalities_stay_different_after_the_quick_alignment(shared_data, fixed_path, moving_path):
    choice = choose_metric(read_volume(shared_data / fixed_path), read_volume(shared_data / moving_path))
    assert choice.correlation < SAME_MODALITY_NCC
    assert choice.aligned_correlation is not None and choice.aligned_correlation < ALIGNED_SAME_MODALITY_NCC - 0.1
    assert not choice.same_modality and (choice.affine, choice.deformable) == ("mind", "mind")


def test_the_first_test_decides_a_well_correlated_pair_without_aligning(shared_data):
    brain = shared_data / "brain-mr"
    choice = choose_metric(read_volume(brain / "subject_a_t1.nii.gz"), read_volume(brain / "subject_b_t1.nii.gz"))
    assert choice.correlation > 0.9 and choice.aligned_correlation is None and choice.same_modality
