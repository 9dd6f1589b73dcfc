"""The segmentation job of the Slicer side on a real MRML scene (``slicer-core``), with the child process really
running ``regseg segment`` and the shipped prostate MR gland model.

The input is a prostate MR volume of ../shared/data placed in the scene three ways: as stored, oblique (rotated 25
degrees) and flipped (a left-handed frame). The model sees the same voxels in each (the image is resampled on its
own grid's directions), so the segments must be the same arrays on each volume's own geometry.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from slicer_panel_standins import install_standin_application, open_panel, run_until_idle
from slicer_standins import register_segmentation_converters, require_mrml, slicer_module_standins

slicer = require_mrml()
register_segmentation_converters()  # as the Segmentations module does when Slicer starts

from slicer_scene import add_volume, node_ijk_to_ras  # noqa: E402
from RegSegLib.io.checks import read_image, read_labels  # noqa: E402

MODEL = "regseg-prostate-gland-mr"
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def segmentation():
    with slicer_module_standins():
        from RegSegSlicerLib import segmentation as module

        yield module


def placements(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """The volume's own IJK-to-RAS, an oblique one and a flipped one (same voxel sizes and centre)."""
    angle = np.radians(25.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    oblique, flipped = matrix.copy(), matrix.copy()
    oblique[:3, :3] = rotation @ matrix[:3, :3]
    flipped[:3, 0] = -matrix[:3, 0]
    return {"stored": matrix, "oblique": oblique, "flipped": flipped}


def exported_labels(node, reference) -> np.ndarray:
    """The segmentation node's segments as a label map on the reference volume's grid (Slicer's export)."""
    import vtk

    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    node.GetScene().AddNode(labelmap)
    ids = vtk.vtkStringArray()
    node.GetSegmentation().GetSegmentIDs(ids)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference)
    np.testing.assert_allclose(node_ijk_to_ras(labelmap), node_ijk_to_ras(reference), atol=1e-6)
    return slicer.util.arrayFromVolume(labelmap).copy()


def test_the_segmentation_job_keeps_each_volume_geometry_and_names_the_segment(segmentation, shared_data, tmp_path):
    image = read_image(str(shared_data / "prostate-mr-us" / "mr" / "case000022.nii.gz"))
    array = image.data[0].numpy()
    scene = slicer.vtkMRMLScene()
    results = {}
    for name, matrix in placements(image.ijk_to_ras).items():
        volume = add_volume(scene, f"MR {name}", array, matrix)
        request = segmentation.SegmentationRequest([volume], MODEL, device="cpu", mirroring=False)
        job = segmentation.SegmentationJob(scene, request, env=CHILD_ENV, result_dir=tmp_path / name)
        job.start()
        outputs = job.wait()
        node = outputs.segmentation_node
        assert node.GetName() == f"MR {name} segmentation" and node.GetScene() is scene
        segment = node.GetSegmentation().GetNthSegment(0)
        assert node.GetSegmentation().GetNumberOfSegments() == 1 and segment.GetName() == "prostate"
        results[name] = exported_labels(node, volume)
        written = read_labels(str(tmp_path / name / "labels.nii.gz"))
        np.testing.assert_allclose(written.ijk_to_ras, matrix, atol=1e-6)
        np.testing.assert_array_equal(results[name], written.data[0].numpy())
        assert outputs.metrics["segments"][0]["name"] == "prostate" and outputs.metrics["segments"][0]["volume_ml"] > 0.5
    assert results["stored"].sum() > 1000
    np.testing.assert_array_equal(results["oblique"], results["stored"])
    np.testing.assert_array_equal(results["flipped"], results["stored"])


def test_a_segmentation_request_is_checked_before_anything_runs(segmentation):
    scene = slicer.vtkMRMLScene()
    volume = add_volume(scene, "MR", np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), np.eye(4))
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "table")
    cases = [
        (segmentation.SegmentationRequest([], MODEL), "Select the volume to segment"),
        (segmentation.SegmentationRequest([volume, volume], MODEL), "selected twice"),
        (segmentation.SegmentationRequest([volume], " "), "Select a segmentation model"),
        (segmentation.SegmentationRequest([volume], MODEL, device="tpu"), "Unknown device 'tpu'"),
        (segmentation.SegmentationRequest([volume], MODEL, output_segmentation=table), "is not a segmentation node"),
    ]
    for request, message in cases:
        with pytest.raises(ValueError, match=message):
            request.validate()
    files = {"image0": "/w/t2.nrrd", "image1": "/w/adc.nrrd"}
    request = segmentation.SegmentationRequest([volume, volume], "model.pt", mirroring=False, largest_component=True)
    assert segmentation.command_arguments(request, files, "/w/out") == [
        "segment", "/w/t2.nrrd", "/w/adc.nrrd", "--model", "model.pt", "-o", "/w/out", "--device", "auto",
        "--no-mirroring", "--largest-component", "--progress", "lines",
    ]


def test_a_model_that_does_not_exist_fails_with_its_name_and_leaves_the_scene(segmentation, shared_data, tmp_path):
    image = read_image(str(shared_data / "prostate-mr-us" / "mr" / "case000022.nii.gz"))
    scene = slicer.vtkMRMLScene()
    volume = add_volume(scene, "MR", image.data[0].numpy(), image.ijk_to_ras)
    count = scene.GetNumberOfNodes()
    job = segmentation.SegmentationJob(scene, segmentation.SegmentationRequest([volume], str(tmp_path / "missing.pt")), env=CHILD_ENV)
    job.start()
    with pytest.raises(segmentation.SegmentationError, match="missing.pt"):
        job.wait()
    assert scene.GetNumberOfNodes() == count
    assert not Path(tmp_path / "missing.pt").exists()


@pytest.fixture
def panel(shared_data, tmp_path, monkeypatch):
    """The Segmentation panel on a scene with one prostate MR volume, in a stand-in application."""
    image = read_image(str(shared_data / "prostate-mr-us" / "mr" / "case000022.nii.gz"))
    scene = slicer.vtkMRMLScene()
    volume = add_volume(scene, "prostate MR", image.data[0].numpy(), image.ijk_to_ras)
    app = install_standin_application(monkeypatch, tmp_path, scene)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with open_panel("RegSegSegmentation.py", "RegSegSegmentationWidget") as (widget, _):
        yield widget, scene, volume, app


def test_the_segmentation_panel_segments_with_a_shipped_model_as_a_user_would(panel):
    widget, scene, volume, app = panel
    parameters, ui = widget._parameterNode, widget.ui
    assert parameters.input_volume is volume
    bound = dict(parameters.bound_widgets())
    assert len(bound) == len(parameters.parameter_names) and bound["mirroring"] is ui.mirroringCheckBox
    names = [row.name for row in widget._model_rows]
    assert MODEL in names and "regseg-prostate-gland-us" in names
    ui.modelComboBox.currentIndex = names.index(MODEL)
    assert "prostate-mr-us" in ui.modelInfoTextEdit.toPlainText()
    assert ui.applyButton.enabled and ui.applyButton.toolTip == "Segment the input volume"
    parameters.mirroring = False
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel"
    run_until_idle(widget)
    assert ui.applyButton.text == "Apply" and app.errors == []
    output = parameters.output_segmentation
    assert output is not None and output.GetSegmentation().GetNthSegment(0).GetName() == "prostate"
    assert ui.statusLabel.text.startswith("Done: prostate")
    parameters.input_volume = None
    assert not ui.applyButton.enabled and ui.applyButton.toolTip == "Select the volume to segment"


def test_the_registration_panel_offers_segmentation_guided_registration(shared_data, tmp_path, monkeypatch):
    scene = slicer.vtkMRMLScene()
    for name, folder in (("US", "us"), ("MR", "mr")):
        image = read_image(str(shared_data / "prostate-mr-us" / folder / "case000022.nii.gz"))
        add_volume(scene, name, image.data[0].numpy(), image.ijk_to_ras)
    install_standin_application(monkeypatch, tmp_path, scene)
    with open_panel("RegSegRegistration.py", "RegSegRegistrationWidget") as (widget, module):
        fixed_combo, moving_combo = widget.ui.fixedSegmenterComboBox, widget.ui.movingSegmenterComboBox
        items = [fixed_combo.itemText(i) for i in range(fixed_combo.count())]
        assert items[0] == module.NO_SEGMENTER and {MODEL, "regseg-prostate-gland-us"} <= set(items)
        assert widget.create_request().segment_with is None
        fixed_combo.currentIndex = items.index("regseg-prostate-gland-us")
        with pytest.raises(ValueError, match="a model for the fixed and for the moving volume"):
            widget.create_request()
        moving_combo.currentIndex = items.index(MODEL)
        request = widget.create_request()
        assert request.segment_with == ("regseg-prostate-gland-us", MODEL)
        request.validate()
