"""ITK HDF5 transform files written by RegSeg itself (RegSegLib.io.itk_hdf5): ITK's layout, float32 fields.

``write_transform(..., "x.h5")`` writes the file with h5py in the layout of ITK's ``HDF5TransformIO``;
displacement fields go in as compressed float32. What counts is that ITK reads the file back to the
same transform: SimpleITK's ``ReadTransform`` + ``Resample`` must reproduce RegSeg's own warp on real,
oblique, anisotropic geometry, and RegSeg's reader must return the values written.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from geometry_cases import rotation_about
from RegSegLib import geometry
from RegSegLib.io.itk_hdf5 import CHUNK_VALUES, ItkTransformPart, write_itk_hdf5
from RegSegLib.io.transforms import read_transform, write_transform
from RegSegLib.io.volumes import read_volume, volume_to_sitk
from RegSegLib.transforms import AffineTransform, CompositeTransform, DisplacementField, resample
from RegSegLib.volume import Volume


def smooth_field(grid: geometry.Grid, amplitude: float, dtype: torch.dtype = torch.float32) -> DisplacementField:
    """A smooth displacement field ``[3, K, J, I]`` (RAS mm) on ``grid``."""
    points = geometry.points_ras(grid.ijk_to_ras, grid.shape).double().numpy()
    centred = points - points.reshape(-1, 3).mean(axis=0)
    vectors = np.stack(
        [
            amplitude * np.sin(centred[..., 1] / 9.0),
            -amplitude * np.cos(centred[..., 2] / 11.0) * np.sin(centred[..., 0] / 13.0),
            0.6 * amplitude * np.sin((centred[..., 0] + centred[..., 2]) / 10.0),
        ]
    )
    return DisplacementField(torch.as_tensor(vectors, dtype=dtype), grid.ijk_to_ras)


@pytest.fixture(scope="module")
def prostate(shared_data) -> tuple[Volume, Volume, CompositeTransform]:
    """Moving: a real DWI volume (2 x 2 x 3 mm, oblique); fixed: the T2 grid at 2.5 x 2.5 x 3 mm (oblique);
    the transform: a rotation and shift about the gland, then a field on a coarse oblique grid."""
    folder = shared_data / "prostate-t2-dwi"
    moving = read_volume(folder / "test_0000_ep2d_diff_tra_7.nii.gz").channel(0).to(dtype=torch.float32)
    t2 = read_volume(folder / "test_0000_t2_tse_tra_4.nii.gz")
    fixed_grid = t2.grid.resampled((2.5, 2.5, 3.0))
    fixed = Volume(torch.zeros(1, *fixed_grid.shape), fixed_grid.ijk_to_ras)
    centre = fixed_grid.centre_ras
    linear = np.eye(4)
    linear[:3, :3] = rotation_about("z", 6.0) @ rotation_about("x", -4.0)
    to_centre, from_centre = np.eye(4), np.eye(4)
    to_centre[:3, 3], from_centre[:3, 3] = centre + np.array([2.0, -3.0, 1.5]), -centre
    affine = AffineTransform(to_centre @ linear @ from_centre)
    field = smooth_field(t2.grid.resampled((7.0, 6.5, 6.0)), 3.0)
    return fixed, moving, CompositeTransform([affine, field])


def test_simpleitk_reads_the_composite_and_resamples_as_regseg(tmp_path, prostate):
    fixed, moving, composite = prostate
    path = tmp_path / "transform.h5"
    write_transform(composite, path)
    itk_transform = sitk.ReadTransform(str(path))
    assert isinstance(itk_transform, sitk.CompositeTransform) and itk_transform.GetNumberOfTransforms() == 2
    assert isinstance(itk_transform.GetNthTransform(1), sitk.DisplacementFieldTransform)
    theirs = sitk.GetArrayFromImage(
        sitk.Resample(
            volume_to_sitk(moving.data.numpy(), moving.ijk_to_ras),
            volume_to_sitk(fixed.data.numpy(), fixed.ijk_to_ras),
            itk_transform,
            sitk.sitkLinear,
            0.0,
            sitk.sitkFloat64,
        )
    )
    ours = resample(moving, fixed, composite).data[0].numpy()
    # compare where T(x) lies well inside the moving grid (interpolators differ at the very edge)
    mapped = composite.transform_points(fixed.grid.points_ras().double()).numpy()
    ijk = geometry.transform_points(np.linalg.inv(moving.ijk_to_ras), mapped)
    inside = np.all((ijk > 1.0) & (ijk < np.array(moving.shape[::-1]) - 2.0), axis=-1)
    assert inside.mean() > 0.3
    value_range = float(moving.data.max() - moving.data.min())
    assert np.abs(ours - theirs)[inside].max() < 1e-3 * value_range
    without_field = resample(moving, fixed, composite.transforms[0]).data[0].numpy()
    assert np.abs(without_field - theirs)[inside].max() > 0.05 * value_range, "the field is not a no-op"


def test_regseg_reads_back_exactly_what_it_wrote(tmp_path, prostate):
    _, _, composite = prostate
    path = tmp_path / "transform.hdf5"
    write_transform(composite, path)
    loaded = read_transform(path)
    assert isinstance(loaded, CompositeTransform)
    assert [type(part) for part in loaded.transforms] == [AffineTransform, DisplacementField]
    np.testing.assert_allclose(loaded.transforms[0].matrix, composite.transforms[0].matrix, rtol=0, atol=1e-12)
    torch.testing.assert_close(loaded.transforms[1].field, composite.transforms[1].field, rtol=0, atol=0)
    np.testing.assert_allclose(loaded.transforms[1].ijk_to_ras, composite.transforms[1].ijk_to_ras, atol=1e-9)


def test_the_file_has_itk_layout_with_a_compressed_float32_field(tmp_path, prostate):
    _, _, composite = prostate
    affine, field = composite.transforms
    path = tmp_path / "transform.h5"
    write_transform(composite, path)
    with h5py.File(path, "r") as file:
        assert sorted(file) == ["HDFVersion", "ITKVersion", "OSName", "OSVersion", "TransformGroup"]
        for name in ("HDFVersion", "ITKVersion", "OSName", "OSVersion"):
            assert file[name].shape == (1,) and h5py.check_string_dtype(file[name].dtype).encoding == "ascii"
        group = file["TransformGroup"]
        assert sorted(group, key=int) == ["0", "1", "2"]
        assert list(group["0"]) == ["TransformType"]
        types = [group[n]["TransformType"][0] for n in "012"]
        assert types == [b"CompositeTransform_double_3_3", b"AffineTransform_double_3_3", b"DisplacementFieldTransform_float_3_3"]

        lps = geometry.ras_to_lps_matrix(affine.matrix)
        stored = group["1"]["TransformParameters"]
        assert stored.dtype == np.float64 and stored.compression is None
        np.testing.assert_array_equal(stored[()], np.concatenate([lps[:3, :3].reshape(-1), lps[:3, 3]]))
        np.testing.assert_array_equal(group["1"]["TransformFixedParameters"][()], np.zeros(3))

        stored = group["2"]["TransformParameters"]
        assert stored.dtype == np.float32 and stored.compression == "gzip" and stored.shuffle
        vectors = np.moveaxis(field.field.numpy(), 0, -1) * np.array([-1.0, -1.0, 1.0], dtype=np.float32)
        np.testing.assert_array_equal(stored[()], vectors.reshape(-1))
        origin, spacing, direction = geometry.itk_geometry_from_ijk_to_ras(field.ijk_to_ras)
        fixed_parameters = group["2"]["TransformFixedParameters"]
        assert fixed_parameters.dtype == np.float64
        np.testing.assert_allclose(fixed_parameters[()], [*field.shape[::-1], *origin, *spacing, *direction], atol=1e-12)
        # half the bytes of ITK's own float64 parameters, less after compression
        assert stored.id.get_storage_size() < 0.9 * 4 * field.field.numel()


def test_a_large_field_spans_several_chunks_and_reads_back_exactly(tmp_path):
    """More values than one chunk, and not a multiple of it: the last chunk is padded on disk only."""
    matrix = np.diag([1.2, 0.9, 2.0, 1.0])
    matrix[:3, :3] = rotation_about("y", 20.0) @ matrix[:3, :3]
    shape = (64, 61, 53)
    assert 3 * np.prod(shape) > 2 * CHUNK_VALUES and 3 * np.prod(shape) % CHUNK_VALUES
    vectors = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    field = DisplacementField(vectors, matrix)
    path = tmp_path / "field.h5"
    write_transform(field, path)
    itk_transform = sitk.ReadTransform(str(path))
    assert isinstance(itk_transform.Downcast(), sitk.DisplacementFieldTransform)
    displacement = sitk.DisplacementFieldTransform(itk_transform).GetDisplacementField()
    assert displacement.GetSize() == shape[::-1]
    lps = sitk.GetArrayFromImage(displacement)
    np.testing.assert_array_equal(lps, np.moveaxis(vectors.numpy(), 0, -1) * np.array([-1.0, -1.0, 1.0], dtype=np.float32))
    loaded = read_transform(path)
    torch.testing.assert_close(loaded.field, vectors, rtol=0, atol=0)


def test_single_transforms_are_not_wrapped_in_a_composite(tmp_path):
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_about("x", 10.0) @ np.diag([1.1, 0.9, 1.0])
    matrix[:3, 3] = [1.0, -2.0, 3.0]
    write_transform(AffineTransform(matrix), tmp_path / "affine.h5")
    itk_transform = sitk.ReadTransform(str(tmp_path / "affine.h5"))
    assert itk_transform.GetName() == "AffineTransform"
    point = np.array([10.0, -20.0, 30.0])
    moved = geometry.lps_to_ras_points(np.array(itk_transform.TransformPoint(tuple(geometry.ras_to_lps_points(point)))))
    np.testing.assert_allclose(moved, geometry.transform_points(matrix, point), atol=1e-9)
    with h5py.File(tmp_path / "affine.h5", "r") as file:
        assert list(file["TransformGroup"]) == ["0"]


def test_a_float64_field_is_stored_in_double(tmp_path):
    grid = geometry.Grid(np.diag([3.0, 3.0, 3.0, 1.0]), (6, 7, 8))
    field = smooth_field(grid, 2.0, torch.float64)
    path = tmp_path / "field.h5"
    write_transform(field, path)
    with h5py.File(path, "r") as file:
        assert file["TransformGroup/0/TransformType"][0] == b"DisplacementFieldTransform_double_3_3"
        assert file["TransformGroup/0/TransformParameters"].dtype == np.float64
    np.testing.assert_allclose(read_transform(path).field.numpy(), field.field.numpy(), rtol=1e-7)


def test_write_itk_hdf5_refuses_what_itk_could_not_read(tmp_path):
    part = ItkTransformPart("AffineTransform_double_3_3", np.zeros(12), np.zeros(3))
    with pytest.raises(ValueError, match="holds one transform"):
        write_itk_hdf5([part, part], tmp_path / "two.h5", composite=False)
    flat = ItkTransformPart("AffineTransform_double_3_3", np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="must be 1D"):
        write_itk_hdf5([flat], tmp_path / "flat.h5", composite=False)
