"""Transforms in RAS mm: composition order, inverses, velocity integration, Jacobians, point mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geometry_cases import make_ijk_to_ras, rotation_about
from RegSegLib import geometry
from RegSegLib.transforms import (
    AffineTransform,
    CompositeTransform,
    DisplacementField,
    compose,
    field_from_transform,
    integrate_velocity,
    jacobian_determinant,
    resample,
)
from RegSegLib.geometry import points_ras as grid_points_ras
from RegSegLib.volume import Volume


def affine(rotation_axis: str, degrees: float, shift, scale=(1.0, 1.0, 1.0)) -> AffineTransform:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_about(rotation_axis, degrees) @ np.diag(scale)
    matrix[:3, 3] = shift
    return AffineTransform(matrix)


def linear_field(linear: np.ndarray, centre: np.ndarray, ijk_to_ras: np.ndarray, shape) -> DisplacementField:
    """``u(x) = (linear - I)(x - centre)`` sampled on a grid, ``[3, K, J, I]``."""
    points = grid_points_ras(ijk_to_ras, shape).double().numpy()
    displacement = (points - centre) @ (linear - np.eye(3)).T
    return DisplacementField(torch.as_tensor(np.moveaxis(displacement, -1, 0), dtype=torch.float32), ijk_to_ras)


POINTS = torch.tensor([[0.0, 0.0, 0.0], [10.0, -5.0, 3.0], [-7.5, 20.0, -12.0]], dtype=torch.float64)


def test_composition_is_itk_order_last_applied_first():
    a = affine("z", 30.0, [5.0, 0.0, 0.0])
    b = affine("x", -20.0, [0.0, 3.0, -2.0], scale=(1.1, 0.9, 1.0))
    expected = a.transform_points(b.transform_points(POINTS))
    torch.testing.assert_close(CompositeTransform([a, b]).transform_points(POINTS), expected)
    combined = compose(a, b)
    assert isinstance(combined, AffineTransform)
    np.testing.assert_allclose(combined.matrix, a.matrix @ b.matrix)
    assert not np.allclose(compose(b, a).matrix, combined.matrix)


def test_nested_composites_flatten_in_order():
    a, b, c = (affine("z", 10.0 * n, [n, 0.0, 0.0]) for n in (1.0, 2.0, 3.0))
    nested = CompositeTransform([a, CompositeTransform([b, c])])
    assert nested.flattened() == [a, b, c]
    torch.testing.assert_close(
        nested.transform_points(POINTS), a.transform_points(b.transform_points(c.transform_points(POINTS)))
    )


def test_affine_inverse():
    transform = affine("y", 25.0, [1.0, -2.0, 3.0], scale=(1.2, 0.8, 1.05))
    torch.testing.assert_close(transform.inverse().transform_points(transform.transform_points(POINTS)), POINTS)
    np.testing.assert_allclose(compose(transform, transform.inverse()).matrix, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("kind", ["identity", "oblique"])
def test_integrate_constant_velocity_is_translation(kind):
    ijk_to_ras = make_ijk_to_ras(kind, (2.0, 1.5, 2.5), origin=(3.0, 4.0, 5.0))
    shift = torch.tensor([2.0, -1.5, 3.0])
    velocity = DisplacementField(shift.reshape(3, 1, 1, 1).expand(3, 10, 12, 14).clone(), ijk_to_ras)
    result = integrate_velocity(velocity, steps=6)
    torch.testing.assert_close(result.field, velocity.field, atol=1e-4, rtol=0)


def test_integrate_rotation_velocity_is_rotation():
    ijk_to_ras = make_ijk_to_ras("oblique", (1.5, 1.5, 1.5))
    shape = (24, 24, 24)
    centre = geometry.grid_centre_ras(ijk_to_ras, shape)
    angle = np.deg2rad(8.0)
    generator = np.array([[0.0, -angle, 0.0], [angle, 0.0, 0.0], [0.0, 0.0, 0.0]])  # about S
    points = grid_points_ras(ijk_to_ras, shape).double().numpy()
    velocity = DisplacementField(
        torch.as_tensor(np.moveaxis((points - centre) @ generator.T, -1, 0), dtype=torch.float32), ijk_to_ras
    )
    result = integrate_velocity(velocity, steps=7).field.double().numpy()
    expected = np.moveaxis((points - centre) @ (rotation_about("z", 8.0) - np.eye(3)).T, -1, 0)
    interior = (slice(None), slice(6, -6), slice(6, -6), slice(6, -6))
    error = np.abs(result[interior] - expected[interior]).max()
    assert error < 0.02 * np.abs(expected[interior]).max()
    # the linear (first-order) field is measurably worse: integration adds the rotation's curvature
    linear_error = np.abs(velocity.field.double().numpy()[interior] - expected[interior]).max()
    assert error < 0.2 * linear_error


def test_jacobian_determinant_of_linear_field_is_det():
    ijk_to_ras = make_ijk_to_ras("flipped", (1.0, 2.0, 1.5), origin=(1.0, 2.0, 3.0))
    linear = np.array([[1.1, 0.05, 0.0], [-0.02, 0.95, 0.1], [0.03, 0.0, 1.2]])
    field = linear_field(linear, np.zeros(3), ijk_to_ras, (8, 9, 10))
    determinant = jacobian_determinant(field)
    assert determinant.shape == (8, 9, 10)
    expected = torch.full_like(determinant, float(np.linalg.det(linear)))
    torch.testing.assert_close(determinant, expected, atol=1e-4, rtol=0)


def test_jacobian_determinant_of_scaling_on_oblique_grid():
    ijk_to_ras = make_ijk_to_ras("oblique", (1.2, 0.9, 2.0), origin=(-10.0, 5.0, 0.0))
    scale = np.diag([1.3, 0.8, 1.1])
    field = linear_field(scale, np.array([2.0, -3.0, 4.0]), ijk_to_ras, (7, 8, 9))
    determinant = jacobian_determinant(field)
    torch.testing.assert_close(determinant, torch.full_like(determinant, 1.3 * 0.8 * 1.1), atol=1e-4, rtol=0)
    folding = linear_field(np.diag([-0.5, 1.0, 1.0]), np.zeros(3), ijk_to_ras, (7, 8, 9))
    assert bool((jacobian_determinant(folding) < 0).all())


def test_points_through_displacement_field_and_composite():
    ijk_to_ras = make_ijk_to_ras("oblique", (1.0, 1.25, 1.5), origin=(-8.0, -9.0, -10.0))
    shape = (16, 16, 16)
    linear = np.array([[1.05, 0.02, 0.0], [0.0, 0.97, 0.03], [0.01, 0.0, 1.04]])
    centre = geometry.grid_centre_ras(ijk_to_ras, shape)
    field = linear_field(linear, centre, ijk_to_ras, shape)
    inside = torch.as_tensor(
        geometry.transform_points(ijk_to_ras, np.array([[3.3, 4.7, 5.1], [10.2, 2.5, 12.9], [7.5, 7.5, 7.5]]))
    )
    expected = centre + (inside.numpy() - centre) @ linear.T
    np.testing.assert_allclose(field.transform_points(inside).numpy(), expected, atol=1e-4)
    outside = torch.tensor([[500.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(field.transform_points(outside), outside)
    rigid = affine("z", 15.0, [1.0, 2.0, 3.0])
    composite = CompositeTransform([rigid, field])
    np.testing.assert_allclose(
        composite.transform_points(inside).numpy(), geometry.transform_points(rigid.matrix, expected), atol=1e-4
    )
    reversed_order = CompositeTransform([field, rigid]).transform_points(inside).numpy()
    assert np.abs(reversed_order - composite.transform_points(inside).numpy()).max() > 0.1


def test_resample_with_field_equals_resample_with_the_transform_it_samples(make_volume):
    ijk_to_ras = make_ijk_to_ras("lps", (1.5, 1.5, 2.0), origin=(20.0, 15.0, -5.0))
    moving = make_volume((12, 14, 16), ijk_to_ras, texture=True)
    transform = affine("z", 7.0, [1.5, -2.0, 1.0])
    field = field_from_transform(transform, moving)
    direct = resample(moving, moving, transform).data
    through_field = resample(moving, moving, field).data
    torch.testing.assert_close(through_field, direct, atol=1e-3 * float(moving.data.abs().max()), rtol=0)


def test_resample_onto_its_own_grid_is_an_exact_copy(make_volume):
    image = make_volume((6, 7, 8), make_ijk_to_ras("oblique"), texture=True)
    labels = make_volume((6, 7, 8), make_ijk_to_ras("oblique"), dtype=torch.int16)
    for volume in (image, labels):
        copy = resample(volume, volume)
        assert copy.data.dtype == (torch.float32 if volume is image else torch.int16)
        torch.testing.assert_close(copy.data, volume.data.to(copy.data.dtype), atol=0, rtol=0)
        copy.data.add_(1)
        assert not torch.equal(copy.data, volume.data.to(copy.data.dtype))  # a copy, not the input's storage


def test_resample_keeps_label_dtype(make_volume):
    labels = make_volume((8, 8, 8), make_ijk_to_ras("oblique"), dtype=torch.int16)
    warped = resample(labels, labels, affine("z", 0.0, [1.0, 0.0, 0.0]), mode="nearest")
    assert warped.data.dtype == torch.int16
    assert isinstance(warped, Volume)
