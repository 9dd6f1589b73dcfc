"""Evaluation metrics against analytic values: cubes, translations, linear fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from RegSegLib.evaluation import (
    dice_per_label,
    hd95_per_label,
    jacobian_statistics,
    json_ready,
    landmark_errors,
    mean_ignoring_nan,
)
from RegSegLib.evaluation.report import similarity_report
from RegSegLib.ops.pyramid import downsample
from RegSegLib.transforms import AffineTransform, CompositeTransform, DisplacementField
from RegSegLib.volume import Volume


def _cubes(shift: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    fixed = torch.zeros(30, 30, 30, dtype=torch.int64)
    warped = torch.zeros_like(fixed)
    fixed[5:15, 5:15, 5:15] = 1
    warped[5:15, 5:15, 5 + shift : 15 + shift] = 1
    fixed[20:26, 20:26, 20:26] = 4
    warped[20:26, 20:26, 20:26] = 4
    return fixed, warped


def test_dice_of_shifted_cubes_is_analytic():
    fixed, warped = _cubes(shift=2)
    dice = dice_per_label(fixed, warped)
    assert dice == {1: pytest.approx(2 * 800 / 2000), 4: pytest.approx(1.0)}
    assert dice_per_label(fixed, warped, [4]) == {4: pytest.approx(1.0)}
    assert dice_per_label(fixed[None], warped[None], [1])[1] == pytest.approx(0.8)


def test_dice_of_absent_label_is_nan_and_ignored_in_mean():
    fixed, warped = _cubes()
    dice = dice_per_label(fixed, warped, [1, 7])
    assert math.isnan(dice[7])
    assert mean_ignoring_nan(dice) == pytest.approx(0.8)
    assert json_ready(dice) == {"1": pytest.approx(0.8), "7": None}


def test_dice_of_disjoint_labels_is_zero():
    fixed, _ = _cubes()
    warped = torch.zeros_like(fixed)
    warped[0:3, 0:3, 0:3] = 1
    assert dice_per_label(fixed, warped, [1]) == {1: 0.0}


def test_hd95_of_shifted_cube_uses_spacing():
    fixed, warped = _cubes(shift=2)
    spacing_ijk = (1.5, 1.0, 2.0)
    hd = hd95_per_label(fixed, warped, spacing_ijk)
    assert hd[1] == pytest.approx(2 * 1.5)
    assert hd[4] == pytest.approx(0.0)
    shifted_along_k = torch.roll(fixed, shifts=3, dims=0)
    assert hd95_per_label(fixed, shifted_along_k, spacing_ijk, [1])[1] == pytest.approx(3 * 2.0)


def test_hd95_of_missing_label_is_nan():
    fixed, warped = _cubes()
    warped[warped == 4] = 0
    assert math.isnan(hd95_per_label(fixed, warped, (1, 1, 1), [4])[4])


def test_landmark_errors_of_a_known_translation():
    rng = np.random.default_rng(0)
    fixed = rng.uniform(-80, 80, size=(50, 3))
    moving = fixed + np.array([3.0, 0.0, 4.0])
    before = landmark_errors(fixed, moving, None)
    assert before["mean"] == pytest.approx(5.0)
    assert before["median"] == pytest.approx(5.0)
    assert before["p90"] == pytest.approx(5.0)
    assert before["max"] == pytest.approx(5.0)
    assert before["count"] == 50
    matrix = np.eye(4)
    matrix[:3, 3] = [3.0, 0.0, 4.0]
    after = landmark_errors(fixed, moving, AffineTransform(matrix))
    assert after["max"] == pytest.approx(0.0, abs=1e-9)
    half = np.eye(4)
    half[:3, 3] = [3.0, 0.0, 0.0]
    assert landmark_errors(fixed, moving, AffineTransform(half))["mean"] == pytest.approx(4.0)


def test_landmark_errors_through_a_composite_with_a_field():
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    grid[:3, 3] = -20.0
    field = torch.zeros(3, 21, 21, 21)
    field[2] = 1.5
    transform = CompositeTransform([AffineTransform(np.eye(4)), DisplacementField(field, grid)])
    fixed = np.array([[0.0, 0.0, 0.0], [5.0, -3.0, 2.0]])
    errors = landmark_errors(fixed, fixed + [0.0, 0.0, 1.5], transform)
    assert errors["max"] == pytest.approx(0.0, abs=1e-5)


def test_jacobian_statistics_of_linear_fields():
    grid = np.diag([2.0, 1.0, 3.0, 1.0])
    k, j, i = torch.meshgrid(torch.arange(8.0), torch.arange(9.0), torch.arange(10.0), indexing="ij")
    ras = torch.stack([2.0 * i, 1.0 * j, 3.0 * k])
    stretched = jacobian_statistics(DisplacementField(0.1 * ras, grid))
    assert stretched["min"] == pytest.approx(1.1**3, rel=1e-4)
    assert stretched["max"] == pytest.approx(1.1**3, rel=1e-4)
    assert stretched["folding_fraction"] == 0.0
    assert stretched["log_std"] == pytest.approx(0.0, abs=1e-5)
    folded = jacobian_statistics(DisplacementField(-2.0 * ras, grid))
    assert folded["folding_fraction"] == 1.0
    assert folded["min"] == pytest.approx(-1.0, rel=1e-4)


def test_jacobian_statistics_inside_a_mask():
    grid = np.eye(4)
    k, j, i = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), torch.arange(10.0), indexing="ij")
    field = torch.zeros(3, 10, 10, 10)
    field[0] = torch.where(i < 5, 0.0, 0.5 * (i - 5))
    mask = torch.zeros(10, 10, 10, dtype=torch.uint8)
    mask[:, :, 7:] = 1
    inside = jacobian_statistics(DisplacementField(field, grid), mask)
    assert inside["min"] == pytest.approx(1.5)
    assert inside["max"] == pytest.approx(1.5)
    whole = jacobian_statistics(DisplacementField(field, grid))
    assert whole["min"] == pytest.approx(1.0)
    assert whole["log_std"] > 0.1


def test_similarity_report_from_reduced_copies_matches_the_full_images():
    """A report on a coarse grid reads the registration's reduced copies when they are fine enough."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 1, 24, 24, 24, generator=generator, dtype=torch.float64)
    data = torch.nn.functional.interpolate(coarse, size=(132, 132, 132), mode="trilinear", align_corners=True)[0]
    fixed = Volume(data.float(), np.eye(4))
    moving = Volume(data.roll(6, dims=3).float(), np.eye(4))
    shift = np.eye(4)
    shift[0, 3] = 6.0
    transform = AffineTransform(shift)
    full = similarity_report(fixed, moving, transform, "ncc")
    assert full["after"] > full["before"] + 0.05
    reduced = (downsample(fixed, np.full(3, 1.2)), downsample(moving, np.full(3, 1.2)))
    again = similarity_report(fixed, moving, transform, "ncc", working_images=reduced)
    assert again["before"] == pytest.approx(full["before"], abs=0.01)
    assert again["after"] == pytest.approx(full["after"], abs=0.01)
    same = similarity_report(fixed, moving, transform, "ncc", working_images=(reduced[0], reduced[0]))
    assert same["before"] > 0.99  # the copies are what is measured
    too_coarse = (downsample(fixed, np.full(3, 3.0)), downsample(moving, np.full(3, 3.0)))
    assert similarity_report(fixed, moving, transform, "ncc", working_images=too_coarse) == full
