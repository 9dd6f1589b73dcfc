"""Bad input files refused when read, each as one :class:`InputError` naming the file (issue 9 audit).

Every file is written for real (nibabel, SimpleITK); headers that nibabel would fix on saving are
edited in the saved bytes.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from RegSegLib.errors import InputError
from RegSegLib.io import read_landmarks, read_transform, read_volume, write_transform
from RegSegLib.io.checks import MIN_VOXELS_PER_AXIS, read_image
from RegSegLib.transforms import AffineTransform, CompositeTransform, DisplacementField


def _image(size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((size, size, size)).astype(np.float32)


def nifti_with_header(path: Path, edit, data: np.ndarray | None = None) -> str:
    """Saves an uncompressed NIfTI, then rewrites its header fields with ``edit(header)`` unchecked."""
    image = nib.Nifti1Image(_image() if data is None else data, np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(image, str(path))
    raw = path.read_bytes()
    header = nib.Nifti1Header(raw[:348], check=False)
    edit(header)
    path.write_bytes(header.binaryblock + raw[348:])
    return str(path)


def _refused(path, *words: str, reader=read_volume) -> str:
    with pytest.raises(InputError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, message
    return message


# item 5: singular sform / qform ---------------------------------------------------------------------


def _singular_sform(header) -> None:
    header["sform_code"] = 1
    header["srow_z"] = [0.0, 0.0, 0.0, 0.0]


def test_singular_sform_is_refused(tmp_path):
    path = nifti_with_header(tmp_path / "singular.nii", _singular_sform)
    _refused(path, "sform", "singular")


def test_sform_with_parallel_axes_is_refused(tmp_path):
    def edit(header):
        header["sform_code"] = 1
        header["srow_x"], header["srow_y"], header["srow_z"] = [2, 0, 2, 0], [0, 2, 0, 0], [0, 0, 0, 0]

    _refused(nifti_with_header(tmp_path / "parallel.nii", edit), "sform", "singular")


# item 7: pixdim and shear ---------------------------------------------------------------------------


@pytest.mark.parametrize("pixdim", [[2.0, 0.0, 2.0], [2.0, -2.0, 2.0], [2.0, float("nan"), 2.0]], ids=["zero", "negative", "nan"])
def test_bad_pixdim_is_refused(tmp_path, pixdim):
    def edit(header):
        header["pixdim"][1:4] = pixdim

    _refused(nifti_with_header(tmp_path / "pixdim.nii", edit), "pixdim", "positive")


def test_zero_pixdim_without_sform_or_qform_is_refused(tmp_path):
    def edit(header):
        header["sform_code"], header["qform_code"] = 0, 0
        header["pixdim"][1:4] = [1.0, 0.0, 1.0]

    _refused(nifti_with_header(tmp_path / "pixdim0.nii", edit), "pixdim")


def test_sheared_sform_is_refused(tmp_path):
    def edit(header):
        header["sform_code"] = 1
        header["srow_x"] = [2.0, 0.5, 0.0, 0.0]

    _refused(nifti_with_header(tmp_path / "sheared.nii", edit), "sheared", "orthogonal")


def test_sheared_nrrd_is_refused(tmp_path):
    image = sitk.GetImageFromArray(_image())
    image.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "sheared.nrrd"
    sitk.WriteImage(image, str(path))
    _refused(path, "sheared")


def test_oblique_but_orthogonal_image_is_read(tmp_path):
    angle = np.radians(20.0)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(_image(), matrix @ np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    assert np.allclose(read_volume(path).spacing, [1.5, 1.5, 3.0])


# item 9: messages -----------------------------------------------------------------------------------


def test_singular_direction_in_nrrd_is_said_in_words(tmp_path):
    path = tmp_path / "singular.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 8 8\n"
        b"space directions: (1,0,0) (0,1,0) (1,0,0)\nkinds: domain domain domain\nendian: little\n"
        b"encoding: raw\nspace origin: (0,0,0)\n\n" + _image().tobytes()
    )
    message = _refused(path, "direction matrix is singular")
    assert not message.rstrip(")").endswith("0 0 1") and not message.rstrip(")").endswith("0 0 0")


def _dicom_series(folder: Path, count: int = 4) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        slice_image = sitk.GetImageFromArray((np.arange(64, dtype=np.int16).reshape(8, 8) + index)[None])
        slice_image.SetSpacing((1.0, 1.0, 2.0))
        slice_image.SetOrigin((0.0, 0.0, 2.0 * index))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for tag, value in (
            ("0020|000d", "1.2.3.4"),
            ("0020|000e", f"1.2.3.4.{sum(map(ord, folder.name))}"),  # one series UID per folder
            ("0020|0013", str(index + 1)),
            ("0020|0032", f"0\\0\\{2.0 * index}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0008|0060", "MR"),
        ):
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(slice_image)


def test_study_folder_with_series_in_subfolders_names_them(tmp_path):
    study = tmp_path / "study"
    _dicom_series(study / "t1")
    _dicom_series(study / "flair2")
    assert read_volume(study / "t1").shape == (4, 8, 8)
    message = _refused(study, "series folder", "flair2", "t1")
    assert "holds no DICOM series" not in message


def test_empty_folder_still_says_no_dicom_series(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "holds no DICOM series")


def test_field_without_intent_code_says_so(tmp_path):
    vectors = np.zeros((6, 6, 6, 1, 3), np.float32)
    path = tmp_path / "field.nii.gz"
    nib.save(nib.Nifti1Image(vectors, np.eye(4)), str(path))
    message = _refused(path, "intent", "1006", reader=read_transform)
    assert "5D image" not in message


# item 10: complex images, NaN landmarks -------------------------------------------------------------


def test_complex_nifti_is_refused(tmp_path):
    data = _image()
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image((data + 1j * data).astype(np.complex64), np.eye(4)), str(path))
    _refused(path, "complex")


def test_complex_nrrd_is_refused(tmp_path):
    data = _image()
    path = tmp_path / "complex.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray((data + 1j * data).astype(np.complex64)), str(path))
    _refused(path, "complex")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_landmarks_are_refused(tmp_path, value):
    path = tmp_path / "points.csv"
    path.write_text(f"fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S\n1,2,3,1,2,3\n4,5,6,4,{value},6\n")
    _refused(path, "point 2", "NaN or infinite", reader=read_landmarks)


def test_non_finite_markups_are_refused(tmp_path):
    path = tmp_path / "points.fcsv"
    path.write_text("# CoordinateSystem = RAS\nvtkMRMLMarkupsFiducialNode_0,nan,1,2,0,0,0,1,1,1,0,F-1,,\n")
    _refused(path, "point 1", reader=read_landmarks)


# item 5: too small ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 3, 3), (16, 16, 3)])
def test_tiny_image_is_refused_with_the_minimum(tmp_path, shape):
    path = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random(shape).astype(np.float32), np.eye(4)), str(path))
    _refused(path, "too small", f"at least {MIN_VOXELS_PER_AXIS} voxels", reader=read_image)


# item 3: transforms ---------------------------------------------------------------------------------


def _singular() -> np.ndarray:
    matrix = np.eye(4)
    matrix[2, 2] = 0.0
    return matrix


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_singular_affine_file_is_refused(tmp_path, suffix):
    path = tmp_path / f"singular{suffix}"
    write_transform(AffineTransform(_singular()), path)
    _refused(path, "singular", reader=read_transform)


def test_nan_affine_in_h5_is_refused(tmp_path):
    matrix = np.eye(4)
    matrix[0, 3] = np.nan
    path = tmp_path / "nan.h5"
    write_transform(AffineTransform(matrix), path)
    _refused(path, "NaN or infinite", reader=read_transform)


def _field(value: float) -> DisplacementField:
    import torch

    vectors = torch.zeros(3, 6, 6, 6)
    vectors[1, 2, 3, 4] = value
    return DisplacementField(vectors, np.eye(4))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".h5"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_field_is_refused(tmp_path, suffix, value):
    path = tmp_path / f"field{suffix}"
    write_transform(_field(value), path)
    _refused(path, "NaN or infinite", reader=read_transform)


def test_singular_part_of_a_composite_is_named(tmp_path):
    path = tmp_path / "composite.h5"
    write_transform(CompositeTransform([AffineTransform(np.eye(4)), AffineTransform(_singular())]), path)
    _refused(path, "part 2 of 2", "singular", reader=read_transform)


def test_invertible_transforms_are_still_read(tmp_path):
    matrix = np.diag([1.2, 0.9, 1.1, 1.0])
    matrix[:3, 3] = [3.0, -2.0, 1.0]
    write_transform(AffineTransform(matrix), tmp_path / "a.tfm")
    write_transform(_field(1.5), tmp_path / "f.nii.gz")
    assert np.allclose(read_transform(tmp_path / "a.tfm").matrix, matrix)
    assert float(read_transform(tmp_path / "f.nii.gz").field.abs().max()) == pytest.approx(1.5)
