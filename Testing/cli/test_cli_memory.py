"""``regseg register`` refuses, before allocating, what cannot fit (issue 9 audit item 4): exit 2, one line
with what is needed and what is free (or what the file holds), nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from RegSegLib import cli, runtime
from RegSegLib.registration import deformable

from bad_files import header_only_nifti

MATRIX = np.diag([3.0, 3.0, 3.0, 1.0])

# Runs cli.main in a fresh process and reports its exit code, stderr and how much its peak RSS rose.
# RLIMIT_DATA (heap and private mappings) caps it 1 GiB above what the imports use, so a reader that
# does try to allocate the 4 GiB the header describes fails at once instead of taking the machine's memory.
MEASURE = r"""
import contextlib, io, json, resource, sys
from RegSegLib import cli
import nibabel, torch, SimpleITK
import RegSegLib.registration.pipeline, RegSegLib.io.volumes
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/status") as status:
    data_kib = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
limit = (data_kib + 1024 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = cli.main(sys.argv[1:])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "err": err.getvalue(), "rise_mib": (after - before) / 1024}))
"""


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("regseg: error: "), err
    return lines[0]


@pytest.fixture
def small(tmp_path) -> str:
    data = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(data, MATRIX), str(path))
    return str(path)


def test_a_header_only_nifti_claiming_1024_cubed_is_refused_without_allocating(tmp_path, small):
    bad = header_only_nifti(tmp_path / "header_only.nii")
    assert bad.stat().st_size == 352
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, "register", str(bad), small, "-o", str(out), "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )
    result = json.loads(run.stdout.splitlines()[-1])
    line = _one_line(result["err"])
    assert result["code"] == 2, result
    assert str(bad) in line and "holds 0 bytes of voxel data but its header describes 4294967296" in line
    assert not out.exists()
    assert result["rise_mib"] < 100, result  # the 4 GiB the header describes was never allocated


def test_spacing_0_01_is_refused_with_the_estimate_before_any_work(tmp_path, small, capsys, monkeypatch):
    monkeypatch.setattr(deformable, "_prepare_images", lambda *a, **k: pytest.fail("the deformable stage started"))
    out = tmp_path / "out"
    start = time.perf_counter()
    code = cli.main(["register", small, small, "-o", str(out), "--method", "deformable", "--spacing", "0.01", "--device", "cpu"])
    seconds = time.perf_counter() - start
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "deformable registration on a 3600x3600x3600 working grid" in line
    assert "GiB on cpu but only" in line and "GiB is free" in line and "coarser working resolution (--spacing" in line
    assert not out.exists()
    assert seconds < 5.0  # refused before the affine stage, not after it


def test_a_normal_image_larger_than_free_memory_is_refused_at_reading(tmp_path, capsys, monkeypatch):
    fixed = tmp_path / "fixed.nii.gz"
    ramp = np.indices((128, 128, 100)).sum(axis=0).astype(np.float32)  # 6.25 MiB as float32
    nib.save(nib.Nifti1Image(ramp, np.eye(4)), str(fixed))
    monkeypatch.setattr(runtime, "available_host_memory", lambda: 2 * 2**20)
    out = tmp_path / "out"
    code = cli.main(["register", str(fixed), str(fixed), "-o", str(out), "--device", "cpu"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert str(fixed) in line and "reading this 128x128x100 volume needs about 6 MiB on cpu but only 2 MiB is free" in line
    assert not out.exists()
