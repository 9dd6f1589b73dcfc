"""``regseg`` against the rest of the issue 9 bad-input audit: a closed stdout (item 5), an unwritable output
folder (6), file permissions (8), empty or ignored options (10), a killed run's staging folder (11) and the
progress messages (12). Each test runs the real command on real files.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from RegSegLib import cli
from RegSegLib.io import write_transform
from RegSegLib.transforms import AffineTransform

REPO = Path(__file__).resolve().parents[2]
SIZE = 24
MATRIX = np.diag([3.0, 3.0, 3.0, 1.0])
FAST = ["--transform", "rigid", "--metric", "mse", "--device", "cpu", "--levels", "2,1", "--iterations", "10,5"]
WRITTEN = {"warped.nii.gz", "transform.h5", "affine.tfm", "metrics.json", "qc.png"}


def _image(shift_voxels: float) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(SIZE, dtype=np.float64)] * 3, indexing="ij")
    centre = (SIZE - 1) / 2
    body = ((i - centre - shift_voxels) / 7) ** 2 + ((j - centre) / 5) ** 2 + ((k - centre) / 6) ** 2
    blob = ((i - centre - 4 - shift_voxels) / 2.5) ** 2 + ((j - centre + 2) / 2) ** 2 + ((k - centre) / 3) ** 2
    return (100 * np.exp(-body) + 60 * np.exp(-blob)).astype(np.float32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("audit_pair")
    paths = []
    for name, shift in (("fixed.nii.gz", 0.0), ("moving.nii.gz", 1.5)):
        nib.save(nib.Nifti1Image(_image(shift), MATRIX), str(folder / name))
        paths.append(str(folder / name))
    return paths[0], paths[1]


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _command(pair: tuple[str, str], out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "RegSegLib.cli", "register", *pair, "-o", str(out), *FAST, *options]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# item 5 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", ["none", "lines"])
def test_closed_stdout_still_writes_everything_and_exits_0(pair, tmp_path, progress):
    out = tmp_path / "out"
    process = subprocess.Popen(
        _command(pair, out, "--progress", progress),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    process.stdout.close()  # the reader leaves at once (``regseg register ... | head -c0``)
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 0, stderr
    assert stderr.strip() == ""
    assert {p.name for p in out.iterdir()} == WRITTEN
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# item 6 ------------------------------------------------------------------------------------------


@pytest.fixture
def unwritable_folder(tmp_path):
    """An existing folder that cannot be written, by root too (``chattr +i`` where the user is root)."""
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o500)
    immutable = False
    if os.geteuid() == 0:
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if os.access(folder, os.W_OK) and not immutable:
            pytest.skip("this user can write into any folder and chattr +i is not available")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)


def test_unwritable_output_folder_is_refused_before_the_engine_runs(pair, unwritable_folder, capsys):
    code = cli.main(["register", *pair, "-o", str(unwritable_folder), "--progress", "lines", *FAST])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert _error_lines(captured.err) == [
        line for line in _error_lines(captured.err) if line.startswith(f"regseg: error: {unwritable_folder}: ")
    ]
    assert len(_error_lines(captured.err)) == 1
    assert "cannot be written" in captured.err
    assert "PROGRESS" not in captured.out  # nothing was read or registered
    assert list(unwritable_folder.iterdir()) == []
    assert [p.name for p in unwritable_folder.parent.iterdir()] == ["out"]


# item 8 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_take_the_umask_permissions(pair, tmp_path, umask, capsys):
    write_transform(AffineTransform.identity(), tmp_path / "identity.tfm")
    previous = os.umask(umask)
    try:
        assert cli.main(["register", *pair, "-o", str(tmp_path / "out"), "--progress", "none", *FAST]) == 0
        assert cli.main(
            ["apply", str(tmp_path / "identity.tfm"), pair[1], "--reference", pair[0], "-o", str(tmp_path / "applied.nii.gz")]
        ) == 0  # fmt: skip
    finally:
        os.umask(previous)
    written = [*(tmp_path / "out").iterdir(), tmp_path / "applied.nii.gz"]
    assert {p.name for p in written} == WRITTEN | {"applied.nii.gz"}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {name: 0o666 & ~umask for name in modes}


# item 10 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, named",
    [(["register", "{fixed}", "{moving}", "-o", ""], "-o/--output"),
     (["apply", "{tfm}", "{moving}", "--reference", "{fixed}", "-o", ""], "-o/--output"),
     (["evaluate", "--fixed-labels", "{fixed}", "--warped-labels", "{fixed}", "--json", ""], "--json")],
)  # fmt: skip
def test_an_empty_output_path_is_refused(pair, tmp_path, monkeypatch, capsys, argv, named):
    write_transform(AffineTransform.identity(), tmp_path / "t.tfm")
    files = {"fixed": pair[0], "moving": pair[1], "tfm": str(tmp_path / "t.tfm")}
    monkeypatch.chdir(tmp_path)
    code = cli.main([part.format(**files) for part in argv])
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"regseg: error: {named}: is empty"), lines
    assert [p.name for p in tmp_path.iterdir()] == ["t.tfm"]


@pytest.mark.parametrize(
    "options",
    [["--spacing", "2"], ["--regularisation", "0.5"], ["--deformable-iterations", "5"], ["--preset", "large-motion"],
     ["--diffeomorphic"], ["--method", "affine", "--spacing", "2", "--regularisation", "2"]],
)  # fmt: skip
def test_deformable_options_with_an_affine_run_are_refused(pair, tmp_path, capsys, options):
    code = cli.main(["register", *pair, "-o", str(tmp_path / "out"), *options])
    stderr = capsys.readouterr().err
    assert code == 2
    assert "only used by --method deformable" in stderr
    assert options[0 if options[0] != "--method" else 2] in _error_lines(stderr)[-1]
    assert list(tmp_path.iterdir()) == []


# item 11 -----------------------------------------------------------------------------------------


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(pair, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        _command(pair, out, "--progress", "lines"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=_environment(),
    )  # fmt: skip
    for line in process.stdout:
        if "affine level" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.") and left[0].endswith(".partial"), left
    running = tmp_path / f".out.pid{os.getpid()}.abcd1234.partial"  # a run still going: left alone
    other = tmp_path / f".out2.pid{process.pid}.abcd1234.partial"  # another output's: left alone
    running.mkdir()
    other.mkdir()

    result = subprocess.run(_command(pair, out, "--progress", "none"), capture_output=True, text=True, env=_environment())
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "out", running.name])


# item 12 -----------------------------------------------------------------------------------------


def test_progress_lines_name_stages_and_steps_not_losses(pair, tmp_path, capsys):
    assert cli.main(["register", *pair, "-o", str(tmp_path / "out"), "--progress", "lines", *FAST]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROGRESS ")]
    affine = [line.split(" ", 2)[2] for line in lines if "affine level" in line]
    assert affine and all(re.fullmatch(r"affine level [12]/2: step \d+/(10|5)", message) for message in affine), affine
    assert not any("loss" in line for line in lines)
