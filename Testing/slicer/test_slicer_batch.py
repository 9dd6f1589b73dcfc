"""The batch script ``Scripts/slicer_register.py``: results, exit codes, and that every path ends the process.

``Slicer --python-script`` runs a script and then stays in its event loop until ``slicer.util.exit`` is called
(``qSlicerCoreCommandOptions``: no exit after the script), printing an uncaught exception without ending. The
script is run here with plain Python and slicer-core, and in a Slicer-like runner that behaves the same way: a
path that does not call ``slicer.util.exit`` leaves that runner alive, as it would leave a batch job's Slicer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from slicer_standins import MODULE_FOLDER, REPOSITORY_ROOT, import_file, require_mrml, slicer_module_standins

slicer = require_mrml()
SCRIPT = REPOSITORY_ROOT / "Scripts" / "slicer_register.py"

SLICER_LIKE_RUNNER = """
import runpy, sys, threading, traceback

sys.path[:0] = [{support!r}, {modules!r}]
import slicer
from slicer_standins import standin_modules

sys.modules.update(standin_modules())  # the application's Qt-side Python modules
slicer.app = type("Application", (), {{}})()
status, exited = [], threading.Event()


def exit(code=0):
    status.append(code)
    exited.set()


slicer.util.exit = exit
if {fault!r} == "KeyError":
    from RegSegSlicerLib import nodes

    def add_volume_file(*args, **kwargs):
        raise KeyError("per_label")

    nodes.add_volume_file = add_volume_file
script, *arguments = sys.argv[1:]
sys.argv = [script, *arguments]
try:
    runpy.run_path(script, run_name="__main__")
except BaseException:
    traceback.print_exc()  # Slicer prints it and carries on
exited.wait()  # the event loop, until slicer.util.exit
sys.exit(status[0])
"""


def run_in_slicer_like_runner(arguments: list[str], fault: str | None = None, timeout_s: float = 90.0):
    """Runs the batch script as ``Slicer --python-script`` would; fails the test if the process stays alive."""
    support = str(REPOSITORY_ROOT / "Testing" / "support")
    code = SLICER_LIKE_RUNNER.format(support=support, modules=str(MODULE_FOLDER), fault=fault)
    try:
        return subprocess.run(
            [sys.executable, "-c", code, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"the batch script did not call slicer.util.exit: Slicer would stay alive\n{stderr}")


def test_an_internal_error_ends_slicer_with_status_1_and_one_line(tmp_path):
    """Anything but a ValueError or a RegistrationError (here a KeyError) used to skip ``slicer.util.exit``."""
    image = tmp_path / "image.nrrd"
    image.write_text("")
    completed = run_in_slicer_like_runner(
        ["--fixed", str(image), "--moving", str(image), "--output-dir", str(tmp_path / "out")], fault="KeyError"
    )
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == ["slicer_register: internal error: KeyError: 'per_label'"]
    assert "Traceback" in completed.stdout  # the details stay in the log


def test_an_output_folder_that_cannot_be_made_ends_slicer_with_status_2(tmp_path, shared_data):
    image = shared_data / "prostate-mr-us" / "mr" / "case000000.nii.gz"
    (tmp_path / "a file").write_text("")
    out = tmp_path / "a file" / "out"
    completed = run_in_slicer_like_runner(["--fixed", str(image), "--moving", str(image), "--output-dir", str(out)])
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"slicer_register: error: {out}: cannot create the output folder (Not a directory)"
    ]


def test_refused_arguments_end_slicer_with_status_2(tmp_path):
    completed = run_in_slicer_like_runner(["--fixed", "f.nrrd", "--moving", "m.nrrd", "--output-dir", "o", "--method", "x"])
    assert completed.returncode == 2 and "invalid choice: 'x'" in completed.stderr


def test_the_batch_script_makes_the_logic_without_building_the_panel(monkeypatch):
    """``slicer.util.getModuleLogic`` builds a scripted module's whole panel (``getModuleGui``) to reach its Logic."""

    def builds_the_panel(*args, **kwargs):
        raise AssertionError("the batch script asked Slicer for the module's panel")

    with slicer_module_standins():
        script = import_file(SCRIPT)
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py", "RegSegRegistration")
    monkeypatch.setitem(sys.modules, "RegSegRegistration", module)  # Slicer registers each module it loads
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(), raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(regsegregistration=object()), raising=False)
    for name in ("getModuleLogic", "getModuleGui", "getModuleWidget"):
        monkeypatch.setattr(slicer.util, name, builds_the_panel, raising=False)
    assert isinstance(script.module_logic(), module.RegSegRegistrationLogic)


def test_batch_script_fails_with_one_line_and_status_2_on_a_missing_file(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY_ROOT / "Scripts" / "slicer_register.py"), "--fixed", str(tmp_path / "absent.nrrd"),
         "--moving", str(tmp_path / "absent.nrrd"), "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == f"slicer_register: error: {tmp_path / 'absent.nrrd'}: file not found"


@pytest.mark.parametrize("layout", ["checkout", "installed"])
def test_batch_script_registers_real_volumes_with_advanced_settings(tmp_path, shared_data, installed_modules, layout):
    """The batch script end to end on two prostate MR volumes (MRML from slicer-core, the child runs RegSegLib),
    from the source checkout and from the folder layout of an installed extension."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from RegSegLib import geometry
    from RegSegLib.io.transforms import read_transform
    from RegSegLib.io.volumes import read_volume

    if layout == "checkout":
        script = REPOSITORY_ROOT / "Scripts" / "slicer_register.py"
    else:
        script = installed_modules / "Scripts" / "slicer_register.py"
    folder = shared_data / "prostate-mr-us" / "mr"
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(script), "--fixed", str(folder / "case000000.nii.gz"),
         "--moving", str(folder / "case000001.nii.gz"), "--output-dir", str(out), "--transform", "rigid",
         "--device", "cpu", "--levels", "2,1", "--iterations", "20,10"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    # the saved transform node is RegSeg's result (ITK reads it; it maps points as RegSeg's own file does)
    assert sitk.ReadTransform(str(out / "transform.h5")).GetDimension() == 3
    saved, regseg = read_transform(out / "transform.h5"), read_transform(out / "regseg" / "transform.h5")
    fixed, moving = read_volume(folder / "case000000.nii.gz"), read_volume(folder / "case000001.nii.gz")
    ijk = 2.0 + np.random.default_rng(1).random((100, 3)) * (np.array(fixed.shape[::-1]) - 5.0)
    points = torch.as_tensor(geometry.transform_points(fixed.ijk_to_ras, ijk))
    ours = regseg.transform_points(points)
    assert (saved.transform_points(points) - ours).abs().max() < 0.01
    assert (ours - points).norm(dim=1).max() > 0.5
    # the saved warped volume is RegSeg's warped image on the fixed grid, not the moving image
    warped, regseg_warped = read_volume(out / "warped.nrrd"), read_volume(out / "regseg" / "warped.nii.gz")
    assert warped.shape == fixed.shape and np.abs(warped.ijk_to_ras - fixed.ijk_to_ras).max() < 1e-4
    value_range = float(moving.data.max() - moving.data.min())
    assert (warped.data - regseg_warped.data).abs().max() < 1e-3 * value_range
    assert (warped.data - moving.data).abs().mean() > 0.01 * value_range
    settings = json.loads((out / "regseg" / "metrics.json").read_text())["settings"]
    affine = settings["affine"]
    assert (settings["method"], affine["family"], affine["levels"], affine["iterations"]) == ("affine", "rigid", [2.0, 1.0], [20, 10])


def test_batch_script_rejects_a_bad_advanced_list_with_status_2(tmp_path, shared_data):
    image = shared_data / "prostate-mr-us" / "mr" / "case000000.nii.gz"
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY_ROOT / "Scripts" / "slicer_register.py"), "--fixed", str(image),
         "--moving", str(image), "--output-dir", str(tmp_path / "out"), "--levels", "4,x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == "slicer_register: error: The pyramid levels must be comma-separated numbers, got '4,x'."
    assert not (tmp_path / "out").exists()
