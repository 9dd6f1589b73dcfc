"""Volume and landmark I/O: round trips keep data and geometry; real DICOM agrees with SimpleITK and NIfTI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from geometry_cases import make_ijk_to_ras
from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.landmarks import read_landmarks, write_landmarks_json
from RegSegLib.io.volumes import read_volume, write_volume
from RegSegLib.volume import Volume

PROSTATEX_T2 = "prostatex/ProstateX-0000/07-07-2011/4.000000-t2tsetra-00702"
PROSTATE_T2_NIFTI = "prostate-t2-dwi/test_0000_t2_tse_tra_4.nii.gz"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("kind", ["identity", "lps", "oblique", "flipped"])
def test_float_volume_round_trip_keeps_data_and_geometry(tmp_path, make_volume, suffix, kind):
    volume = make_volume((6, 7, 8), make_ijk_to_ras(kind, (0.8, 1.1, 2.5), origin=(-30.0, 12.5, 7.0)), texture=True)
    path = tmp_path / f"image{suffix}"
    write_volume(volume, path)
    loaded = read_volume(path)
    assert loaded.shape == volume.shape and loaded.num_channels == 1
    assert loaded.data.dtype == torch.float32
    torch.testing.assert_close(loaded.data, volume.data)
    np.testing.assert_allclose(loaded.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)
    assert loaded.meta["path"] == str(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_label_map_stays_integer(tmp_path, suffix):
    labels = torch.zeros(1, 5, 6, 7, dtype=torch.int64)
    labels[0, 1:3, 2:5, 1:4] = 3
    labels[0, 4, 0, 6] = 300
    volume = Volume(labels, make_ijk_to_ras("oblique", (1.0, 2.0, 3.0)))
    path = tmp_path / f"labels{suffix}"
    write_volume(volume, path)
    loaded = read_volume(path)
    assert loaded.is_integer
    assert torch.equal(loaded.data.long(), labels)
    np.testing.assert_allclose(loaded.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_multichannel_volume_loads_as_channels(tmp_path, suffix):
    data = torch.arange(3 * 4 * 5 * 6, dtype=torch.float32).reshape(3, 4, 5, 6)
    volume = Volume(data, make_ijk_to_ras("lps", (1.0, 1.5, 2.0), origin=(5.0, 6.0, 7.0)))
    path = tmp_path / f"channels{suffix}"
    write_volume(volume, path)
    loaded = read_volume(path)
    assert loaded.num_channels == 3 and loaded.shape == (4, 5, 6)
    torch.testing.assert_close(loaded.data, data)
    np.testing.assert_allclose(loaded.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)


def test_4d_nifti_written_by_nibabel_loads_as_channels(tmp_path):
    array = np.random.default_rng(0).random((6, 5, 4, 2)).astype(np.float32)  # [I, J, K, C]
    affine = make_ijk_to_ras("oblique", (1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0))
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "four_d.nii.gz")
    loaded = read_volume(tmp_path / "four_d.nii.gz")
    assert loaded.num_channels == 2 and loaded.shape == (4, 5, 6)
    np.testing.assert_allclose(loaded.data.numpy(), np.transpose(array, (3, 2, 1, 0)))
    np.testing.assert_allclose(loaded.ijk_to_ras, affine, atol=1e-5)


def test_nifti_geometry_agrees_with_sitk(tmp_path, make_volume):
    volume = make_volume((5, 6, 7), make_ijk_to_ras("oblique", (0.7, 1.3, 2.1), origin=(-4.0, 9.0, 2.0)))
    path = tmp_path / "oblique.nii.gz"
    write_volume(volume, path)
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(
        geometry.ijk_to_ras_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection()),
        volume.ijk_to_ras,
        atol=1e-4,
    )
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), volume.data[0].numpy())


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("folder", [PROSTATEX_T2, "abdomen-ct/example_ct_dicom"])
def test_dicom_series_agrees_with_sitk(shared_data, folder):
    volume = read_volume(shared_data / folder)
    image = _sitk_series(shared_data / folder)
    assert volume.shape == tuple(reversed(image.GetSize()))
    np.testing.assert_allclose(
        volume.ijk_to_ras,
        geometry.ijk_to_ras_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection()),
        atol=1e-6,
    )
    np.testing.assert_array_equal(volume.data[0].numpy(), sitk.GetArrayFromImage(image))
    # voxel (i, j, k) of the volume sits where SimpleITK (LPS) says it does
    index = (3, 100, volume.shape[0] - 2)
    lps = np.array(image.TransformIndexToPhysicalPoint(index))
    ras = geometry.transform_points(volume.ijk_to_ras, np.array(index, dtype=np.float64))
    np.testing.assert_allclose(ras, geometry.lps_to_ras_points(lps), atol=1e-6)


def _corresponding_voxels(source: Volume, target: Volume) -> np.ndarray:
    """Integer matrix mapping source voxel indices to target voxel indices of the same RAS point."""
    mapping = np.linalg.inv(target.ijk_to_ras) @ source.ijk_to_ras
    rounded = np.round(mapping)
    np.testing.assert_allclose(mapping, rounded, atol=1e-3)
    return rounded


def test_dicom_series_matches_nifti_of_the_same_series(shared_data):
    dicom = read_volume(shared_data / PROSTATEX_T2)
    nifti = read_volume(shared_data / PROSTATE_T2_NIFTI)
    assert sorted(dicom.shape) == sorted(nifti.shape)
    mapping = _corresponding_voxels(dicom, nifti)
    k, j, i = (np.arange(0, n, step) for n, step in zip(dicom.shape, (3, 37, 41)))
    kk, jj, ii = np.meshgrid(k, j, i, indexing="ij")
    ijk = np.stack([ii, jj, kk], -1).reshape(-1, 3).astype(np.float64)
    target = np.round(geometry.transform_points(mapping, ijk)).astype(int)
    assert np.all(target >= 0) and np.all(target < np.array(nifti.shape[::-1]))
    # same RAS position for corresponding voxels ...
    np.testing.assert_allclose(
        geometry.transform_points(dicom.ijk_to_ras, ijk),
        geometry.transform_points(nifti.ijk_to_ras, target.astype(np.float64)),
        atol=1e-2,
    )
    # ... and the same intensity there, although the two arrays are ordered differently
    dicom_values = dicom.data[0].numpy()[ijk[:, 2].astype(int), ijk[:, 1].astype(int), ijk[:, 0].astype(int)]
    nifti_values = nifti.data[0].numpy()[target[:, 2], target[:, 1], target[:, 0]]
    np.testing.assert_array_equal(dicom_values.astype(np.int64), nifti_values.astype(np.int64))
    assert not np.allclose(mapping, np.eye(4)), "the NIfTI array is expected to be stored in another order"


def test_lung_landmarks_csv(shared_data):
    files = sorted((shared_data / "lung-vessels/landmarks").glob("case_*.csv"))
    assert len(files) == 27
    landmarks = [read_landmarks(path) for path in files]
    assert all(set(pair) == {"fixed", "moving"} for pair in landmarks)
    first = landmarks[0]
    assert first["fixed"].shape == first["moving"].shape and first["fixed"].shape[1] == 3
    np.testing.assert_allclose(first["fixed"][0], [-246.759, -147.125, 152.945])
    np.testing.assert_allclose(first["moving"][0], [-243.763, -152.125, 154.943])
    distances = np.concatenate([np.linalg.norm(pair["fixed"] - pair["moving"], axis=1) for pair in landmarks])
    # 4590 corresponding points whose mean initial distance is the published 15.4 mm (data README)
    assert distances.shape == (4590,)
    assert distances.mean() == pytest.approx(15.41, abs=0.01)


def test_markups_json_round_trip_is_lps_on_disk(tmp_path):
    points = np.array([[10.0, -20.0, 30.0], [-1.5, 2.5, -3.5]])
    path = tmp_path / "points.mrk.json"
    write_landmarks_json(points, path)
    content = json.loads(path.read_text())
    markup = content["markups"][0]
    assert markup["coordinateSystem"] == "LPS"
    np.testing.assert_allclose(markup["controlPoints"][0]["position"], [-10.0, 20.0, 30.0])
    np.testing.assert_allclose(read_landmarks(path)["points"], points)


@pytest.mark.parametrize("system, factor", [("LPS", [-1.0, -1.0, 1.0]), ("RAS", [1.0, 1.0, 1.0])])
def test_fcsv_reads_either_coordinate_system(tmp_path, system, factor):
    path = tmp_path / "points.fcsv"
    path.write_text(
        "# Markups fiducial file version = 4.11\n"
        f"# CoordinateSystem = {system}\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "vtkMRMLMarkupsFiducialNode_0,1.5,-2,3,0,0,0,1,1,1,0,F-1,,\n"
        "vtkMRMLMarkupsFiducialNode_1,-4,5,-6.25,0,0,0,1,1,1,0,F-2,,\n"
    )
    expected = np.array([[1.5, -2.0, 3.0], [-4.0, 5.0, -6.25]]) * factor
    np.testing.assert_allclose(read_landmarks(path)["points"], expected)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.nii.gz"
    with pytest.raises(InputError, match="nowhere.nii.gz: file not found"):
        read_volume(missing)
    with pytest.raises(InputError, match="nowhere.csv"):
        read_landmarks(tmp_path / "nowhere.csv")


def test_unsupported_suffix_names_the_file(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"not an image")
    with pytest.raises(InputError, match="image.png: unsupported format"):
        read_volume(path)
    with pytest.raises(InputError, match="volume.jpg: unsupported output format"):
        write_volume(Volume(torch.zeros(1, 2, 2, 2), np.eye(4)), tmp_path / "volume.jpg")


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_2d_image_is_refused_with_its_name(tmp_path, suffix):
    path = tmp_path / f"slice{suffix}"
    sitk.WriteImage(sitk.Image(8, 9, sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match=f"slice{suffix.replace('.', '[.]')}: is a 2D image"):
        read_volume(path)


def test_write_into_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="output folder does not exist"):
        write_volume(Volume(torch.zeros(1, 2, 2, 2), np.eye(4)), tmp_path / "absent" / "out.nii.gz")
