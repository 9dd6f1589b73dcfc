"""Real MRML scenes for the Slicer-side tests: prostate MR volumes of ../shared/data placed with non-trivial
geometry (the fixed volume stored LPS-ordered, the moving volume oblique), their gland segmentations, and small
matrix and geometry helpers. Needs ``slicer-core``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from geometry_cases import rotation_about
from RegSegLib import geometry
from slicer_standins import register_segmentation_converters


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


def add_segmentation(scene, name: str, segments: str | Sequence[str], label_array: np.ndarray, matrix: np.ndarray):
    """A segmentation node made from a label map through Slicer's own import.

    Args:
        segments: the segment names of label values 1, 2, ... (one name for a single label).
    """
    names = [segments] if isinstance(segments, str) else list(segments)
    label_map = slicer.vtkMRMLLabelMapVolumeNode()
    label_map.SetIJKToRASMatrix(vtk_matrix(matrix))
    slicer.util.updateVolumeFromArray(label_map, label_array.astype(np.uint8))
    scene.AddNode(label_map)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_map, segmentation)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == len(names)
    for index, segment_name in enumerate(names):
        segmentation.GetSegmentation().GetNthSegment(index).SetName(segment_name)
    scene.RemoveNode(label_map)
    return segmentation


def corner_box(shape_kji, size: int = 5) -> np.ndarray:
    """``[K, J, I]`` bool array: a cube of ``size`` voxels in the first corner (far from the prostate)."""
    box = np.zeros(shape_kji, dtype=bool)
    box[1 : 1 + size, 1 : 1 + size, 1 : 1 + size] = True
    return box


def prostate_scene(shared_data: Path) -> dict:
    """A new scene with the fixed (LPS-stored) and moving (oblique) MR volumes (32x32x30) and gland segmentations.

    Returns:
        ``scene``, ``fixed``, ``moving`` (volume nodes), ``fixed_gland`` (``[K, J, I]`` array on the fixed grid),
        ``fixed_segmentation`` (one segment, ``prostate``), ``moving_segmentation`` (segments ``other``, a box in a
        corner, then ``prostate``: Dice pairs segments by name, not by position).
    """
    register_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    folder = shared_data / "prostate-mr-us"
    fixed_array, fixed_matrix = lps_stored(*downsampled(folder / "mr" / "case000000.nii.gz"))
    moving_array, moving_matrix = downsampled(folder / "mr" / "case000001.nii.gz")
    moving_matrix = oblique(moving_matrix, moving_array.shape)
    fixed_gland, _ = lps_stored(*downsampled(folder / "mr_labels" / "case000000.nii.gz"))
    moving_gland, _ = downsampled(folder / "mr_labels" / "case000001.nii.gz")
    return {
        "scene": scene,
        "fixed": add_volume(scene, "fixed MR", fixed_array, fixed_matrix),
        "moving": add_volume(scene, "moving MR", moving_array, moving_matrix),
        "fixed_gland": fixed_gland,
        "fixed_segmentation": add_segmentation(scene, "fixed gland", "prostate", fixed_gland, fixed_matrix),
        "moving_segmentation": add_segmentation(
            scene, "moving gland", ["other", "prostate"], np.where(moving_gland > 0, 2, corner_box(moving_gland.shape)), moving_matrix
        ),
    }


def inner_points(volume, count: int, seed: int) -> np.ndarray:
    """``[count, 3]`` random RAS points inside a volume node's grid, at least one voxel from its border."""
    shape = np.array(slicer.util.arrayFromVolume(volume).shape[::-1], dtype=np.float64)
    ijk = 1.0 + np.random.default_rng(seed).random((count, 3)) * (shape - 3.0)
    return geometry.transform_points(node_ijk_to_ras(volume), ijk)


def scene_state(scene) -> list[tuple[str, int]]:
    return [(scene.GetNthNode(n).GetID(), scene.GetNthNode(n).GetMTime()) for n in range(scene.GetNumberOfNodes())]


def rigid(degrees: float, axis: str, translation_mm: Sequence[float], centre: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """``[4, 4]`` rotation about ``centre`` followed by a translation."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_about(axis, degrees)
    matrix[:3, 3] = np.asarray(centre) - matrix[:3, :3] @ np.asarray(centre) + np.asarray(translation_mm)
    return matrix


def add_linear_transform(scene, name: str, to_parent: np.ndarray):
    """A linear transform node with the given "to parent" matrix (how Slicer moves the nodes under it)."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(vtk_matrix(to_parent))
    return node


def image_array(image) -> np.ndarray:
    """``[K, J, I]`` array of a ``vtkImageData`` (or ``vtkOrientedImageData``) with one component."""
    i, j, k = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def centroid_mm(mask: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS centroid (mm) of a ``[K, J, I]`` mask on a grid."""
    kji = np.argwhere(mask)
    return geometry.transform_points(ijk_to_ras, kji[:, ::-1].astype(np.float64)).mean(axis=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def mask_seen_from(
    mask: np.ndarray, mask_ijk_to_ras: np.ndarray, mask_to_world: np.ndarray, shape_kji, ijk_to_ras: np.ndarray, to_world: np.ndarray
) -> np.ndarray:
    """A mask resampled (nearest voxel, numpy only) onto another grid, each grid under its own linear "to world" matrix.

    Returns:
        ``[K, J, I]`` bool array on the grid ``ijk_to_ras`` (shape ``shape_kji``).
    """
    k, j, i = shape_kji
    ijk = np.stack(np.meshgrid(np.arange(i), np.arange(j), np.arange(k), indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    to_mask_ijk = np.linalg.inv(mask_ijk_to_ras) @ np.linalg.inv(mask_to_world) @ to_world @ ijk_to_ras
    source = np.rint(geometry.transform_points(to_mask_ijk, ijk)).astype(int)
    inside = np.all((source >= 0) & (source < np.array(mask.shape[::-1])), axis=1)
    values = np.zeros(len(ijk), dtype=bool)
    values[inside] = mask[source[inside, 2], source[inside, 1], source[inside, 0]]
    return values.reshape(i, j, k).transpose(2, 1, 0)


def save_and_reopen_bundle(scene, folder: Path, observe_import=None):
    """Saves ``scene`` as a Slicer data bundle (``.mrb``) and opens it in a new scene, as Slicer's File menu does.

    Args:
        observe_import: called as ``(scene, event)`` on the new scene's ``EndImportEvent`` (a module's observer).

    Returns:
        The new scene.
    """
    saved = folder / "saved"
    saved.mkdir(parents=True)
    logic = slicer.vtkMRMLApplicationLogic()
    logic.SetMRMLScene(scene)
    assert logic.SaveSceneToSlicerDataBundleDirectory(str(saved))
    bundle = Path(shutil.make_archive(str(saved), "zip", folder, saved.name)).rename(folder / "saved.mrb")
    reopened = slicer.vtkMRMLScene()
    if observe_import is not None:
        reopened.AddObserver(reopened.EndImportEvent, observe_import)
    reopen_logic = slicer.vtkMRMLApplicationLogic()
    reopen_logic.SetMRMLScene(reopened)
    (folder / "opened").mkdir()
    assert reopen_logic.OpenSlicerDataBundle(str(bundle), str(folder / "opened"))
    return reopened
