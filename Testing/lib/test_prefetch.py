"""Reading NIfTI inputs ahead (:mod:`RegSegLib.io.prefetch`): the same volume as a plain read, or no read ahead."""

from __future__ import annotations

import gzip
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from RegSegLib.errors import InputError
from RegSegLib.io import prefetch, read_volume


def _nifti(tmp_path, name: str = "image.nii.gz") -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(9, 8, 7)).astype(np.float32)
    affine = np.array([[-0.9, 0, 0, -4], [0, 1.1, 0, 3], [0, 0, 2.5, 7], [0, 0, 0, 1]], dtype=np.float64)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path), data, affine


@pytest.mark.parametrize("name", ["image.nii.gz", "image.nii"])
def test_a_file_read_ahead_gives_the_volume_a_plain_read_gives(tmp_path, name: str) -> None:
    path, data, affine = _nifti(tmp_path, name)
    plain = read_volume(path)
    prefetch.read_ahead([path, None, str(tmp_path / "absent.nii.gz")])
    ahead_bytes = prefetch.take(path)
    assert ahead_bytes is not None and len(ahead_bytes) >= data.nbytes
    prefetch.read_ahead([path])
    ahead = read_volume(path)
    assert prefetch.take(path) is None  # consumed by the read
    assert torch.equal(ahead.data, plain.data)
    np.testing.assert_allclose(ahead.ijk_to_ras, plain.ijk_to_ras)
    np.testing.assert_allclose(ahead.data[0].numpy(), data.transpose(2, 1, 0))


def test_several_gzip_members_are_all_inflated(tmp_path) -> None:
    path, data, _ = _nifti(tmp_path)
    content = gzip.decompress(open(path, "rb").read())
    split = tmp_path / "members.nii.gz"
    split.write_bytes(gzip.compress(content[:500]) + gzip.compress(content[500:]))
    prefetch.read_ahead([str(split)])
    assert prefetch.take(str(split)) == content
    prefetch.read_ahead([str(split)])
    np.testing.assert_allclose(read_volume(split).data[0].numpy(), data.transpose(2, 1, 0))


def test_a_file_inflating_beyond_the_cap_is_left_to_the_reader(tmp_path, monkeypatch) -> None:
    path, data, _ = _nifti(tmp_path)
    monkeypatch.setattr(prefetch, "MAX_BYTES", 1000)
    monkeypatch.setattr(prefetch, "CHUNK", 100)
    prefetch.read_ahead([path])
    assert prefetch.take(path) is None
    np.testing.assert_allclose(read_volume(path).data[0].numpy(), data.transpose(2, 1, 0))


def test_a_corrupt_file_read_ahead_gets_the_readers_one_line_error(tmp_path) -> None:
    path, _, _ = _nifti(tmp_path)
    raw = open(path, "rb").read()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(raw[: len(raw) // 2])
    prefetch.read_ahead([str(broken)])
    assert prefetch.take(str(broken)) is None
    prefetch.read_ahead([str(broken)])
    with pytest.raises(InputError, match="broken.nii.gz"):
        read_volume(broken)


def test_the_module_loads_without_torch() -> None:
    """It runs before the numerical libraries are imported."""
    code = "import sys, RegSegLib.io.prefetch; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
