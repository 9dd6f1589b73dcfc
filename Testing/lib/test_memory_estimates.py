"""Memory estimates before allocation (issue 9 audit item 4): the reader compares what a header promises
with what the file holds and with free memory before reading voxels; the deformable stage estimates its
working grid before any work. Nothing large is ever allocated here."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegSegLib import runtime
from RegSegLib.errors import InputError, RegSegError
from RegSegLib.io import volumes
from RegSegLib.io.volumes import read_volume
from RegSegLib.registration import deformable
from RegSegLib.registration.settings import DeformableSettings
from RegSegLib.volume import Volume
from bad_files import header_only_nifti

GIB_1024_CUBED = 1024**3 * 4


def _no_voxel_read(monkeypatch):
    """Fails the test if the reader gets as far as reading voxels."""

    def refuse(*args, **kwargs):
        raise AssertionError("voxel data was read")

    monkeypatch.setattr(volumes.np, "asanyarray", refuse)


def test_a_header_only_nifti_is_refused_before_reading_voxels(tmp_path, monkeypatch):
    path = header_only_nifti(tmp_path / "header_only.nii")
    assert path.stat().st_size == 352
    _no_voxel_read(monkeypatch)
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert f"holds 0 bytes of voxel data but its header describes {GIB_1024_CUBED}" in message
    assert "1024x1024x1024 float32" in message


def test_a_header_only_nifti_gz_is_refused_by_the_deflate_bound(tmp_path, monkeypatch):
    path = header_only_nifti(tmp_path / "header_only.nii.gz")
    _no_voxel_read(monkeypatch)
    with pytest.raises(InputError, match=rf"compressed file, which cannot hold the {GIB_1024_CUBED} bytes"):
        read_volume(path)


def test_a_truncated_nifti_names_what_it_holds_and_what_its_header_describes(tmp_path):
    path = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(np.ones((12, 12, 12), np.float32), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=rf"holds {12**3 * 4 - 100} bytes of voxel data but its header describes {12**3 * 4}"):
        read_volume(path)


def test_a_highly_compressible_nifti_gz_is_not_mistaken_for_a_truncated_one(tmp_path):
    path = tmp_path / "zeros.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.float32), np.eye(4)), str(path))
    assert path.stat().st_size * 200 < 64**3 * 4  # compressed hundreds of times
    assert read_volume(path).shape == (64, 64, 64)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_volume_larger_than_free_memory_is_refused_before_reading(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"image{suffix}"
    data = np.zeros((100, 128, 128), np.float32)  # K, J, I as SimpleITK sees it: 6.25 MiB
    if suffix == ".nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    else:
        nib.save(nib.Nifti1Image(data.T, np.eye(4)), str(path))
    monkeypatch.setattr(runtime, "available_host_memory", lambda: 2 * 2**20)
    _no_voxel_read(monkeypatch)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: pytest.fail("voxel data was read"))
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "reading this " in message and "needs about 6 MiB on cpu but only 2 MiB is free" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert read_volume(path).shape == (100, 128, 128)


def _small_volume() -> Volume:
    return Volume(torch.zeros(1, 12, 12, 12), np.diag([3.0, 3.0, 3.0, 1.0]))


def test_the_deformable_estimate_follows_the_working_grid_without_allocating():
    fixed = _small_volume()
    at_3mm = deformable.deformable_memory_bytes(fixed, DeformableSettings(spacing_mm=3.0))
    assert at_3mm == (deformable.BYTES_PER_WORKING_VOXEL + deformable.BYTES_PER_FIXED_VOXEL) * 12**3
    tiny = deformable.deformable_memory_bytes(fixed, DeformableSettings(spacing_mm=0.01))
    assert tiny > 3600**3 * deformable.BYTES_PER_WORKING_VOXEL  # 4.7e10 working voxels: 14 TB


def test_a_working_grid_too_large_for_free_memory_is_refused_before_any_work(monkeypatch):
    fixed = _small_volume()
    monkeypatch.setattr(deformable, "_prepare_images", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(RegSegError) as info:
        deformable.register_deformable(fixed, fixed, DeformableSettings(spacing_mm=0.01), device="cpu")
    message = str(info.value)
    assert message.startswith("deformable registration on a 3600x3600x3600 working grid (46,656.0 M voxels at 0.01 mm)")
    assert "TiB" not in message and "GiB on cpu but only" in message and "--spacing" in message
