"""Dataset fingerprint and experiment plan: nnU-Net's rules give exact topologies for made-up datasets; the
fingerprint reads spacing, shape, labels and foreground intensities from files; bad overrides are refused."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from RegSegLib.errors import InputError
from RegSegLib.segmentation.pathfinders import Case
from RegSegLib.segmentation.plan import (
    STANDARD_NORMAL,
    ChannelNormalisation,
    IntensityStats,
    Plan,
    fingerprint_dataset,
    fingerprint_from_arrays,
    median_shape,
    network_topology,
    plan_experiment,
    target_spacing,
    transposition,
)
from RegSegLib.validation import SettingsError

ISOTROPIC = ((1, 1, 1),) * 6
COARSE_THEN_ISOTROPIC = ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
IN_PLANE_FIRST = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))


def _dataset(spacing, shape, cases: int = 10, labels=(1,)):
    return fingerprint_from_arrays([spacing] * cases, [shape] * cases, labels)


def test_anisotropic_dataset_pools_in_plane_first_with_flat_kernels():
    shapes = [(18, 300, 300), (20, 320, 320), (22, 340, 340), (19, 310, 330), (21, 330, 310)]
    fingerprint = fingerprint_from_arrays([(3.0, 0.5, 0.5)] * 5, shapes, [2, 1])
    plan = plan_experiment(fingerprint)
    assert plan.foreground_labels == (1, 2) and plan.num_classes == 3 and plan.num_channels == 1
    assert plan.spacing == (3.0, 0.5, 0.5)
    assert plan.transpose_forward == (0, 1, 2) and plan.transpose_backward == (0, 1, 2)
    assert plan.patch_size == (20, 320, 320)
    assert plan.n_stages == 7
    assert plan.strides == IN_PLANE_FIRST
    assert plan.kernel_sizes == COARSE_THEN_ISOTROPIC
    assert plan.features_per_stage == (32, 64, 128, 256, 320, 320, 320)
    assert plan.n_conv_per_stage == (2,) * 7 and plan.n_conv_per_stage_decoder == (2,) * 6
    assert plan.batch_size == 2


def test_isotropic_128_dataset_gives_six_stages():
    plan = plan_experiment(_dataset((1.0, 1.0, 1.0), (128, 128, 128)))
    assert plan.patch_size == (128, 128, 128) and plan.spacing == (1.0, 1.0, 1.0)
    assert plan.n_stages == 6
    assert plan.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert plan.kernel_sizes == ((3, 3, 3),) * 6
    assert plan.features_per_stage == (32, 64, 128, 256, 320, 320)
    assert plan.n_conv_per_stage == (2,) * 6 and plan.n_conv_per_stage_decoder == (2,) * 5


def test_network_width_is_the_only_topology_choice():
    plan = plan_experiment(_dataset((1.0, 1.0, 1.0), (128, 128, 128)), base_features=16, max_features=128)
    assert plan.features_per_stage == (16, 32, 64, 128, 128, 128)
    assert plan.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    with pytest.raises(SettingsError, match="max_features 8 is below base_features 16"):
        plan_experiment(_dataset((1.0, 1.0, 1.0), (128, 128, 128)), base_features=16, max_features=8)


@pytest.mark.parametrize(
    ("shape", "patch", "strides"),
    [
        ((64, 64, 60), (64, 64, 64), ((1, 1, 1),) + ((2, 2, 2),) * 4),  # prostate MR at 0.4 mm
        ((44, 59, 41), (48, 56, 40), ((1, 1, 1),) + ((2, 2, 2),) * 3),  # prostate ultrasound at 0.4 mm
    ],
)
def test_small_isotropic_datasets(shape, patch, strides):
    plan = plan_experiment(_dataset((0.4, 0.4, 0.4), shape))
    assert plan.patch_size == patch and plan.strides == strides
    assert plan.kernel_sizes == ((3, 3, 3),) * len(strides)
    assert plan.features_per_stage == (32, 64, 128, 256, 320)[: len(strides)]


def test_coarse_last_axis_is_transposed_first_and_back():
    plan = plan_experiment(_dataset((0.5, 0.5, 3.0), (320, 320, 20)))
    assert plan.spacing == (0.5, 0.5, 3.0)
    assert plan.transpose_forward == (2, 0, 1) and plan.transpose_backward == (1, 2, 0)
    assert plan.network_spacing == (3.0, 0.5, 0.5)
    assert plan.patch_size == (20, 320, 320)
    assert plan.strides == IN_PLANE_FIRST and plan.kernel_sizes == COARSE_THEN_ISOTROPIC
    data = np.arange(2 * 5 * 6 * 7).reshape(2, 5, 6, 7)  # [C, K, J, I]
    network = data.transpose(0, *(1 + axis for axis in plan.transpose_forward))
    assert network.shape == (2, 7, 5, 6)
    assert np.array_equal(network.transpose(0, *(1 + axis for axis in plan.transpose_backward)), data)


@pytest.mark.parametrize(
    ("spacing", "forward", "backward"),
    [
        ((1.0, 2.0, 3.0), (2, 0, 1), (1, 2, 0)),
        ((1.0, 3.0, 3.0), (1, 0, 2), (1, 0, 2)),
        ((3.0, 3.0, 1.0), (0, 1, 2), (0, 1, 2)),
        ((0.5, 0.5000001, 0.5), (0, 1, 2), (0, 1, 2)),
    ],
)
def test_transposition_puts_the_first_coarsest_axis_first(spacing, forward, backward):
    assert transposition(spacing) == (forward, backward)


def test_anisotropic_axis_takes_the_10th_percentile_spacing():
    spacings = [(2.5, 0.5, 0.5), (3.0, 0.5, 0.5), (3.0, 0.5, 0.5), (3.5, 0.5, 0.5), (4.0, 0.5, 0.5)]
    fingerprint = fingerprint_from_arrays(spacings, [(20, 320, 320)] * 5, [1])
    assert target_spacing(fingerprint) == pytest.approx((2.7, 0.5, 0.5))
    assert median_shape(fingerprint, (2.7, 0.5, 0.5)) == (22, 320, 320)


def test_anisotropic_axis_spacing_is_not_below_the_other_axes():
    spacings = [(0.2, 1.0, 1.0)] * 2 + [(4.0, 1.0, 1.0)] * 3
    shapes = [(400, 200, 200)] * 2 + [(20, 200, 200)] * 3
    assert target_spacing(fingerprint_from_arrays(spacings, shapes, [1])) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("spacings", "shapes"),
    [
        ([(2.9, 1.0, 1.0)] * 3 + [(2.0, 1.0, 1.0)] * 2, [(20, 200, 200)] * 5),  # under 3x the other spacings
        ([(3.5, 1.0, 1.0)] * 3 + [(1.0, 1.0, 1.0)] * 2, [(100, 200, 200)] * 5),  # many voxels along the axis
    ],
)
def test_median_spacing_without_anisotropy(spacings, shapes):
    median = float(np.median([spacing[0] for spacing in spacings]))
    assert target_spacing(fingerprint_from_arrays(spacings, shapes, [1])) == (median, 1.0, 1.0)


def test_patch_size_override_moves_to_the_closest_valid_size():
    fingerprint = _dataset((1.0, 1.0, 1.0), (128, 128, 128))
    plan = plan_experiment(fingerprint, patch_size=(100, 100, 100))
    assert plan.patch_size == (96, 96, 96)
    assert plan.strides == ((1, 1, 1),) + ((2, 2, 2),) * 4
    assert plan_experiment(fingerprint, patch_size=plan.patch_size) == plan
    grown = plan_experiment(fingerprint, patch_size=[120, 120, 120])
    assert grown.patch_size == (128, 128, 128) and grown.n_stages == 6


@pytest.mark.parametrize(
    ("patch", "spacing", "strides", "kernels", "valid"),
    [
        (
            (32, 128, 128),
            (2.0, 0.5, 0.5),
            ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)),
            ((1, 3, 3),) + ((3, 3, 3),) * 5,
            (32, 128, 128),
        ),
        ((4, 200, 200), (1.0, 1.0, 1.0), ((1, 1, 1),) + ((1, 2, 2),) * 5, ((3, 3, 3),) * 6, (4, 192, 192)),
        ((15, 15, 15), (1.0, 1.0, 1.0), ((1, 1, 1), (2, 2, 2), (2, 2, 2)), ((3, 3, 3),) * 3, (16, 16, 16)),
        (
            (60, 60, 60),
            (5.0, 1.0, 1.0),
            ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1), (2, 1, 1)),
            ((1, 3, 3), (1, 3, 3)) + ((3, 3, 3),) * 5,
            (64, 64, 64),
        ),
        ((300, 300, 300), (1.0, 1.0, 1.0), ((1, 1, 1),) + ((2, 2, 2),) * 6, ((3, 3, 3),) * 7, (320, 320, 320)),
    ],
)
def test_network_topology(patch, spacing, strides, kernels, valid):
    assert network_topology(patch, spacing) == (strides, kernels, valid)


def test_median_shape_is_capped_along_the_longest_axis_in_mm_first():
    plan = plan_experiment(_dataset((1.0, 0.5, 0.5), (300, 300, 300)))
    assert plan.patch_size == (80, 160, 160)
    assert plan.strides == ((1, 1, 1),) + ((2, 2, 2),) * 4 + ((1, 2, 2),)
    small = plan_experiment(_dataset((1.0, 1.0, 1.0), (128, 128, 128)), max_voxels_per_batch=2 * 32**3)
    assert small.patch_size == (32, 32, 32) and small.n_stages == 4


def test_spacing_override_resamples_the_median_shape():
    plan = plan_experiment(_dataset((1.0, 1.0, 1.0), (128, 128, 128)), spacing=[2, 2, 2])
    assert plan.spacing == (2.0, 2.0, 2.0) and plan.patch_size == (64, 64, 64) and plan.n_stages == 5


@pytest.mark.parametrize(("cases", "batch"), [(10, 2), (100, 5), (1000, 16)])
def test_batch_size_fills_the_budget_up_to_5_percent_of_the_dataset(cases, batch):
    assert plan_experiment(_dataset((1.0, 1.0, 1.0), (64, 64, 64), cases)).batch_size == batch


def test_batch_size_override():
    assert plan_experiment(_dataset((1.0, 1.0, 1.0), (64, 64, 64)), batch_size=7).batch_size == 7


def test_transposes_are_overridden_together_and_must_be_inverse():
    fingerprint = _dataset((1.0, 1.0, 1.0), (32, 64, 128))
    plan = plan_experiment(fingerprint, transpose_forward=[2, 0, 1], transpose_backward=[1, 2, 0])
    assert plan.transpose_forward == (2, 0, 1) and plan.transpose_backward == (1, 2, 0)
    assert plan.patch_size == (128, 32, 64)
    with pytest.raises(SettingsError, match="can only be overridden together"):
        plan_experiment(fingerprint, transpose_forward=(2, 0, 1))
    with pytest.raises(SettingsError, match="can only be overridden together"):
        plan_experiment(fingerprint, transpose_backward=(1, 2, 0))
    inverse = r"is not the inverse of transpose_forward \[2, 0, 1\] \(that is \[1, 2, 0\]\)"
    with pytest.raises(SettingsError, match=inverse):
        plan_experiment(fingerprint, transpose_forward=(2, 0, 1), transpose_backward=(2, 0, 1))
    with pytest.raises(SettingsError, match="must be a permutation of 0, 1, 2"):
        plan_experiment(fingerprint, transpose_forward=(0, 0, 1), transpose_backward=(0, 1, 2))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patch_size": (100, 100)}, "patch_size must have 3 values"),
        ({"patch_size": (100, 0, 100)}, "patch_size must be a positive whole number, got 0"),
        ({"patch_size": (100, 64.5, 100)}, "patch_size must be a positive whole number, got 64.5"),
        ({"patch_size": "128"}, "patch_size must be a list of values"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing must be a positive number"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "spacing must be a positive number"),
        ({"spacing": (1.0, 1.0)}, "spacing must have 3 values"),
        ({"batch_size": 0}, "batch_size must be a positive whole number"),
        ({"modalities": ["CT", "MR"]}, "modalities must name each of the 1 channel"),
        ({"max_voxels_per_batch": -1}, "max_voxels_per_batch must be a positive whole number"),
    ],
)
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(SettingsError, match=message):
        plan_experiment(_dataset((1.0, 1.0, 1.0), (64, 64, 64)), **overrides)


def test_normalisation_per_channel():
    ct = IntensityStats(40.0, 200.0, -1000.0, 1500.0)
    fingerprint = fingerprint_from_arrays([(1, 1, 1)] * 3, [(64, 64, 64)] * 3, [1], 2, [ct, STANDARD_NORMAL])
    plan = plan_experiment(fingerprint, modalities=["ct", "T2"])
    assert plan.normalisation == (
        ChannelNormalisation("ct", 40.0, 200.0, -1000.0, 1500.0),
        ChannelNormalisation("zscore", 0.0, 1.0, -2.5758293035489004, 2.5758293035489004),
    )
    assert [n.scheme for n in plan_experiment(fingerprint).normalisation] == ["zscore", "zscore"]


def test_plan_round_trips_through_json():
    plan = plan_experiment(_dataset((0.5, 0.5, 3.0), (320, 320, 20), labels=(1, 3)), modalities=["CT"])
    stored = json.loads(json.dumps(plan.as_dict()))
    assert stored["strides"][1] == [1, 2, 2] and stored["normalisation"][0]["scheme"] == "ct"
    assert list(stored) == [
        "foreground_labels", "patch_size", "spacing", "batch_size", "transpose_forward", "transpose_backward",
        "num_channels", "num_classes", "n_stages", "n_conv_per_stage", "n_conv_per_stage_decoder",
        "features_per_stage", "strides", "kernel_sizes", "normalisation",
    ]
    assert Plan.from_dict(stored) == plan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 2}, r"num_classes must be len\(foreground_labels\) \+ 1 = 3"),
        ({"patch_size": [20, 320, 300]}, "not divisible by the product of the strides"),
        ({"strides": [[1, 1, 1]]}, "strides must have one triple per stage"),
        ({"kernel_sizes": [[1, 3, 3]] * 6 + [[2, 2, 2]]}, "kernel_sizes must be odd"),
        ({"foreground_labels": [3, 1]}, "foreground_labels must be distinct nonzero integers"),
        ({"transpose_backward": [2, 0, 1]}, "is not the inverse"),
        ({"normalisation": []}, r"0 normalisation\(s\) for 1 channel"),
        ({"normalisation": [{"scheme": "ct"}]}, "a normalisation needs exactly the keys"),
        ({"normalisation": [{"scheme": "ct", "mean": 0.0, "std": 0.0, "low": 0.0, "high": 1.0}]}, "CT channel"),
        (
            {"normalisation": [{"scheme": "minmax", "mean": 0.0, "std": 1.0, "low": 0.0, "high": 1.0}]},
            "unknown normalisation 'minmax'; choose one of zscore, ct",
        ),
        ({"unknown": 1}, r"unknown \['unknown'\]"),
    ],
)
def test_inconsistent_stored_plans_are_refused(change, message):
    stored = plan_experiment(_dataset((0.5, 0.5, 3.0), (320, 320, 20), labels=(1, 3))).as_dict()
    stored.update(change)
    with pytest.raises(SettingsError, match=message):
        Plan.from_dict(stored)
    del stored["spacing"]
    with pytest.raises(SettingsError, match=r"missing \['spacing'\]"):
        Plan.from_dict(stored)


def test_made_up_fingerprints_are_checked():
    with pytest.raises(SettingsError, match="2 spacings for 1 shapes"):
        fingerprint_from_arrays([(1, 1, 1)] * 2, [(8, 8, 8)], [1])
    with pytest.raises(SettingsError, match="needs at least one case"):
        fingerprint_from_arrays([], [], [1])
    with pytest.raises(SettingsError, match="foreground labels must be distinct nonzero integers"):
        fingerprint_from_arrays([(1, 1, 1)], [(8, 8, 8)], [0, 1])
    with pytest.raises(SettingsError, match=r"1 intensity statistics for 2 channel\(s\)"):
        fingerprint_from_arrays([(1, 1, 1)], [(8, 8, 8)], [1], 2, [STANDARD_NORMAL])


AFFINE = np.diag([0.8, 0.9, 2.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Saves ``data`` ``[I, J, K(, C)]`` (nibabel's order) as NIfTI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _case(root: Path, name: str, label: int, value: float, values: np.ndarray | None = None) -> Case:
    """A 2-channel case on a 6 x 5 x 4 (I, J, K) grid with 8 foreground voxels of ``label``."""
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = label
    first = np.where(labels > 0, value, -50.0).astype(np.float32)
    second = np.zeros((6, 5, 4), dtype=np.float32)
    if values is not None:
        second[labels > 0] = values
    return Case(
        name,
        [_save(root / f"{name}_0000.nii.gz", first), _save(root / f"{name}_0001.nii.gz", second)],
        _save(root / f"{name}.nii.gz", labels),
    )


def test_fingerprint_reads_spacing_shape_labels_and_foreground_intensities(tmp_path):
    cases = [_case(tmp_path, "a", 1, 10.0, np.arange(1.0, 9.0)), _case(tmp_path, "b", 3, 20.0)]
    fingerprint = fingerprint_dataset(cases)
    assert fingerprint.foreground_labels == (1, 3) and fingerprint.num_channels == 2
    first = fingerprint.cases[0]
    assert first.name == "a" and first.shape == (4, 5, 6)
    assert first.spacing == pytest.approx((2.0, 0.9, 0.8))
    assert first.intensity[0] == IntensityStats(10.0, 0.0, 10.0, 10.0)
    assert first.intensity[1] == pytest.approx(IntensityStats(4.5, np.sqrt(5.25), 1.035, 7.965))
    assert fingerprint.intensity[0] == IntensityStats(15.0, 5.0, 10.0, 20.0)
    assert fingerprint_dataset(cases) == fingerprint
    plan = plan_experiment(fingerprint)
    assert plan.spacing == pytest.approx((2.0, 0.9, 0.8)) and plan.foreground_labels == (1, 3)
    assert plan.num_channels == 2 and plan.num_classes == 3


def test_fingerprint_refuses_bad_cases(tmp_path):
    good = _case(tmp_path, "a", 1, 10.0)
    with pytest.raises(InputError, match="no cases to fingerprint"):
        fingerprint_dataset([])
    with pytest.raises(InputError, match="case 'a' has no label map") as error:
        fingerprint_dataset([Case("a", good.images, None)])
    assert error.value.path == str(good.images[0])
    shifted = _save(tmp_path / "shifted.nii.gz", np.ones((6, 5, 4), np.uint8), AFFINE + _shift())
    with pytest.raises(InputError, match="label map geometry") as error:
        fingerprint_dataset([Case("a", good.images, shifted)])
    assert error.value.path == str(shifted)
    smaller = _save(tmp_path / "smaller.nii.gz", np.ones((6, 5, 3), np.uint8))
    with pytest.raises(InputError, match=r"label map grid \(6, 5, 3\) \(I, J, K\) differs") as error:
        fingerprint_dataset([Case("a", good.images, smaller)])
    assert error.value.path == str(smaller)
    four_d = _save(tmp_path / "four_d.nii.gz", np.ones((6, 5, 4, 2), np.uint8))
    with pytest.raises(InputError, match="has 2 channels") as error:
        fingerprint_dataset([Case("a", good.images, four_d)])
    assert error.value.path == str(four_d)
    other_grid = _save(tmp_path / "other_0001.nii.gz", np.ones((6, 5, 4), np.float32), AFFINE + _shift())
    with pytest.raises(InputError, match="channel geometry") as error:
        fingerprint_dataset([Case("a", [good.images[0], other_grid], good.label)])
    assert error.value.path == str(other_grid)
    with pytest.raises(InputError, match=r"case 'b' has 1 channel\(s\); case 'a' has 2"):
        fingerprint_dataset([good, Case("b", good.images[:1], good.label)])
    empty = _save(tmp_path / "empty.nii.gz", np.zeros((6, 5, 4), np.uint8))
    with pytest.raises(InputError, match="no label map holds a foreground voxel") as error:
        fingerprint_dataset([Case("a", good.images, empty)])
    assert error.value.path == str(tmp_path)


def _shift() -> np.ndarray:
    """A 4x4 matrix that moves an affine's origin by 5 mm along R."""
    shift = np.zeros((4, 4))
    shift[0, 3] = 5.0
    return shift
