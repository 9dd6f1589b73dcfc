"""The RegSeg Registration panel (RegSegRegistrationWidget) driven as a user drives it, on a real MRML scene.

The widgets are named stand-ins built from the module's real .ui file (``slicer_panel_standins``: Qt cannot run
here); everything behind them is real: the parameter node in a ``slicer-core`` scene, the Logic, the child
process ``PythonSlicer -m RegSegLib.cli`` (``PythonSlicer`` is a script in a stand-in Slicer home that runs this
Python), the files, the result nodes. The tests press Apply, let the stand-in timer fire as Qt's event loop would,
and check what the user sees: Apply turning into Cancel and back, the progress bar, the status, the log, the
result nodes, error messages.
"""

from __future__ import annotations

import numpy as np
import pytest

from slicer_panel_standins import install_standin_application, open_panel, run_until_idle
from slicer_standins import MODULE_FOLDER, import_file, require_mrml, slicer_module_standins

slicer = require_mrml()
import vtk  # noqa: E402

from slicer_scene import (  # noqa: E402
    add_segmentation,
    add_volume,
    corner_box,
    node_ijk_to_ras,
    numpy_matrix,
    prostate_scene,
    scene_state,
)

pytestmark = pytest.mark.filterwarnings("error:does not have observer", "error:already has observer")


def read_label_map(path):
    """A label map node read from a file RegSeg's panel exported."""
    from RegSegSlicerLib import nodes

    return nodes.read_volume_file(path, label_map=True)

@pytest.fixture
def panel(shared_data, tmp_path, monkeypatch):
    """The panel set up on a scene with the prostate pair, in a stand-in application; cleaned up afterwards."""
    data = prostate_scene(shared_data)
    app = install_standin_application(monkeypatch, tmp_path, data["scene"])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with open_panel("RegSegRegistration.py", "RegSegRegistrationWidget") as (widget, _):
        yield widget, data, app


def test_the_panel_picks_the_volumes_binds_every_selector_to_the_scene_and_enables_apply(panel):
    widget, data, _ = panel
    parameters = widget._parameterNode
    assert (parameters.fixed_volume, parameters.moving_volume) == (data["fixed"], data["moving"])
    bound = dict(parameters.bound_widgets())
    assert len(bound) == len(parameters.bound_widgets()) == len(parameters.parameter_names)  # each field bound once
    assert all(bound_widget.property("SlicerParameterName") == name for name, bound_widget in bound.items())
    assert bound["transform_family"] is widget.ui.transformFamilyComboBox
    selectors = [w for w in vars(widget.ui).values() if w.className in ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget")]
    assert len(selectors) == 12 and all(s.mrmlScene() is data["scene"] for s in selectors)
    assert widget.ui.applyButton.enabled and widget.ui.applyButton.text == "Apply"
    parameters.moving_volume = None
    assert not widget.ui.applyButton.enabled and widget.ui.applyButton.toolTip == "Select fixed and moving volumes"


def test_the_panel_keeps_the_users_choices_when_reentered_and_forgets_removed_nodes(panel):
    widget, data, _ = panel
    scene, parameters = data["scene"], widget._parameterNode
    third = add_volume(scene, "third MR", slicer.util.arrayFromVolume(data["moving"]).copy(), node_ijk_to_ras(data["moving"]))
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
    parameters.moving_volume, parameters.method, parameters.levels = third, "deformable", "2, 1"
    parameters.regularisation, parameters.output_volume = 2.5, output
    widget.exit()
    widget.enter()
    again = widget._parameterNode
    assert again is not parameters and again.fixed_volume is data["fixed"] and again.moving_volume is third
    assert (again.method, again.levels, again.regularisation, again.output_volume) == ("deformable", "2, 1", 2.5, output)
    scene.RemoveNode(output)
    assert again.output_volume is None


def test_segment_choice_appears_only_for_a_segmentation_mask(panel):
    widget, data, _ = panel
    ui = widget.ui
    assert not ui.fixedMaskSegmentSelector.visible and not ui.fixedMaskSegmentSelectorLabel.visible
    ui.fixedMaskSelector.setCurrentNode(data["fixed_segmentation"])
    assert ui.fixedMaskSegmentSelector.visible and ui.fixedMaskSegmentSelectorLabel.visible
    assert ui.fixedMaskSegmentSelector.currentNode() is data["fixed_segmentation"]
    assert not ui.movingMaskSegmentSelector.visible
    label_map = data["scene"].AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "a label map mask")
    ui.fixedMaskSelector.setCurrentNode(label_map)
    assert not ui.fixedMaskSegmentSelector.visible and ui.fixedMaskSegmentSelector.currentNode() is None


def test_the_chosen_mask_segments_are_the_masks_the_registration_gets(panel):
    widget, data, _ = panel
    scene, ui, parameters = data["scene"], widget.ui, widget._parameterNode
    gland = data["fixed_gland"] > 0
    box = corner_box(gland.shape)
    assert not (box & gland).any()
    structures = add_segmentation(scene, "fixed structures", ["prostate", "box"], np.where(box, 2, gland), node_ijk_to_ras(data["fixed"]))
    segment_id = {
        (node.GetName(), node.GetSegmentation().GetNthSegment(n).GetName()): node.GetSegmentation().GetNthSegmentID(n)
        for node in (structures, data["moving_segmentation"])
        for n in range(node.GetSegmentation().GetNumberOfSegments())
    }
    # what the parameter binding does when the user picks a mask: the node in both the parameter and the combo box
    parameters.fixed_mask, parameters.moving_mask = structures, data["moving_segmentation"]
    ui.fixedMaskSelector.setCurrentNode(structures)
    ui.movingMaskSelector.setCurrentNode(data["moving_segmentation"])
    ui.fixedMaskSegmentSelector.setSelectedSegmentIDs([segment_id[("fixed structures", "prostate")]])
    ui.movingMaskSegmentSelector.setSelectedSegmentIDs([segment_id[("moving gland", "other")]])
    parameters.method = "deformable"
    ui.applyButton.click()
    command = ui.logTextEdit.toPlainText().splitlines()[0]
    assert " --fixed-mask " in command and " --moving-mask " in command
    work = widget.job.work_dir
    fixed_mask = slicer.util.arrayFromVolume(read_label_map(work / "fixed_mask.nrrd"))
    moving_mask = slicer.util.arrayFromVolume(read_label_map(work / "moving_mask.nrrd"))
    np.testing.assert_array_equal(fixed_mask > 0, gland)
    np.testing.assert_array_equal(moving_mask > 0, corner_box(moving_mask.shape))
    ui.applyButton.click()  # Cancel
    assert widget.job is None


def test_apply_runs_in_the_background_and_shows_the_results(panel):
    widget, data, app = panel
    scene, ui, parameters = data["scene"], widget.ui, widget._parameterNode
    output_volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
    parameters.method, parameters.transform_family = "affine", "rigid"
    parameters.levels, parameters.iterations = "2, 1", "20, 10"
    parameters.fixed_labels, parameters.moving_labels = data["fixed_segmentation"], data["moving_segmentation"]
    parameters.output_volume = output_volume

    ui.applyButton.click()
    # Apply returned while the child runs: the button now cancels, the timer polls, the cursor is back
    assert widget.job is not None and widget.job.process.poll() is None
    assert ui.applyButton.text == "Cancel" and ui.applyButton.enabled and widget.timer.active
    assert app.override_cursors == []
    command = ui.logTextEdit.toPlainText().splitlines()[0]
    assert command.startswith(f"running: {app.slicerHome}/bin/PythonSlicer -m RegSegLib.cli register ")
    assert "--transform rigid" in command and "--levels 2.0,1.0 --iterations 20,10" in command

    values = []
    run_until_idle(widget, condition=lambda: values.append(ui.progressBar.value()) and False)
    assert widget.job is None and not widget.timer.active
    assert ui.applyButton.text == "Apply" and ui.applyButton.enabled
    assert ui.statusLabel.text == "Done" and ui.progressBar.value() == 100 and app.errors == []
    assert app.processed_events == 0  # the panel never spins the event loop inside a slot (no re-entrancy)
    assert values == sorted(values) and len(set(values)) > 3
    assert "done in" in ui.logTextEdit.toPlainText()
    assert "Result transform: moving MR to fixed MR (affine)" in ui.logTextEdit.toPlainText()
    transform = scene.GetFirstNodeByName("moving MR to fixed MR (affine)")
    assert transform.IsA("vtkMRMLLinearTransformNode")
    assert parameters.output_transform is None  # the next Apply creates its own node
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformFromParent(matrix)
    rotation = numpy_matrix(matrix)[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)  # rigid, as chosen
    assert np.abs(numpy_matrix(matrix) - np.eye(4)).max() > 1e-3
    assert slicer.util.arrayFromVolume(output_volume).shape == slicer.util.arrayFromVolume(data["fixed"]).shape
    assert np.abs(node_ijk_to_ras(output_volume) - node_ijk_to_ras(data["fixed"])).max() < 1e-6
    assert app.layers == [{"background": data["fixed"], "foreground": output_volume, "foregroundOpacity": 0.5}]
    table = parameters.output_table.GetTable()
    assert table.GetValue(0, 0).ToString() == "prostate" and 0.0 < table.GetValue(0, 2).ToDouble() <= 1.0

    # then elastic, as users go on: a second result node, a dense one, and the same table updated
    parameters.method, parameters.deformable_iterations = "deformable", "4, 0"
    ui.applyButton.click()
    run_until_idle(widget)
    assert app.errors == [] and ui.statusLabel.text == "Done"
    dense = scene.GetFirstNodeByName("moving MR to fixed MR (deformable)")
    assert dense is not None and not dense.IsLinear() and transform.GetScene() is scene
    assert parameters.output_table.GetTable() is table and table.GetNumberOfRows() == 2


def test_cancel_stops_the_child_and_leaves_the_scene_as_it_was(panel):
    widget, data, _ = panel
    scene, ui, parameters = data["scene"], widget.ui, widget._parameterNode
    parameters.method = "deformable"
    before = scene_state(scene)
    ui.applyButton.click()
    child = widget.job.process.process
    run_until_idle(widget, condition=lambda: ui.progressBar.value() >= 2)
    assert widget.timer.active, "the registration ended before it could be cancelled"
    ui.applyButton.click()  # the button says Cancel
    assert child.poll() is not None
    assert widget.job is None and not widget.timer.active
    assert ui.applyButton.text == "Apply" and ui.statusLabel.text == "Cancelled"
    assert parameters.output_transform is None and scene_state(scene) == before


def test_closing_the_scene_cancels_a_running_registration(panel):
    widget, data, _ = panel
    widget._parameterNode.method = "deformable"
    widget.ui.applyButton.click()
    child = widget.job.process.process
    data["scene"].Clear(0)
    assert child.poll() is not None and widget.job is None and not widget.timer.active
    assert widget.ui.applyButton.text == "Apply"
    # the panel has a new parameter node in the emptied scene, with nothing to register
    assert widget._parameterNode is not None and widget._parameterNode.fixed_volume is None
    assert not widget.ui.applyButton.enabled


def test_a_failing_registration_shows_the_child_message_naming_the_node(panel):
    widget, data, app = panel
    fixed = data["fixed"]
    constant = add_volume(data["scene"], "empty volume", np.zeros((20, 21, 22), np.float32), node_ijk_to_ras(fixed))
    widget._parameterNode.moving_volume = constant
    widget.ui.applyButton.click()
    run_until_idle(widget)
    assert len(app.errors) == 1 and app.errors[0].startswith("Registration failed: ")
    assert "moving volume 'empty volume'" in app.errors[0] and "is constant" in app.errors[0]
    assert "non-zero exit status" not in app.errors[0]
    assert widget.ui.statusLabel.text == "Failed" and widget.ui.applyButton.text == "Apply"
    assert widget._parameterNode.output_transform is None


def test_a_bad_advanced_setting_is_shown_and_nothing_starts(panel):
    widget, data, app = panel
    widget._parameterNode.levels = "4,x"
    before = scene_state(data["scene"])
    with pytest.raises(ValueError):  # Slicer shows the message box, then PythonQt logs the exception
        widget.ui.applyButton.click()
    assert app.errors == ["Registration could not start.\n\nThe pyramid levels must be comma-separated numbers, got '4,x'."]
    assert widget.job is None and not widget.timer.active and app.override_cursors == []
    assert widget.ui.applyButton.text == "Apply" and scene_state(data["scene"]) == before


def test_the_in_slicer_self_test_passes_on_a_real_scene(shared_data, monkeypatch):
    """RegSegRegistrationTest (what Slicer's ctest runs), with a prostate MR volume in place of the MRHead download."""
    data = prostate_scene(shared_data)
    monkeypatch.setattr(slicer, "mrmlScene", data["scene"], raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    fixed_array, fixed_matrix = slicer.util.arrayFromVolume(data["fixed"]).copy(), node_ijk_to_ras(data["fixed"])
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")

        class LocalSelfTest(module.RegSegRegistrationTest):
            def fixed_volume(self):
                return add_volume(slicer.mrmlScene, "prostate MR", fixed_array, fixed_matrix)

        test = LocalSelfTest()
        test.runTest()
    assert data["scene"].GetFirstNodeByName("prostate MR shifted") is not None


def test_without_an_output_volume_the_moving_volume_goes_under_the_result(panel):
    widget, data, app = panel
    scene, ui, parameters = data["scene"], widget.ui, widget._parameterNode
    parameters.transform_family, parameters.levels, parameters.iterations = "rigid", "2", "5"
    assert parameters.output_volume is None
    ui.applyButton.click()
    run_until_idle(widget)
    assert app.errors == []
    transform = scene.GetFirstNodeByName("moving MR to fixed MR (affine)")
    assert data["moving"].GetParentTransformNode() is transform
    assert ui.statusLabel.text == "Done: 'moving MR' is now under the transform 'moving MR to fixed MR (affine)'"
    assert app.layers == [{"background": data["fixed"], "foreground": data["moving"], "foregroundOpacity": 0.5}]


def test_install_questions_come_without_a_busy_cursor(panel, monkeypatch):
    """The dependency check may ask to install torch or packages: its dialogs must not sit under a wait cursor."""
    widget, _, app = panel
    from RegSegSlicerLib import dependencies

    cursors_when_asked = []

    def ensure_dependencies(interactive=True):
        cursors_when_asked.append(list(app.override_cursors))
        raise dependencies.DependencyError("RegSeg's Python packages were not installed: nibabel>=5.0")  # declined

    monkeypatch.setattr(dependencies, "ensure_dependencies", ensure_dependencies)
    with pytest.raises(dependencies.DependencyError):
        widget.ui.applyButton.click()
    assert cursors_when_asked == [[]]
    assert app.errors == ["Registration could not start.\n\nRegSeg's Python packages were not installed: nibabel>=5.0"]
    assert widget.job is None and widget.ui.applyButton.text == "Apply" and app.override_cursors == []


@pytest.mark.parametrize("step", ["the job's result import", "the panel's result display"])
def test_a_key_error_after_the_child_ends_in_a_clean_state(panel, monkeypatch, step):
    """Defect 8: a KeyError in the result import (metrics without per-label Dice) left the panel in Cancel, the
    timer firing, the job importing and its temporary folder in place; the panel's own result handling likewise."""
    widget, data, app = panel

    def per_label_dice(*args):
        return {"mean": 0.8}["per_label"]

    from RegSegSlicerLib.registration import RegistrationJob

    # a child that succeeds at once (regseg --version), then the step raising
    monkeypatch.setattr(RegistrationJob, "child_arguments", lambda self, files, output_dir: ["--version"])
    if step == "the job's result import":
        monkeypatch.setattr(RegistrationJob, "import_results", per_label_dice)
    else:
        monkeypatch.setattr(RegistrationJob, "import_results", lambda self, folder: "outputs")
        monkeypatch.setattr(widget, "show_results", per_label_dice)
    before = scene_state(data["scene"])
    widget.ui.applyButton.click()
    job, work_dir = widget.job, widget.job.work_dir
    assert work_dir.is_dir()
    run_until_idle(widget)  # a tick raising would fail here
    assert widget.job is None and not widget.timer.active
    assert widget.ui.applyButton.text == "Apply" and widget.ui.applyButton.enabled
    assert job.finished and not work_dir.exists()
    assert len(app.errors) == 1 and app.errors[0].startswith("Registration failed: ")
    assert "KeyError" in app.errors[0] and "per_label" in app.errors[0]
    assert widget.ui.statusLabel.text == "Failed" and "KeyError" in widget.ui.logTextEdit.toPlainText()
    if step == "the job's result import":
        assert job.state.value == "failed" and scene_state(data["scene"]) == before


def test_an_error_while_following_the_child_cancels_it_and_ends_in_a_clean_state(panel, monkeypatch):
    widget, _, app = panel
    widget._parameterNode.method = "deformable"
    widget.ui.applyButton.click()
    job = widget.job
    child, work_dir = job.process.process, job.work_dir

    failures, read = [OSError("the pipe broke")], job.process.poll

    def poll():  # one tick's read fails; killing the child reads it again
        if failures:
            raise failures.pop()
        return read()

    monkeypatch.setattr(job.process, "poll", poll)
    widget.timer.fire()
    assert child.poll() is not None  # killed
    assert widget.job is None and not widget.timer.active and widget.ui.applyButton.text == "Apply"
    assert job.state.value == "cancelled" and not work_dir.exists()
    assert app.errors == [
        "Registration failed: unexpected error while running (OSError: the pipe broke); the Python console has the details."
    ]
