"""Analytic tests of the one geometry convention (DESIGN.md section 2).

A transform maps fixed points to moving points, ``warped(x) = moving(T(x))``. So a transform that
translates by ``+t`` makes the content of the warped image move by ``-t``; a rotation ``R`` about a
centre ``c`` puts the moving content found at ``p`` at ``c + R^T (p - c)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from geometry_cases import GEOMETRY_KINDS, make_ijk_to_ras, rotation_about
from RegSegLib import geometry
from RegSegLib.transforms import affine_params
from RegSegLib.transforms import AffineTransform, resample

SHAPE = (18, 20, 22)
SPACING = (1.5, 1.25, 2.0)


def centroid(volume) -> tuple[np.ndarray, np.ndarray]:
    """Intensity-weighted centroid of a single-channel volume: ``(ras [3], ijk [3])``."""
    weights = volume.data[0].double().clamp(min=0).numpy()
    k, j, i = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    total = weights.sum()
    ijk = np.array([(weights * i).sum(), (weights * j).sum(), (weights * k).sum()]) / total
    return geometry.transform_points(volume.ijk_to_ras, ijk), ijk


def translation(vector) -> AffineTransform:
    matrix = np.eye(4)
    matrix[:3, 3] = vector
    return AffineTransform(matrix)


@pytest.mark.parametrize("kind", GEOMETRY_KINDS)
@pytest.mark.parametrize("axis", [0, 1, 2], ids=["R", "A", "S"])
def test_translation_moves_content_opposite_to_t(make_volume, kind, axis):
    ijk_to_ras = make_ijk_to_ras(kind, SPACING, origin=(10.0, -20.0, 30.0))
    moving = make_volume(SHAPE, ijk_to_ras)
    blob_ras, blob_ijk = centroid(moving)
    shift = np.zeros(3)
    shift[axis] = 4.0
    warped = resample(moving, moving, translation(shift))
    warped_ras, warped_ijk = centroid(warped)
    np.testing.assert_allclose(warped_ras - blob_ras, -shift, atol=0.05)
    expected_ijk_step = np.linalg.solve(ijk_to_ras[:3, :3], -shift)
    np.testing.assert_allclose(warped_ijk - blob_ijk, expected_ijk_step, atol=0.05)


@pytest.mark.parametrize(
    "kind, axis, index_axis, sign",
    [
        ("identity", 0, 0, -1),  # content moves toward L = lower i
        ("identity", 1, 1, -1),  # toward P = lower j
        ("identity", 2, 2, -1),  # toward I = lower k
        ("lps", 0, 0, +1),  # i points to L: moving toward L raises i
        ("lps", 1, 1, +1),  # j points to P
        ("lps", 2, 2, -1),
        ("flipped", 0, 1, -1),  # j points to R
        ("flipped", 1, 0, -1),  # i points to A
        ("flipped", 2, 2, +1),  # k points to I
    ],
)
def test_translation_voxel_index_direction(make_volume, kind, axis, index_axis, sign):
    moving = make_volume((24, 24, 24), make_ijk_to_ras(kind, (1.0, 1.0, 1.0)), sigma_mm=2.0)
    _, blob_ijk = centroid(moving)
    shift = np.zeros(3)
    shift[axis] = 3.0
    _, warped_ijk = centroid(resample(moving, moving, translation(shift)))
    expected = np.zeros(3)
    expected[index_axis] = 3.0 * sign
    np.testing.assert_allclose(warped_ijk - blob_ijk, expected, atol=0.05)


@pytest.mark.parametrize("kind", GEOMETRY_KINDS)
def test_rotation_about_s_by_90_degrees(make_volume, kind):
    ijk_to_ras = make_ijk_to_ras(kind, (1.0, 1.0, 1.0), origin=(-5.0, 7.0, 3.0))
    centre = geometry.grid_centre_ras(ijk_to_ras, (24, 24, 24))
    blob = centre + np.array([6.0, 0.0, 0.0])
    moving = make_volume((24, 24, 24), ijk_to_ras, blob_ras=blob, sigma_mm=2.0)
    rotation = np.eye(4)
    rotation[:3, :3] = rotation_about("z", 90.0)
    matrix = np.eye(4)
    matrix[:3, 3] = centre
    back = np.eye(4)
    back[:3, 3] = -centre
    transform = AffineTransform(matrix @ rotation @ back)
    warped_ras, _ = centroid(resample(moving, moving, transform))
    # T(x) = c + R (x - c) with R (x, y) = (-y, x): the moving blob at c + 6 mm R is read where
    # T(x) reaches it, x = c + R^T (6, 0, 0) = c - 6 mm A.
    np.testing.assert_allclose(warped_ras, centre + np.array([0.0, -6.0, 0.0]), atol=0.05)


@pytest.mark.parametrize("kind", GEOMETRY_KINDS)
def test_itk_geometry_round_trip_and_agrees_with_sitk(kind):
    ijk_to_ras = make_ijk_to_ras(kind, SPACING, origin=(12.0, -3.5, 40.0))
    origin, spacing, direction = geometry.itk_geometry_from_ijk_to_ras(ijk_to_ras)
    np.testing.assert_allclose(geometry.ijk_to_ras_from_itk(origin, spacing, direction), ijk_to_ras, atol=1e-12)
    np.testing.assert_allclose(spacing, SPACING, atol=1e-12)
    image = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    for index in [(0, 0, 0), (3, 0, 0), (0, 4, 0), (0, 0, 5), (2, 3, 4)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = geometry.transform_points(ijk_to_ras, np.array(index, dtype=np.float64))
        np.testing.assert_allclose(geometry.lps_to_ras_points(lps), ras, atol=1e-9)


def test_lps_matrix_conversion_is_an_involution():
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_about("x", 10) @ rotation_about("z", 25)
    matrix[:3, 3] = [1.0, 2.0, 3.0]
    lps = geometry.ras_to_lps_matrix(matrix)
    np.testing.assert_allclose(lps[:3, 3], [-1.0, -2.0, 3.0])
    np.testing.assert_allclose(geometry.lps_to_ras_matrix(lps), matrix)
    point = np.array([4.0, -5.0, 6.0])
    np.testing.assert_allclose(
        geometry.lps_to_ras_points(geometry.transform_points(lps, geometry.ras_to_lps_points(point))),
        geometry.transform_points(matrix, point),
    )


@pytest.mark.parametrize("kind", GEOMETRY_KINDS)
def test_ras_to_normalized_maps_voxel_centres_to_minus_one_one(kind):
    shape = (5, 6, 7)
    ijk_to_ras = make_ijk_to_ras(kind, SPACING, origin=(3.0, 2.0, 1.0))
    to_normalized = geometry.ras_to_normalized(ijk_to_ras, shape)
    first = geometry.transform_points(ijk_to_ras, np.zeros(3))
    last = geometry.transform_points(ijk_to_ras, np.array([6.0, 5.0, 4.0]))
    np.testing.assert_allclose(geometry.transform_points(to_normalized, first), [-1.0, -1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(geometry.transform_points(to_normalized, last), [1.0, 1.0, 1.0], atol=1e-12)
    # grid_sample with align_corners=True reads exactly the voxel whose centre the coordinate names.
    values = torch.arange(np.prod(shape), dtype=torch.float32).reshape(1, 1, *shape)
    ijk = np.array([[6.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 4.0], [3.0, 2.0, 1.0]])
    grid = geometry.transform_points(to_normalized, geometry.transform_points(ijk_to_ras, ijk))
    sampled = F.grid_sample(
        values,
        torch.as_tensor(grid, dtype=torch.float32).reshape(1, 1, 1, -1, 3),
        align_corners=geometry.ALIGN_CORNERS,
    ).reshape(-1)
    expected = [values[0, 0, int(k), int(j), int(i)].item() for i, j, k in ijk]
    np.testing.assert_allclose(sampled.numpy(), expected, atol=1e-3)


FAMILY_PARAMETERS = {
    "rigid": [0.1, -0.2, 0.3, 4.0, -5.0, 6.0],
    "similarity": [0.1, -0.2, 0.3, 4.0, -5.0, 6.0, 0.15],
    "anisotropic": [0.1, -0.2, 0.3, 4.0, -5.0, 6.0, 0.1, -0.1, 0.2],
    "affine": [0.1, -0.2, 0.3, 4.0, -5.0, 6.0, 0.1, -0.1, 0.2, 0.05, -0.04, 0.03],
}


@pytest.mark.parametrize("family", list(FAMILY_PARAMETERS))
def test_affine_family_parameters_round_trip(family):
    params = torch.tensor([FAMILY_PARAMETERS[family]], dtype=torch.float64)
    centre = [10.0, -20.0, 5.0]
    matrix = affine_params.parameters_to_matrix(params, family, centre)[0].numpy()
    recovered = affine_params.matrix_to_parameters(matrix, family, centre)
    np.testing.assert_allclose(recovered, params[0].numpy(), atol=1e-9)
    assert len(recovered) == affine_params.num_parameters(family)


def test_affine_composition_order_t_r_s_h_about_centre():
    rx, ry, rz, tx, ty, tz, sx, sy, sz, hxy, hxz, hyz = FAMILY_PARAMETERS["affine"]
    centre = np.array([10.0, -20.0, 5.0])
    rotation = rotation_about("z", np.rad2deg(rz)) @ rotation_about("y", np.rad2deg(ry)) @ rotation_about(
        "x", np.rad2deg(rx)
    )
    scale = np.diag([1 + sx, 1 + sy, 1 + sz])
    shear = np.array([[1.0, hxy, hxz], [0.0, 1.0, hyz], [0.0, 0.0, 1.0]])
    params = torch.tensor([FAMILY_PARAMETERS["affine"]], dtype=torch.float64)
    matrix = affine_params.parameters_to_matrix(params, "affine", centre)[0].numpy()
    points = np.array([[0.0, 0.0, 0.0], [12.0, -3.0, 7.0], [-40.0, 25.0, 60.0]])
    expected = centre + np.array([tx, ty, tz]) + (points - centre) @ (rotation @ scale @ shear).T
    np.testing.assert_allclose(geometry.transform_points(matrix, points), expected, atol=1e-9)
    # the centre moves only by the translation
    np.testing.assert_allclose(geometry.transform_points(matrix, centre), centre + [tx, ty, tz], atol=1e-9)


def test_rotation_parameter_is_right_handed_about_s():
    params = torch.tensor([[0.0, 0.0, np.pi / 2, 0.0, 0.0, 0.0]], dtype=torch.float64)
    matrix = affine_params.parameters_to_matrix(params, "rigid")[0].numpy()
    rotated = geometry.transform_points(matrix, np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(rotated, [0.0, 1.0, 0.0], atol=1e-12)


def test_axis_angle_rotation_is_right_handed_in_ras():
    """A quarter turn about S takes R to A and A to L (right-handed RAS); any axis length; orthonormal."""
    quarter = geometry.axis_angle_rotation(np.array([0.0, 0.0, 2.0]), np.pi / 2)
    assert np.allclose(quarter @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]) and np.allclose(quarter @ [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0])
    tilted = geometry.axis_angle_rotation(np.array([1.0, -2.0, 0.5]), 2.5)
    assert np.allclose(tilted @ tilted.T, np.eye(3)) and np.isclose(np.linalg.det(tilted), 1.0)
    assert np.allclose(tilted @ [1.0, -2.0, 0.5], [1.0, -2.0, 0.5])
    assert np.isclose(np.degrees(np.arccos((np.trace(tilted) - 1) / 2)), np.degrees(2.5))
    for name, axis in (("x", [1.0, 0, 0]), ("y", [0, 1.0, 0]), ("z", [0, 0, 1.0])):
        assert np.allclose(geometry.axis_angle_rotation(np.array(axis), np.deg2rad(37.0)), rotation_about(name, 37.0))
