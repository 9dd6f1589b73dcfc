"""``regseg`` on bad input files (issue 9 audit): exit code 2, one line naming the file, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from RegSegLib import cli
from RegSegLib.io import write_transform
from RegSegLib.io.checks import MIN_VOXELS_PER_AXIS
from RegSegLib.transforms import AffineTransform, DisplacementField

MATRIX = np.diag([3.0, 3.0, 3.0, 1.0])


def _blob(size: int, shift: float = 0.0) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(size, dtype=np.float64)] * 3, indexing="ij")
    centre = (size - 1) / 2
    blob = np.exp(-((i - centre - shift) ** 2 + (j - centre) ** 2 + (k - centre) ** 2) / (size / 3) ** 2)
    return (blob + 0.01 * np.random.default_rng(0).random(blob.shape)).astype(np.float32)


def _save(path: Path, data: np.ndarray, matrix: np.ndarray = MATRIX) -> str:
    nib.save(nib.Nifti1Image(data, matrix), str(path))
    return str(path)


@pytest.fixture
def pair(tmp_path):
    return _save(tmp_path / "fixed.nii.gz", _blob(12)), _save(tmp_path / "moving.nii.gz", _blob(12, 1.0))


def _refused(argv: list[str], capsys, bad: str, *words: str) -> None:
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("regseg: error: ") and bad in lines[0], err
    for word in words:
        assert word in lines[0], err


def _singular_tfm(tmp_path) -> str:
    matrix = np.eye(4)
    matrix[1, 1] = 0.0
    path = tmp_path / "singular.tfm"
    write_transform(AffineTransform(matrix), path)
    return str(path)


def test_register_refuses_a_singular_init(pair, tmp_path, capsys):
    init = _singular_tfm(tmp_path)
    out = tmp_path / "out"
    _refused(["register", *pair, "-o", str(out), "--init", init, "--device", "cpu"], capsys, init, "singular")
    assert not out.exists()


def test_apply_refuses_a_singular_or_nan_transform(pair, tmp_path, capsys):
    vectors = torch.zeros(3, 12, 12, 12)
    vectors[0, 5, 5, 5] = float("nan")
    nan_field = tmp_path / "nan_field.nii.gz"
    write_transform(DisplacementField(vectors, MATRIX), nan_field)
    nan_h5 = tmp_path / "nan.h5"
    write_transform(DisplacementField(vectors, MATRIX), nan_h5)
    for transform, word in ((_singular_tfm(tmp_path), "singular"), (str(nan_field), "NaN"), (str(nan_h5), "NaN")):
        out = tmp_path / "warped.nii.gz"
        _refused(["apply", transform, pair[1], "--reference", pair[0], "-o", str(out)], capsys, transform, word)
        assert not out.exists()


@pytest.mark.parametrize("size", [2, 3])
def test_register_refuses_tiny_volumes(tmp_path, capsys, size):
    fixed = _save(tmp_path / "tiny.nii.gz", _blob(size))
    moving = _save(tmp_path / "moving.nii.gz", _blob(12))
    out = tmp_path / "out"
    _refused(["register", fixed, moving, "-o", str(out), "--device", "cpu"], capsys, fixed, "too small")
    assert not out.exists()


def test_the_minimum_size_registers(tmp_path, capsys):
    size = MIN_VOXELS_PER_AXIS
    fixed = _save(tmp_path / "fixed.nii.gz", _blob(size))
    moving = _save(tmp_path / "moving.nii.gz", _blob(size, 0.5))
    for method in ("affine", "deformable"):
        out = tmp_path / method
        assert cli.main(["register", fixed, moving, "-o", str(out), "--method", method, "--device", "cpu"]) == 0
        assert (out / "warped.nii.gz").exists()
    # as a process (pytest resets warning filters in-process): nothing on stderr, no library warning
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "RegSegLib.cli", "register", fixed, moving, "-o", str(tmp_path / "process"), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""


def test_register_refuses_a_sheared_image(pair, tmp_path, capsys):
    sheared = MATRIX.copy()
    sheared[0, 1] = 1.0
    moving = _save(tmp_path / "sheared.nii.gz", _blob(12), sheared)
    out = tmp_path / "out"
    _refused(["register", pair[0], moving, "-o", str(out), "--device", "cpu"], capsys, moving, "sheared")
    assert not out.exists()


def test_register_refuses_a_complex_image(pair, tmp_path, capsys):
    data = _blob(12)
    moving = _save(tmp_path / "complex.nii.gz", (data + 1j * data).astype(np.complex64))
    out = tmp_path / "out"
    _refused(["register", pair[0], moving, "-o", str(out), "--device", "cpu"], capsys, moving, "complex")
    assert not out.exists()


def test_register_refuses_a_singular_sform(pair, tmp_path, capsys):
    path = tmp_path / "singular.nii"
    _save(path, _blob(12))
    raw = path.read_bytes()
    header = nib.Nifti1Header(raw[:348], check=False)
    header["srow_z"] = [0.0, 0.0, 0.0, 0.0]
    path.write_bytes(header.binaryblock + raw[348:])
    out = tmp_path / "out"
    _refused(["register", pair[0], str(path), "-o", str(out), "--device", "cpu"], capsys, str(path), "singular")
    assert not out.exists()


def test_evaluate_refuses_nan_landmarks(tmp_path, capsys):
    points = tmp_path / "points.csv"
    points.write_text("fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S\n1,2,3,1,2,3\nnan,5,6,4,5,6\n")
    out = tmp_path / "scores.json"
    _refused(["evaluate", "--landmarks", str(points), "--json", str(out)], capsys, str(points), "NaN")
    assert not out.exists()
