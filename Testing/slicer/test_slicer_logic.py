"""RegSegRegistrationLogic on a real MRML scene (``slicer-core``), with the child process really running RegSegLib.

Inputs are two prostate MR volumes of ../shared/data (downsampled to 32x32x30), placed in the scene with
non-trivial geometry: the fixed volume stored LPS-ordered (i along L, j along P), the moving volume oblique.
One affine and one deformable run (with a segmentation mask and segmentation labels) are shared by the tests.
A small deformable run with every advanced setting checks that they reach the engine. Masks from segmentations
under parent transforms, output nodes reused across runs, scene save and reopen, and job failures are checked on
the same data.

Geometry error = largest distance between corresponding points (grid corners, test points), in mm.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slicer_standins import MODULE_FOLDER, import_file, require_mrml, slicer_module_standins

slicer = require_mrml()
import vtk  # noqa: E402

from RegSegLib import geometry  # noqa: E402
from RegSegLib.io.transforms import read_transform  # noqa: E402
from RegSegLib.io.volumes import read_volume  # noqa: E402
from RegSegLib.transforms import AffineTransform, resample  # noqa: E402
from RegSegLib.volume import Volume  # noqa: E402
from slicer_scene import (  # noqa: E402
    add_linear_transform,
    add_segmentation,
    add_volume,
    centroid_mm,
    corner_error_mm,
    corners,
    dice,
    image_array,
    inner_points,
    mask_seen_from,
    node_ijk_to_ras,
    numpy_matrix,
    prostate_scene,
    rigid,
    save_and_reopen_bundle,
    scene_state,
    vtk_matrix,
)

TOLERANCE_MM = 0.01
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


# ------------------------------------------------------------------------------------------------ set-up


@pytest.fixture(scope="module")
def module():
    """RegSegRegistration.py imported with stand-ins for Slicer's Qt-side modules, and RegSegSlicerLib."""
    with slicer_module_standins():
        registration_module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        from RegSegSlicerLib import jobs, nodes, registration

        yield types_namespace(registration_module, jobs, nodes, registration)


def types_namespace(registration_module, jobs, nodes, registration):
    class Namespace:
        pass

    namespace = Namespace()
    namespace.module, namespace.jobs, namespace.nodes, namespace.registration = registration_module, jobs, nodes, registration
    return namespace


@pytest.fixture(scope="module")
def prostate(shared_data, module):
    """A scene with the fixed (LPS-stored) and moving (oblique) MR volumes and their gland segmentations."""
    scene_data = prostate_scene(shared_data)
    slicer.mrmlScene = scene_data["scene"]
    yield scene_data
    slicer.mrmlScene = None


def run(module, prostate, result_dir: Path, **options):
    logic = module.module.RegSegRegistrationLogic()
    progress, log = [], []
    outputs = logic.register(
        prostate["fixed"],
        prostate["moving"],
        scene=prostate["scene"],
        on_progress=lambda f, m: progress.append(f),
        on_log=log.append,
        python=None,
        env=module_env(),
        result_dir=str(result_dir),
        **options,
    )
    return outputs, progress, log


def module_env() -> dict[str, str]:
    from RegSegSlicerLib.paths import child_environment

    return child_environment(CHILD_ENV)


@pytest.fixture(scope="module")
def affine_run(module, prostate, tmp_path_factory):
    scene = prostate["scene"]
    output_volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped (affine)")
    result_dir = tmp_path_factory.mktemp("affine") / "result"
    outputs, progress, log = run(module, prostate, result_dir, method="affine", output_volume=output_volume)
    return outputs, progress, log, result_dir


@pytest.fixture(scope="module")
def deformable_run(module, prostate, tmp_path_factory):
    scene = prostate["scene"]
    result_dir = tmp_path_factory.mktemp("deformable") / "result"
    outputs, progress, log = run(
        module,
        prostate,
        result_dir,
        method="deformable",
        fixed_mask=prostate["fixed_segmentation"],
        fixed_labels=prostate["fixed_segmentation"],
        moving_labels=prostate["moving_segmentation"],
        output_volume=scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped (deformable)"),
    )
    return outputs, progress, log, result_dir


# ------------------------------------------------------------------------------------------------ affine


def test_affine_result_is_a_linear_node_with_regseg_matrix(affine_run, prostate):
    outputs, progress, log, result_dir = affine_run
    node = outputs.transform_node
    assert node.IsA("vtkMRMLLinearTransformNode") and node.IsLinear()
    assert node.GetScene() is prostate["scene"]
    regseg = read_transform(result_dir / "transform.h5")
    assert isinstance(regseg, AffineTransform)
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformFromParent(matrix)
    np.testing.assert_allclose(numpy_matrix(matrix), regseg.matrix, atol=1e-6)
    fixed = prostate["fixed"]
    shape = slicer.util.arrayFromVolume(fixed).shape
    points = geometry.transform_points(node_ijk_to_ras(fixed), corners(shape))
    slicer_points = np.array([node.GetTransformFromParent().TransformPoint(tuple(p)) for p in points])
    assert np.abs(slicer_points - geometry.transform_points(regseg.matrix, points)).max() < TOLERANCE_MM
    # the registration did something, and progress arrived in order up to the end
    assert np.abs(regseg.matrix - np.eye(4)).max() > 1e-3
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 5
    assert any(line.startswith("running: ") for line in log)


def test_affine_output_volume_is_regseg_warped_image_on_the_fixed_grid(affine_run, prostate):
    outputs, _, _, result_dir = affine_run
    fixed = prostate["fixed"]
    warped = read_volume(result_dir / "warped.nii.gz")
    array = slicer.util.arrayFromVolume(outputs.volume_node)
    assert array.shape == slicer.util.arrayFromVolume(fixed).shape
    # round trip fixed node -> NRRD -> RegSegLib -> NIfTI -> node: the grid is the fixed node's own
    assert corner_error_mm(node_ijk_to_ras(outputs.volume_node), node_ijk_to_ras(fixed), array.shape) < TOLERANCE_MM
    assert corner_error_mm(warped.ijk_to_ras, node_ijk_to_ras(fixed), array.shape) < TOLERANCE_MM
    np.testing.assert_allclose(array, warped.data[0].numpy(), atol=1e-4)


def test_moving_volume_hardened_under_the_result_matches_regseg_warped_image(affine_run, prostate):
    outputs, _, _, result_dir = affine_run
    scene, fixed, moving = prostate["scene"], prostate["fixed"], prostate["moving"]
    copy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moving copy")
    copy.SetIJKToRASMatrix(vtk_matrix(node_ijk_to_ras(moving)))
    slicer.util.updateVolumeFromArray(copy, slicer.util.arrayFromVolume(moving).copy())
    copy.SetAndObserveTransformNodeID(outputs.transform_node.GetID())
    copy.HardenTransform()
    affine = read_transform(result_dir / "transform.h5").matrix
    hardened = node_ijk_to_ras(copy)
    shape = slicer.util.arrayFromVolume(moving).shape
    assert corner_error_mm(hardened, np.linalg.inv(affine) @ node_ijk_to_ras(moving), shape) < TOLERANCE_MM
    # the hardened moving volume, sampled on the fixed grid without any transform, is RegSeg's warped image
    hardened_volume = Volume(torch.as_tensor(slicer.util.arrayFromVolume(copy).astype(np.float32))[None], hardened)
    fixed_grid = Volume(torch.zeros((1,) + slicer.util.arrayFromVolume(fixed).shape), node_ijk_to_ras(fixed))
    ours = resample(hardened_volume, fixed_grid, None).data[0].numpy()
    warped = read_volume(result_dir / "warped.nii.gz").data[0].numpy()
    moving_range = float(np.ptp(slicer.util.arrayFromVolume(moving)))
    assert np.abs(ours - warped).max() < 1e-3 * moving_range
    scene.RemoveNode(copy)


def test_affine_registration_improves_similarity_on_lps_stored_fixed(affine_run):
    similarity = affine_run[0].metrics["similarity"]
    assert similarity["after"] > similarity["before"]


# ------------------------------------------------------------------------------------------------ deformable


def test_dense_result_loads_as_grid_transform_matching_regseg(deformable_run, prostate, module):
    outputs, _, _, result_dir = deformable_run
    node = outputs.transform_node
    assert not node.IsLinear()
    grids = module.nodes.grid_parts(node.GetTransformFromParent())
    assert len(grids) == 1 and grids[0].GetInterpolationModeAsString() == "Linear"
    regseg = read_transform(result_dir / "transform.h5")
    field = regseg.transforms[-1]
    assert float(field.field.abs().max()) > 0.05
    assert node.GetAttribute(module.nodes.GRID_INTERPOLATION_ATTRIBUTE) == "linear"
    points = inner_points(prostate["fixed"], 200, seed=3)
    ours = regseg.transform_points(torch.as_tensor(points)).numpy()
    theirs = np.array([node.GetTransformFromParent().TransformPoint(tuple(p)) for p in points])
    assert np.abs(theirs - ours).max() < TOLERANCE_MM
    # the points really move (a node holding no displacement would be far off)
    assert np.linalg.norm(ours - points, axis=1).max() > 1.0


def test_affine_run_from_a_dense_initial_transform_keeps_it_in_the_result(deformable_run, prostate, module, tmp_path):
    """The result of an affine run that starts from a grid transform is that grid followed by the affine."""
    initial = deformable_run[0].transform_node
    outputs, _, _ = run(
        module,
        prostate,
        tmp_path / "result",
        method="affine",
        transform_family="rigid",
        initial_transform=initial,
        levels=[2, 1],
        iterations=[20, 10],
    )
    node = outputs.transform_node
    assert not node.IsLinear() and not node.IsA("vtkMRMLLinearTransformNode")
    whole = read_transform(tmp_path / "result" / "transform.h5")
    affine_only = read_transform(tmp_path / "result" / "affine.tfm")
    points = inner_points(prostate["fixed"], 100, seed=5)
    theirs = np.array([node.GetTransformFromParent().TransformPoint(tuple(p)) for p in points])
    assert np.abs(theirs - whole.transform_points(torch.as_tensor(points)).numpy()).max() < TOLERANCE_MM
    assert np.abs(theirs - geometry.transform_points(affine_only.matrix, points)).max() > 0.05
    linear = prostate["scene"].AddNewNodeByClass("vtkMRMLLinearTransformNode", "linear output")
    with pytest.raises(ValueError, match=r"The initial transform '.*' is not linear, and neither is the result"):
        module.registration.RegistrationRequest(
            prostate["fixed"], prostate["moving"], initial_transform=initial, output_transform=linear
        ).validate()
    prostate["scene"].RemoveNode(linear)
    prostate["scene"].RemoveNode(node)


def test_dense_run_with_segmentation_labels_fills_the_dice_table(deformable_run):
    outputs, _, _, _ = deformable_run
    table = outputs.table_node.GetTable()
    assert table.GetNumberOfRows() == 2
    assert table.GetValue(0, 0).ToString() == "prostate"
    dice = outputs.metrics["dice"]
    after = float(table.GetValue(0, 2).ToDouble())
    assert after == pytest.approx(next(iter(dice["per_label"].values())), abs=1e-9)
    before = float(table.GetValue(0, 1).ToDouble())
    assert before == pytest.approx(next(iter(dice["before_per_label"].values())), abs=1e-9)
    # the moving segmentation lists "other" (a corner box) first: pairing by position would give Dice near 0
    assert 0.6 < before < after <= 1.0
    assert table.GetValue(1, 0).ToString() == "mean"


def test_dense_run_improves_the_gland_dice(deformable_run):
    """The fixed mask is the exact gland: the affine stage skips the pyramid levels where it holds too few voxels."""
    dice = deformable_run[0].metrics["dice"]
    assert next(iter(dice["per_label"].values())) > next(iter(dice["before_per_label"].values()))


@pytest.mark.parametrize("held", ["grid", "grid and matrix"])
def test_an_affine_result_replaces_the_grid_an_output_node_held(held, affine_run, deformable_run, prostate, module):
    """An output node reused from a deformable run holds a grid (or a composite): SetMatrixTransformFromParent alone
    refuses a matrix there and keeps the old transform."""
    nodes, scene = module.nodes, prostate["scene"]
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "reused output")
    nodes.load_transform_into(deformable_run[3] / "transform.h5", node)
    if held == "grid and matrix":
        node.ApplyTransformMatrix(vtk_matrix(rigid(5.0, "z", (1.0, 2.0, 3.0))))
    assert not node.IsLinear()
    affine_file = affine_run[3] / "affine.tfm"
    nodes.load_transform_into(affine_file, node)
    points = inner_points(prostate["fixed"], 100, seed=7)
    theirs = np.array([node.GetTransformFromParent().TransformPoint(tuple(p)) for p in points])
    assert np.abs(theirs - geometry.transform_points(read_transform(affine_file).matrix, points)).max() < TOLERANCE_MM
    assert node.IsLinear() and not nodes.grid_parts(node.GetTransformFromParent())
    # no longer a grid to restore after a scene reload
    assert node.GetAttribute(nodes.GRID_INTERPOLATION_ATTRIBUTE) is None
    scene.RemoveNode(node)


def test_linear_grid_interpolation_survives_saving_and_reopening_the_scene(deformable_run, prostate, module, tmp_path):
    """Transform files do not store the interpolation: Slicer reads grids back cubic. The module restores linear
    interpolation on the scene's EndImportEvent for the nodes RegSeg marked."""
    nodes = module.nodes
    transform_file = deformable_run[3] / "transform.h5"
    scene = slicer.vtkMRMLScene()
    nodes.load_transform_into(transform_file, scene.AddNewNodeByClass("vtkMRMLTransformNode", "RegSeg result"))
    scene.AddNewNodeByClass("vtkMRMLTransformNode", "not RegSeg's").SetAndObserveTransformFromParent(
        nodes.read_transform_file(transform_file).GetTransformFromParent()
    )
    restored = []
    reopened = save_and_reopen_bundle(
        scene, tmp_path / "observed", lambda caller, event: restored.append(nodes.restore_linear_grid_interpolation(caller))
    )
    assert restored == [1]
    node = reopened.GetFirstNodeByName("RegSeg result")
    grids = nodes.grid_parts(node.GetTransformFromParent())
    assert grids and all(grid.GetInterpolationModeAsString() == "Linear" for grid in grids)
    points = inner_points(prostate["fixed"], 200, seed=11)
    ours = read_transform(transform_file).transform_points(torch.as_tensor(points)).numpy()
    theirs = np.array([node.GetTransformFromParent().TransformPoint(tuple(p)) for p in points])
    assert np.abs(theirs - ours).max() < TOLERANCE_MM
    # unmarked grids keep Slicer's default
    other = nodes.grid_parts(reopened.GetFirstNodeByName("not RegSeg's").GetTransformFromParent())
    assert [grid.GetInterpolationModeAsString() for grid in other] == ["Cubic"] * len(other)
    # without the observer the grids come back cubic; the function mends them once
    plain = save_and_reopen_bundle(scene, tmp_path / "plain")
    grids = nodes.grid_parts(plain.GetFirstNodeByName("RegSeg result").GetTransformFromParent())
    assert [grid.GetInterpolationModeAsString() for grid in grids] == ["Cubic"] * len(grids)
    assert nodes.restore_linear_grid_interpolation(plain) == 1
    assert nodes.restore_linear_grid_interpolation(plain) == 0
    assert all(grid.GetInterpolationModeAsString() == "Linear" for grid in grids)


def test_segmentation_mask_becomes_the_right_label_map(prostate, module):
    fixed = prostate["fixed"]
    label_map = module.nodes.as_label_map(prostate["fixed_segmentation"], fixed, ["prostate"], "fixed mask")
    assert label_map.GetScene() is None
    array = slicer.util.arrayFromVolume(label_map)
    assert array.shape == prostate["fixed_gland"].shape
    np.testing.assert_array_equal(array > 0, prostate["fixed_gland"] > 0)
    assert corner_error_mm(node_ijk_to_ras(label_map), node_ijk_to_ras(fixed), array.shape) < TOLERANCE_MM
    with pytest.raises(ValueError, match="has no segment 'bladder'"):
        module.nodes.as_label_map(prostate["fixed_segmentation"], fixed, ["bladder"], "fixed mask")
    moving_grid_map = module.nodes.as_label_map(prostate["moving_segmentation"], prostate["moving"], None, "mask")
    with pytest.raises(ValueError, match="is not on the grid of 'fixed MR'"):
        module.nodes.as_label_map(moving_grid_map, fixed, None, "fixed mask")


def test_a_closed_surface_segmentation_becomes_a_label_map_without_changing_the_users_node(prostate, module):
    """Segmentations loaded from models, STL or RT structure sets hold closed surfaces only."""
    scene, fixed = prostate["scene"], prostate["fixed"]
    surfaces = add_segmentation(scene, "gland surface", "prostate", prostate["fixed_gland"], node_ijk_to_ras(fixed))
    assert surfaces.CreateClosedSurfaceRepresentation()
    surfaces.SetSourceRepresentationToClosedSurface()
    surfaces.RemoveBinaryLabelmapRepresentation()
    labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    assert not surfaces.GetSegmentation().ContainsRepresentation(labelmap_name)
    modified = surfaces.GetMTime()
    label_map = module.nodes.as_label_map(surfaces, fixed, ["prostate"], "fixed mask")
    mask, gland = slicer.util.arrayFromVolume(label_map) > 0, prostate["fixed_gland"] > 0
    assert 2.0 * (mask & gland).sum() / (mask.sum() + gland.sum()) > 0.85
    assert corner_error_mm(node_ijk_to_ras(label_map), node_ijk_to_ras(fixed), mask.shape) < TOLERANCE_MM
    assert surfaces.GetMTime() == modified
    assert not surfaces.GetSegmentation().ContainsRepresentation(labelmap_name)
    scene.RemoveNode(surfaces)


def slicer_merged_labelmap(segmentation, volume) -> np.ndarray:
    """What Slicer's own GenerateMergedLabelmapInReferenceGeometry gives for all segments of a segmentation."""
    merged, ids = slicer.vtkOrientedImageData(), vtk.vtkStringArray()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation, volume, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged
    )
    return image_array(merged)


def test_a_mask_for_a_volume_under_a_transform_lies_on_the_volumes_own_grid(prostate, module):
    """The volume's file holds its own grid (parent transform not applied): the mask must lie on that grid and cover
    the voxels where the segment is relative to the volume."""
    scene, gland = prostate["scene"], prostate["fixed_gland"] > 0
    matrix = node_ijk_to_ras(prostate["fixed"])
    translation = np.eye(4)
    translation[:3, 3] = matrix[:3, :3] @ np.array([6.0, -5.0, 3.0])  # whole voxels along i, j, k
    parent = add_linear_transform(scene, "volume placement", translation)
    volume = add_volume(scene, "fixed, moved", slicer.util.arrayFromVolume(prostate["fixed"]).copy(), matrix)
    volume.SetAndObserveTransformNodeID(parent.GetID())
    label_map = module.nodes.as_label_map(prostate["fixed_segmentation"], volume, ["prostate"], "fixed mask")
    mask = slicer.util.arrayFromVolume(label_map) > 0
    assert corner_error_mm(node_ijk_to_ras(label_map), matrix, mask.shape) < TOLERANCE_MM
    # voxel ijk of the volume lies where voxel ijk + (6, -5, 3) of the segmentation does
    expected = mask_seen_from(gland, matrix, np.eye(4), mask.shape, matrix, translation)
    assert expected.sum() == gland.sum()
    np.testing.assert_array_equal(mask, expected)
    shift_mm = centroid_mm(mask, matrix) - centroid_mm(gland, matrix)
    assert np.abs(shift_mm + translation[:3, 3]).max() < TOLERANCE_MM and np.linalg.norm(shift_mm) > 5.0
    np.testing.assert_array_equal(slicer_merged_labelmap(prostate["fixed_segmentation"], volume) > 0, mask)
    # a label map volume on the same voxel grid but not under the volume's transform lies elsewhere: refused
    label_volume = add_volume(scene, "gland labels", gland.astype(np.int16), matrix)
    with pytest.raises(ValueError, match="not under the same transform"):
        module.nodes.as_label_map(label_volume, volume, None, "fixed mask")
    label_volume.SetAndObserveTransformNodeID(parent.GetID())
    assert module.nodes.as_label_map(label_volume, volume, None, "fixed mask") is label_volume
    for node in (label_volume, volume, parent):
        scene.RemoveNode(node)


@pytest.mark.parametrize("representation", ["binary labelmap", "closed surface"])
def test_a_segmentation_under_a_transform_gives_the_mask_where_the_segment_is(representation, prostate, module):
    scene, fixed, gland = prostate["scene"], prostate["fixed"], prostate["fixed_gland"] > 0
    matrix = node_ijk_to_ras(fixed)
    centre = centroid_mm(gland, matrix)
    placement = rigid(12.0, "z", (4.0, -3.0, 2.5), centre)  # the gland stays inside the 26 mm field of view
    segmentation = add_segmentation(scene, "gland, moved", "prostate", prostate["fixed_gland"], matrix)
    if representation == "closed surface":
        assert segmentation.CreateClosedSurfaceRepresentation()
        segmentation.SetSourceRepresentationToClosedSurface()
        segmentation.RemoveBinaryLabelmapRepresentation()
    parent = add_linear_transform(scene, "segmentation placement", placement)
    segmentation.SetAndObserveTransformNodeID(parent.GetID())
    label_map = module.nodes.as_label_map(segmentation, fixed, None, "fixed mask")
    mask = slicer.util.arrayFromVolume(label_map) > 0
    assert corner_error_mm(node_ijk_to_ras(label_map), matrix, mask.shape) < TOLERANCE_MM
    expected = mask_seen_from(gland, matrix, placement, mask.shape, matrix, np.eye(4))
    moved_centre = geometry.transform_points(placement, centre[None])[0]
    half_voxel = 0.4
    assert abs(int(expected.sum()) - int(gland.sum())) < 0.01 * gland.sum()
    assert np.linalg.norm(centroid_mm(expected, matrix) - moved_centre) < half_voxel
    assert np.linalg.norm(centroid_mm(mask, matrix) - moved_centre) < half_voxel
    assert dice(mask, expected) > (0.99 if representation == "binary labelmap" else 0.9)
    assert dice(mask, gland) < 0.5  # where the segment would be without its parent transform
    if representation == "binary labelmap":
        np.testing.assert_array_equal(slicer_merged_labelmap(segmentation, fixed) > 0, mask)
    scene.RemoveNode(segmentation)
    scene.RemoveNode(parent)


# ------------------------------------------------------------------------------------------------ advanced settings


def test_advanced_settings_reach_the_engine(prostate, module, tmp_path):
    options = dict(
        method="deformable",
        levels=[2, 1],
        iterations=[20, 10],
        deformable_iterations=[0, 0],
        regularisation=2.0,
        preset="large-motion",
        spacing_mm=4.0,
    )
    outputs, progress, log = run(module, prostate, tmp_path / "result", **options)
    settings = outputs.metrics["settings"]
    assert (settings["method"], settings["preset"]) == ("deformable", "large-motion")
    assert (settings["affine"]["levels"], settings["affine"]["iterations"]) == ([2.0, 1.0], [20, 10])
    deformable = settings["deformable"]
    assert (deformable["adam_iterations"], deformable["fine_iterations"]) == (0, 0)
    assert (deformable["regularisation"], deformable["spacing_mm"]) == (2.0, 4.0)
    assert len(deformable["coarse_levels"]) == 2  # the large-motion preset searches twice
    # the engine ran exactly the settings the Slicer request validated, with the metric auto chose
    request = module.registration.RegistrationRequest(prostate["fixed"], prostate["moving"], **options)
    assert request.engine_settings().metric == "auto" and outputs.metrics["metric_chosen"].startswith("auto")
    chosen = request.engine_settings().with_stage_metrics(settings["affine"]["metric"], deformable["similarity"])
    validated = json.loads(json.dumps(chosen.as_dict()))
    # the search shrink is resolved on the working grid (4 mm: a small grid, searched at half resolution)
    assert (validated["deformable"].pop("search_shrink"), settings["deformable"].pop("search_shrink")) == (None, 2)
    assert settings == validated
    assert outputs.warnings == outputs.metrics["warnings"]
    # a deformable stage the guard undid (a discrete search alone on a 7x7x6 grid) leaves the affine result
    assert bool(outputs.transform_node.IsLinear()) == bool(outputs.warnings) and progress[-1] == 1.0
    command = next(line for line in log if line.startswith("running: "))
    assert "--levels 2.0,1.0 --iterations 20,10 --deformable-iterations 0,0" in command
    prostate["scene"].RemoveNode(outputs.transform_node)


# ------------------------------------------------------------------------------------------------ cancel, failure


def test_cancel_ends_the_child_within_2_s_and_leaves_the_scene_as_it_was(prostate, module):
    scene = prostate["scene"]
    registration, JobState = module.registration, module.jobs.JobState
    before = scene_state(scene)
    started = threading.Event()
    states = []
    request = registration.RegistrationRequest(prostate["fixed"], prostate["moving"], method="deformable")
    job = module.module.RegSegRegistrationLogic().start_registration(
        request,
        scene=scene,
        on_progress=lambda f, m: started.set() if f > 0.02 else None,
        on_state=states.append,
        env=module_env(),
    )
    while not started.is_set() and job.process.poll() is None:
        job.poll()
        started.wait(0.05)
    assert job.state is JobState.RUNNING, job.error
    child = job.process.process
    canceller = threading.Thread(target=job.cancel)
    canceller.start()
    canceller.join(timeout=2.0)
    assert not canceller.is_alive()
    assert child.poll() is not None
    assert job.state is JobState.CANCELLED and job.poll()
    assert states == [JobState.STARTING, JobState.RUNNING, JobState.CANCELLED]
    assert not job.work_dir.exists()
    assert scene_state(scene) == before


def test_a_failing_child_reports_its_error_line_with_the_node_name(prostate, module):
    scene = prostate["scene"]
    fixed = prostate["fixed"]
    constant = add_volume(scene, "empty volume", np.zeros((20, 21, 22), np.float32), node_ijk_to_ras(fixed))
    before = scene_state(scene)
    with pytest.raises(module.registration.RegistrationError) as raised:
        module.module.RegSegRegistrationLogic().register(fixed, constant, scene=scene, env=module_env())
    message = str(raised.value)
    assert "moving volume 'empty volume'" in message and "is constant" in message
    assert "non-zero exit status" not in message
    assert scene_state(scene) == before
    scene.RemoveNode(constant)


@pytest.mark.parametrize("failing_hook", ["export_inputs", "import_results"])
def test_any_exception_in_a_hook_fails_the_job_cleanly(failing_hook, module):
    """A KeyError (e.g. from a metrics.json without Dice per label) ends the job failed, its folder removed."""
    jobs = module.jobs
    JobState = jobs.JobState

    class Job(jobs.BackgroundJob):
        what = "test job"

        def validate(self) -> None:
            pass

        def export_inputs(self) -> dict:
            if failing_hook == "export_inputs":
                raise KeyError("fixed")
            return {}

        def child_arguments(self, files, output_dir) -> list:
            return ["--version"]

        def import_results(self, folder):
            raise KeyError("per_label")

    states, log = [], []
    job = Job(slicer.vtkMRMLScene(), None, env=module_env(), on_state=states.append, on_log=log.append)
    if failing_hook == "export_inputs":
        with pytest.raises(jobs.JobError, match=r"could not start the test job: KeyError 'fixed'"):
            job.start()
        assert states == [JobState.STARTING, JobState.FAILED]
    else:
        job.start()
        deadline = time.monotonic() + 60.0
        while not job.poll() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert states == [JobState.STARTING, JobState.RUNNING, JobState.IMPORTING, JobState.FAILED]
        assert job.error == "the results could not be loaded: KeyError 'per_label'"
    assert job.state is JobState.FAILED and job.poll() and job.finished
    assert not job.work_dir.exists()
    assert any(line.startswith("Traceback") for line in log)
    with pytest.raises(jobs.JobError):
        job.wait()


def test_impossible_requests_are_value_errors_before_anything_starts(prostate, module):
    logic = module.module.RegSegRegistrationLogic()
    fixed, moving = prostate["fixed"], prostate["moving"]
    with pytest.raises(ValueError, match="Select a moving volume"):
        logic.start_registration(module.registration.RegistrationRequest(fixed, None), scene=prostate["scene"])
    with pytest.raises(ValueError, match="same node"):
        logic.start_registration(module.registration.RegistrationRequest(fixed, fixed), scene=prostate["scene"])
    with pytest.raises(ValueError, match="is one of the inputs"):
        logic.start_registration(
            module.registration.RegistrationRequest(fixed, moving, output_volume=moving), scene=prostate["scene"]
        )
    linear = prostate["scene"].AddNewNodeByClass("vtkMRMLLinearTransformNode", "linear output")
    with pytest.raises(ValueError, match="not linear"):
        logic.start_registration(
            module.registration.RegistrationRequest(fixed, moving, method="deformable", output_transform=linear),
            scene=prostate["scene"],
        )
    prostate["scene"].RemoveNode(linear)


def test_a_result_that_cannot_be_read_changes_nothing_in_the_scene(affine_run, prostate, module, tmp_path):
    """A metrics.json without per-label Dice fails the import before any node is created or filled."""
    import json
    import shutil

    scene = prostate["scene"]
    folder = tmp_path / "result"
    shutil.copytree(affine_run[3], folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["dice"] = {"mean": 0.5}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    output_volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "never filled")
    request = module.registration.RegistrationRequest(prostate["fixed"], prostate["moving"], output_volume=output_volume)
    job = module.registration.RegistrationJob(scene, request, env=module_env())
    counts = {name: scene.GetNumberOfNodesByClass(name) for name in ("vtkMRMLTransformNode", "vtkMRMLTableNode")}
    with pytest.raises(KeyError, match="per_label"):
        job.import_results(folder)
    assert {name: scene.GetNumberOfNodesByClass(name) for name in counts} == counts
    assert output_volume.GetImageData() is None
    metrics["dice"] = {"per_label": {"1": 0.8}, "before_per_label": {"1": 0.5}, "mean": 0.8, "mean_before": 0.5}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    outputs = job.import_results(folder)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTransformNode") == counts["vtkMRMLTransformNode"] + 1
    assert outputs.transform_node.GetScene() is scene and outputs.transform_node.IsLinear()
    assert outputs.table_node.GetTable().GetValue(0, 2).ToDouble() == pytest.approx(0.8)
    assert output_volume.GetImageData() is not None
    scene.RemoveNode(outputs.transform_node)
    scene.RemoveNode(outputs.table_node)
    scene.RemoveNode(output_volume)
