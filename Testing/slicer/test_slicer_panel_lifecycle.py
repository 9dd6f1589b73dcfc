"""The RegSeg Registration panel through Slicer's module life: setup, enter, exit, scene close, reload, and the
in-Slicer self-test on a machine without torch.

The widgets are the named stand-ins built from the real .ui (``slicer_panel_standins``), with QComboBox semantics:
a combo box reports every index change, also while a parameter connector refills it. The parameter node wrapper
stand-in binds combo boxes as Slicer's does, in the behaviour of Slicer 5.8.1 (``connectGui`` returns ``None``
instead of its tag) and of 5.10 (it returns the tag).
"""

from __future__ import annotations

import io
import sys
import types
import unittest

import numpy as np
import pytest

from slicer_panel_standins import install_standin_application
from slicer_standins import MODULE_FOLDER, import_file, require_mrml, slicer_module_standins

slicer = require_mrml()

from slicer_scene import add_volume  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error:does not have observer", "error:already has observer")

CHOICES = {  # combo box: (field, default, a user's choice)
    "methodComboBox": ("method", "affine", "deformable"),
    "transformFamilyComboBox": ("transform_family", "affine", "similarity"),
    "metricComboBox": ("metric", "auto", "mi"),
    "deviceComboBox": ("device", "auto", "cpu"),
    "presetComboBox": ("preset", "default", "large-motion"),
}
DEFAULTS = {name: default for name, (_, default, _) in CHOICES.items()}
CHOSEN = {name: choice for name, (_, _, choice) in CHOICES.items()}


def small_scene():
    """A scene with two small volumes (the panel picks them as fixed and moving)."""
    scene = slicer.vtkMRMLScene()
    rng = np.random.default_rng(0)
    for name in ("fixed", "moving"):
        add_volume(scene, name, rng.random((6, 7, 8)).astype(np.float32), np.eye(4))
    return scene


def shown(widget) -> dict[str, str]:
    return {name: getattr(widget.ui, name).currentText for name in CHOICES}


def stored(widget) -> dict[str, str]:
    return {name: getattr(widget._parameterNode, field) for name, (field, _, _) in CHOICES.items()}


def bindings(widget) -> dict[str, int]:
    """How many parameter connectors each combo box reaches (1 while the panel is shown, 0 once it is hidden)."""
    return {name: getattr(widget.ui, name).connections("currentIndexChanged(int)") for name in CHOICES}


def enter(widget) -> None:
    """What Slicer does when the module is shown."""
    widget.parent.isEntered = True
    widget.enter()


def exit_(widget) -> None:
    """What Slicer does when another module is shown."""
    widget.exit()
    widget.parent.isEntered = False


@pytest.mark.parametrize("slicer_version", [(5, 8, 1), (5, 10, 0)], ids=["slicer-5.8.1", "slicer-5.10.0"])
def test_choices_survive_setup_enter_exit_reenter_and_scene_close(slicer_version, tmp_path, monkeypatch):
    scene = small_scene()
    install_standin_application(monkeypatch, tmp_path, scene)
    with slicer_module_standins(slicer_version):
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        widget = module.RegSegRegistrationWidget()
        widget.setup()
        enter(widget)
        # first display: the defaults (Slicer 5.8 showed "rigid": a stale connection wrote the refilled list's ends)
        assert shown(widget) == stored(widget) == DEFAULTS
        assert bindings(widget) == dict.fromkeys(CHOICES, 1)
        for name, choice in CHOSEN.items():
            getattr(widget.ui, name).choose(choice)
        assert stored(widget) == CHOSEN

        exit_(widget)
        assert bindings(widget) == dict.fromkeys(CHOICES, 0)
        enter(widget)
        assert shown(widget) == stored(widget) == CHOSEN
        assert bindings(widget) == dict.fromkeys(CHOICES, 1)
        widget.ui.methodComboBox.choose("affine")
        assert widget._parameterNode.method == "affine"

        scene.Clear(0)  # closing the scene while the module is shown: a fresh parameter node, bound once
        assert shown(widget) == stored(widget) == DEFAULTS
        assert bindings(widget) == dict.fromkeys(CHOICES, 1)
        widget.ui.deviceComboBox.choose("cpu")
        exit_(widget)
        scene.Clear(0)  # and while it is hidden
        assert bindings(widget) == dict.fromkeys(CHOICES, 0)
        enter(widget)
        assert shown(widget) == stored(widget) == DEFAULTS
        assert bindings(widget) == dict.fromkeys(CHOICES, 1)
        exit_(widget)
        widget.cleanup()


def test_reload_imports_regsegslicerlib_afresh(tmp_path, monkeypatch):
    """Slicer's reload re-executes the module file only; the panel's reload makes it read RegSegSlicerLib again."""
    install_standin_application(monkeypatch, tmp_path, small_scene())
    reloaded = []
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        before = {name: loaded for name, loaded in sys.modules.items() if name.split(".")[0] == "RegSegSlicerLib"}
        for name, loaded in before.items():
            monkeypatch.setitem(sys.modules, name, loaded)  # the other tests go on with the modules they imported
        monkeypatch.setattr(
            slicer.util,
            "reloadScriptedModule",
            lambda name: reloaded.append(import_file(MODULE_FOLDER / f"{name}.py")),
            raising=False,
        )
        widget = module.RegSegRegistrationWidget()
        widget.setup()
        widget.onReload()
        widget.cleanup()
    (fresh,) = reloaded
    assert {"RegSegSlicerLib.jobs", "RegSegSlicerLib.registration"} <= set(before)
    for name in ("RegSegSlicerLib.jobs", "RegSegSlicerLib.registration"):
        assert sys.modules[name] is not before[name], f"{name} was not imported afresh"
    assert fresh.RegistrationJob is sys.modules["RegSegSlicerLib.registration"].RegistrationJob
    assert fresh.RegistrationJob is not module.RegistrationJob


def test_the_in_slicer_self_test_skips_without_torch_and_downloads_nothing(monkeypatch):
    """On the extension build machines (no torch), Slicer's ctest and "Reload and Test" skip the logic tests."""
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    downloads = []

    def download_sample(name):
        downloads.append(name)
        raise RuntimeError("build machines download no sample data")

    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(downloadSample=download_sample))
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        from RegSegSlicerLib import dependencies

        monkeypatch.setattr(dependencies, "torch_missing", lambda: True)
        in_slicer = module.RegSegRegistrationTest()
        in_slicer.runTest()  # "Reload and Test" in the module panel
        suite = unittest.TestLoader().loadTestsFromTestCase(module.RegSegRegistrationTest)  # what ctest runs
        result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    assert downloads == []
    (reason,) = in_slicer.displayed
    assert "skipped" in reason and dependencies.TORCH_REQUIREMENT in reason and "PyTorch extension" in reason
    assert result.wasSuccessful() and result.testsRun == 3
    assert [message for _, message in result.skipped] == [reason] * 3


def test_grids_of_a_reloaded_scene_interpolate_linearly_again(tmp_path, monkeypatch):
    """The module watches scene imports from start-up on: a marked grid read back as cubic becomes linear again."""
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    app = install_standin_application(monkeypatch, tmp_path, scene)
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
    module.RegSegRegistration(types.SimpleNamespace())
    image = vtk.vtkImageData()
    image.SetDimensions(3, 3, 3)
    image.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grids = []
    for marked in (True, False):
        grid = slicer.vtkOrientedGridTransform()
        grid.SetDisplacementGridData(image)
        grid.SetInterpolationModeToCubic()
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
        node.SetAndObserveTransformFromParent(grid)
        if marked:
            node.SetAttribute(module.nodes.GRID_INTERPOLATION_ATTRIBUTE, "linear")
        grids.append(node.GetTransformFromParent())
    scene.InvokeEvent(scene.EndImportEvent)
    assert [grid.GetInterpolationModeAsString() for grid in grids] == ["Cubic", "Cubic"]
    app.emit("startupCompleted()")
    scene.InvokeEvent(scene.EndImportEvent)
    assert [grid.GetInterpolationModeAsString() for grid in grids] == ["Linear", "Cubic"]
