"""RegSegRegistrationLogic on a real MRML scene (``slicer-core``), with the child process really running RegSegLib.

Inputs are two prostate MR volumes of ../shared/data (downsampled to 32x32x30), placed in the scene with
non-trivial geometry: the fixed volume stored LPS-ordered (i along L, j along P), the moving volume oblique.
One affine and one deformable run (with a segmentation mask and segmentation labels) are shared by the tests.
A small deformable run with every advanced setting checks that they reach the engine.

Geometry error = largest distance between corresponding points (grid corners, test points), in mm.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import rotation_about
from slicer_standins import MODULE_FOLDER, import_file, register_segmentation_converters, slicer_module_standins

slicer = pytest.importorskip("slicer", reason="slicer-core (MRML without Qt) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package does not provide MRML classes", allow_module_level=True)
import vtk  # noqa: E402

from RegSegLib import geometry  # noqa: E402
from RegSegLib.io.transforms import read_transform  # noqa: E402
from RegSegLib.io.volumes import read_volume  # noqa: E402
from RegSegLib.transforms import AffineTransform, resample  # noqa: E402
from RegSegLib.volume import Volume  # noqa: E402

TOLERANCE_MM = 0.01
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


# ------------------------------------------------------------------------------------------------ set-up


@pytest.fixture(scope="module")
def module():
    """RegSegRegistration.py imported with stand-ins for Slicer's Qt-side modules, and RegSegSlicerLib."""
    with slicer_module_standins():
        registration_module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        from RegSegSlicerLib import nodes, registration

        yield types_namespace(registration_module, nodes, registration)


def types_namespace(registration_module, nodes, registration):
    class Namespace:
        pass

    namespace = Namespace()
    namespace.module, namespace.nodes, namespace.registration = registration_module, nodes, registration
    return namespace


def vtk_matrix(array: np.ndarray):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return numpy_matrix(matrix)


def corners(shape_kji) -> np.ndarray:
    k, j, i = (n - 1 for n in shape_kji)
    return np.array([[a, b, c] for a in (0, i) for b in (0, j) for c in (0, k)], dtype=np.float64)


def corner_error_mm(a: np.ndarray, b: np.ndarray, shape_kji) -> float:
    points = corners(shape_kji)
    return float(np.abs(geometry.transform_points(a, points) - geometry.transform_points(b, points)).max())


def downsampled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``[K, J, I]`` array and its RAS IJK-to-RAS, every second voxel."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = (data[..., 0] > 0.5).astype(np.uint8)
    data = data[::2, ::2, ::2]
    matrix = image.affine.copy()
    matrix[:3, :3] = matrix[:3, :3] @ np.diag([2.0, 2.0, 2.0])
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), matrix


def lps_stored(array: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with i along L and j along P (what DICOM and ITK files usually hold)."""
    k, j, i = array.shape
    flip = np.eye(4)
    flip[0, 0], flip[1, 1] = -1.0, -1.0
    flip[0, 3], flip[1, 3] = i - 1, j - 1
    return np.ascontiguousarray(array[:, ::-1, ::-1]), matrix @ flip


def oblique(matrix: np.ndarray, shape_kji, degrees=(8.0, -5.0, 4.0)) -> np.ndarray:
    """The grid rotated about its centre (the content turns with it)."""
    rotation = np.eye(4)
    rotation[:3, :3] = rotation_about("z", degrees[0]) @ rotation_about("y", degrees[1]) @ rotation_about("x", degrees[2])
    centre = geometry.transform_points(matrix, (np.array(shape_kji[::-1]) - 1) / 2.0)
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    return back @ rotation @ to_centre @ matrix


def add_volume(scene, name: str, array: np.ndarray, matrix: np.ndarray, label_map: bool = False):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label_map else "vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(vtk_matrix(matrix))
    slicer.util.updateVolumeFromArray(node, array)
    return node


def add_segmentation(scene, name: str, segment: str, label_array: np.ndarray, matrix: np.ndarray):
    """A segmentation node with one segment made from a label map (through Slicer's own import)."""
    label_map = slicer.vtkMRMLLabelMapVolumeNode()
    label_map.SetIJKToRASMatrix(vtk_matrix(matrix))
    slicer.util.updateVolumeFromArray(label_map, label_array.astype(np.uint8))
    scene.AddNode(label_map)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_map, segmentation)
    segmentation.GetSegmentation().GetNthSegment(0).SetName(segment)
    scene.RemoveNode(label_map)
    return segmentation


@pytest.fixture(scope="module")
def prostate(shared_data, module):
    """A scene with the fixed (LPS-stored) and moving (oblique) MR volumes and their gland segmentations."""
    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    folder = shared_data / "prostate-mr-us"
    fixed_array, fixed_matrix = lps_stored(*downsampled(folder / "mr" / "case000000.nii.gz"))
    moving_array, moving_matrix = downsampled(folder / "mr" / "case000001.nii.gz")
    moving_matrix = oblique(moving_matrix, moving_array.shape)
    fixed_gland, _ = lps_stored(*downsampled(folder / "mr_labels" / "case000000.nii.gz"))
    moving_gland, _ = downsampled(folder / "mr_labels" / "case000001.nii.gz")
    scene_data = {
        "scene": scene,
        "fixed": add_volume(scene, "fixed MR", fixed_array, fixed_matrix),
        "moving": add_volume(scene, "moving MR", moving_array, moving_matrix),
        "fixed_gland": fixed_gland,
        "fixed_segmentation": add_segmentation(scene, "fixed gland", "prostate", fixed_gland, fixed_matrix),
        "moving_segmentation": add_segmentation(scene, "moving gland", "prostate", moving_gland, moving_matrix),
    }
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
    field = read_transform(result_dir / "displacement.nii.gz")
    assert float(field.field.abs().max()) > 0.05
    fixed = prostate["fixed"]
    shape = np.array(slicer.util.arrayFromVolume(fixed).shape[::-1], dtype=np.float64)
    ijk = 1.0 + np.random.default_rng(3).random((200, 3)) * (shape - 3.0)
    points = geometry.transform_points(node_ijk_to_ras(fixed), ijk)
    ours = regseg.transform_points(torch.as_tensor(points)).numpy()
    theirs = np.array([node.GetTransformFromParent().TransformPoint(tuple(p)) for p in points])
    assert np.abs(theirs - ours).max() < TOLERANCE_MM
    # and the displacement itself is RegSeg's
    assert np.abs((theirs - points) - (ours - points)).max() < TOLERANCE_MM


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
    assert 0.0 < before <= 1.0 and 0.0 <= after <= 1.0
    assert table.GetValue(1, 0).ToString() == "mean"


def test_dense_run_improves_the_gland_dice(deformable_run):
    """The fixed mask is the exact gland: the affine stage skips the pyramid levels where it holds too few voxels."""
    dice = deformable_run[0].metrics["dice"]
    assert next(iter(dice["per_label"].values())) > next(iter(dice["before_per_label"].values()))


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


# ------------------------------------------------------------------------------------------------ advanced settings


def test_advanced_settings_reach_the_engine(prostate, module, tmp_path):
    outputs, progress, log = run(
        module,
        prostate,
        tmp_path / "result",
        method="deformable",
        levels=[2, 1],
        iterations=[20, 10],
        deformable_iterations=[0, 0],
        regularisation=2.0,
        preset="large-motion",
        spacing_mm=4.0,
    )
    assert outputs.metrics["settings"] == {
        "affine": {"levels": [2.0, 1.0], "iterations": [20, 10]},
        "deformable": {
            "preset": "large-motion",
            "adam_iterations": 0,
            "fine_iterations": 0,
            "regularisation": 2.0,
            "spacing_mm": 4.0,
        },
    }
    assert not outputs.transform_node.IsLinear() and progress[-1] == 1.0
    command = next(line for line in log if line.startswith("running: "))
    assert "--levels 2.0,1.0 --iterations 20,10 --deformable-iterations 0,0" in command
    prostate["scene"].RemoveNode(outputs.transform_node)


# ------------------------------------------------------------------------------------------------ cancel, failure


def scene_state(scene) -> list[tuple[str, int]]:
    return [(scene.GetNthNode(n).GetID(), scene.GetNthNode(n).GetMTime()) for n in range(scene.GetNumberOfNodes())]


def test_cancel_ends_the_child_within_2_s_and_leaves_the_scene_as_it_was(prostate, module):
    scene = prostate["scene"]
    registration = module.registration
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
    assert job.state is registration.JobState.RUNNING, job.error
    child = job.process.process
    canceller = threading.Thread(target=job.cancel)
    canceller.start()
    canceller.join(timeout=2.0)
    assert not canceller.is_alive()
    assert child.poll() is not None
    assert job.state is registration.JobState.CANCELLED and job.poll()
    assert states == [registration.JobState.STARTING, registration.JobState.RUNNING, registration.JobState.CANCELLED]
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
