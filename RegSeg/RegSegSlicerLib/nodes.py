"""MRML nodes to files and back, with MRML classes and storage nodes only (no Qt, no ``slicer.app``, no torch).

Works in the Slicer application and with the ``slicer-core`` package (real MRML classes without Qt).
Files carry the geometry: a volume node's IJK-to-RAS matrix goes through NRRD exactly, transform files
hold ITK's resampling transform (fixed -> moving, Slicer's "transform from parent") and the storage
nodes do the LPS/RAS conversions.

Nothing here changes the scene until results are loaded: exports use standalone storage nodes, and files
are read into standalone nodes whose content is then copied into the user's output nodes.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from RegSegSlicerLib.paths import ensure_regseglib_importable

ensure_regseglib_importable()

from RegSegLib import geometry  # noqa: E402  (numpy-only, no torch)


def _slicer():
    import slicer

    return slicer


def _vtk():
    import vtk

    return vtk


def ijk_to_ras(node) -> list[list[float]]:
    """A volume node's (or oriented image's) IJK-to-RAS matrix as a ``[4][4]`` list."""
    matrix = _vtk().vtkMatrix4x4()
    if node.IsA("vtkOrientedImageData"):
        node.GetImageToWorldMatrix(matrix)
    else:
        node.GetIJKToRASMatrix(matrix)
    return [[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]


def dimensions(node) -> tuple[int, int, int]:
    """``(I, J, K)`` voxel counts of a volume node's image."""
    image = node.GetImageData()
    if image is None:
        return (0, 0, 0)
    return tuple(int(n) for n in image.GetDimensions())


def grid_difference_mm(a, b) -> float:
    """Largest distance (mm) between corresponding corner voxel centres of two volume nodes; inf if sizes differ.

    RegSegLib's one definition (:func:`RegSegLib.geometry.corner_distance_mm`); grids closer than
    :data:`RegSegLib.geometry.GRID_TOLERANCE_MM` are the same grid.
    """
    return geometry.corner_distance_mm(
        np.array(ijk_to_ras(a)), dimensions(a)[::-1], np.array(ijk_to_ras(b)), dimensions(b)[::-1]
    )


def node_label(node) -> str:
    """How messages name a node: its name in quotes."""
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "(unnamed node)"


def check_volume(node, role: str) -> None:
    """Raises ``ValueError`` unless ``node`` is a volume node with a 3D single-component image."""
    if node is None:
        raise ValueError(f"Select a {role}.")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError(f"The {role} {node_label(node)} is a {node.GetClassName()}, not a scalar volume.")
    image = node.GetImageData()
    if image is None or min(dimensions(node)) < 1:
        raise ValueError(f"The {role} {node_label(node)} holds no image data.")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"The {role} {node_label(node)} has {image.GetNumberOfScalarComponents()} components; a single-component image is needed.")


def write_volume_node(node, path: str | os.PathLike) -> str:
    """Writes a volume (or label map) node to ``path`` (``.nrrd`` keeps the geometry exactly) without touching the scene.

    Returns:
        The path written.

    Raises:
        RuntimeError: the storage node could not write the file.
    """
    storage = _slicer().vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(node):
        raise RuntimeError(f"could not write {node_label(node)} to {path}")
    return str(path)


def write_transform_node(node, path: str | os.PathLike) -> str:
    """Writes a transform node (its "transform from parent", ITK's fixed -> moving direction) to an ITK file."""
    storage = _slicer().vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise RuntimeError(f"could not write the transform {node_label(node)} to {path}")
    return str(path)


def read_volume_file(path: str | os.PathLike, label_map: bool = False):
    """A standalone (not in a scene) scalar or label map volume node read from a file."""
    slicer = _slicer()
    node = slicer.vtkMRMLLabelMapVolumeNode() if label_map else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if label_map:
        storage.SetCenterImage(0)
    if not storage.ReadData(node):
        raise RuntimeError(f"could not read the volume {path}")
    return node


def read_transform_file(path: str | os.PathLike):
    """A standalone transform node read from an ITK transform file or displacement field image."""
    slicer = _slicer()
    node = slicer.vtkMRMLTransformNode()
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"could not read the transform {path}")
    return node


def add_volume_file(scene, path: str | os.PathLike, name: str, label_map: bool = False):
    """Reads a volume file into a new node of ``scene`` (batch scripts and tests; the GUI uses ``slicer.util.loadVolume``)."""
    source = read_volume_file(path, label_map)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label_map else "vtkMRMLScalarVolumeNode", name)
    copy_volume(source, node)
    return node


def copy_volume(source, target) -> None:
    """Copies image data and geometry of a volume node into another one (display nodes created when missing)."""
    image = _vtk().vtkImageData()
    image.DeepCopy(source.GetImageData())
    matrix = _vtk().vtkMatrix4x4()
    source.GetIJKToRASMatrix(matrix)
    target.SetIJKToRASMatrix(matrix)
    target.SetAndObserveImageData(image)
    if target.GetScene() is not None and target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()


def grid_parts(transform) -> list:
    """The ``vtkGridTransform`` parts of a VTK transform, searching general-transform concatenations."""
    if transform is None:
        return []
    if transform.IsA("vtkGridTransform"):
        return [transform]
    parts = []
    if transform.IsA("vtkGeneralTransform"):
        for index in range(transform.GetNumberOfConcatenatedTransforms()):
            parts += grid_parts(transform.GetConcatenatedTransform(index))
    return parts


GRID_INTERPOLATION_ATTRIBUTE = "RegSeg.GridInterpolation"
"""Node attribute (saved in the scene file) that marks a transform node whose grids RegSeg interpolates linearly.

Transform files do not store the interpolation, and Slicer reads grids back with cubic interpolation:
:func:`restore_linear_grid_interpolation` re-applies linear interpolation to the marked nodes of a loaded scene.
"""


def set_linear_grid_interpolation(node) -> int:
    """Makes every displacement grid of a transform node interpolate linearly, as ITK and RegSegLib do.

    Slicer interpolates grids cubically by default; with linear interpolation the node maps points exactly as
    RegSeg's field does.

    Returns:
        The number of grids changed (grids already linear are left alone).
    """
    grids = grid_parts(node.GetTransformFromParent()) + grid_parts(node.GetTransformToParent())
    changed = [grid for grid in grids if grid.GetInterpolationModeAsString() != "Linear"]
    for grid in changed:
        grid.SetInterpolationModeToLinear()
        grid.Modified()
    if changed:
        node.TransformModified()
    return len(changed)


def restore_linear_grid_interpolation(scene) -> int:
    """Re-applies linear interpolation to the grids of every transform node of ``scene`` that RegSeg loaded a grid into.

    Call it once a scene has been loaded (the scene's ``EndImportEvent``): transform files do not store the
    interpolation, so the grids of RegSeg's results read back from a saved scene are cubic until then. Nodes are
    found by :data:`GRID_INTERPOLATION_ATTRIBUTE`, which the scene file keeps.

    Returns:
        The number of transform nodes changed.
    """
    count = 0
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLTransformNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLTransformNode")
        if node.GetAttribute(GRID_INTERPOLATION_ATTRIBUTE) == "linear" and set_linear_grid_interpolation(node):
            count += 1
    return count


def load_transform_into(path: str | os.PathLike, target) -> None:
    """Loads an ITK transform file into an existing transform node ("transform from parent"), replacing its content.

    A linear result goes in as a matrix, so a ``vtkMRMLLinearTransformNode`` stays editable; anything else
    is set as the node's transform from parent, with linear grid interpolation, and the node is marked with
    :data:`GRID_INTERPOLATION_ATTRIBUTE` so that the interpolation can be restored after a scene reload.

    Raises:
        RuntimeError: the file could not be read, or the node did not take the matrix.
    """
    source = read_transform_file(path)
    modifying = target.StartModify()
    try:
        if source.IsLinear():
            matrix = _vtk().vtkMatrix4x4()
            source.GetMatrixTransformFromParent(matrix)
            if not target.IsLinear():
                # a node holding a grid or a composite refuses a matrix (and keeps its old transform): empty it first,
                # in both directions (clearing a direction that is already empty leaves the other one in place)
                target.SetAndObserveTransformToParent(None)
                target.SetAndObserveTransformFromParent(None)
            if not target.SetMatrixTransformFromParent(matrix):
                raise RuntimeError(f"the transform {node_label(target)} did not take the linear result of {path}")
            target.RemoveAttribute(GRID_INTERPOLATION_ATTRIBUTE)
        else:
            target.SetAndObserveTransformFromParent(source.GetTransformFromParent())
            set_linear_grid_interpolation(target)
            target.SetAttribute(GRID_INTERPOLATION_ATTRIBUTE, "linear")
    finally:
        target.EndModify(modifying)


def segment_ids(segmentation_node, names_or_ids: Sequence[str] | None = None) -> list[str]:
    """Segment IDs of a segmentation node, in its order; ``names_or_ids`` selects by ID or name.

    Raises:
        ValueError: a requested segment does not exist, or the selection is empty.
    """
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    if names_or_ids:
        by_name = {segmentation.GetSegment(i).GetName(): i for i in ids}
        chosen = []
        for wanted in names_or_ids:
            if wanted in ids:
                chosen.append(wanted)
            elif wanted in by_name:
                chosen.append(by_name[wanted])
            else:
                raise ValueError(f"The segmentation {node_label(segmentation_node)} has no segment {wanted!r}.")
        ids = chosen
    if not ids:
        raise ValueError(f"The segmentation {node_label(segmentation_node)} has no segments to use.")
    return ids


def segment_names(segmentation_node, ids: Sequence[str]) -> list[str]:
    """Names of the given segments."""
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetSegment(i).GetName() for i in ids]


def with_binary_labelmaps(segmentation_node):
    """The segmentation itself when it holds binary labelmaps, else a converted copy (the user's node is not changed).

    Segmentations made from models, STL files or RT structure sets hold closed surfaces only; merging segments into
    a label map needs the binary labelmap representation.

    Raises:
        ValueError: the segmentation cannot be converted to binary labelmaps.
    """
    slicer = _slicer()
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if segmentation_node.GetSegmentation().ContainsRepresentation(name):
        return segmentation_node
    copy = slicer.vtkMRMLSegmentationNode()
    copy.SetName(segmentation_node.GetName())
    copy.GetSegmentation().DeepCopy(segmentation_node.GetSegmentation())
    if not copy.GetSegmentation().CreateRepresentation(name):
        raise ValueError(
            f"The segmentation {node_label(segmentation_node)} holds no binary labelmap and cannot be converted to one."
        )
    return copy


def segmentation_to_label_map(segmentation_node, reference_volume, ids: Sequence[str], values: Sequence[int] | None = None):
    """A standalone label map node on the reference volume's own grid from chosen segments.

    The label map has the reference volume's IJK-to-RAS (its parent transform not applied), as the volume's file is
    written, and marks the voxels where the segments are relative to the volume: the parent transforms of both
    nodes are taken into account, as Slicer's ``GenerateMergedLabelmapInReferenceGeometry`` does. That function
    is not called because a closed-surface segmentation is converted in a copy outside the scene, which would lose
    its parent transform. Only the reference volume's geometry is used; none of its voxels are copied.

    Args:
        segmentation_node: the segmentation.
        reference_volume: volume node whose grid the label map takes.
        ids: segment IDs; overlapping segments: the later one wins.
        values: label value of each segment (default 1, 2, ...).

    Returns:
        A ``vtkMRMLLabelMapVolumeNode`` not added to any scene.

    Raises:
        ValueError: the segments could not be merged on that grid.
    """
    slicer, vtk = _slicer(), _vtk()
    resample = slicer.vtkOrientedImageDataResample
    values = list(values) if values is not None else list(range(1, len(ids) + 1))
    id_array, value_array = vtk.vtkStringArray(), vtk.vtkIntArray()
    for segment_id, value in zip(ids, values):
        id_array.InsertNextValue(segment_id)
        value_array.InsertNextValue(int(value))
    matrix = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(matrix)
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(reference_volume.GetImageData().GetExtent())
    reference.SetGeometryFromImageToWorldMatrix(matrix)
    # reference volume coordinates -> segmentation coordinates
    volume_parent, segmentation_parent = reference_volume.GetParentTransformNode(), segmentation_node.GetParentTransformNode()
    to_segmentation = None
    merge_geometry = reference
    if volume_parent is not segmentation_parent:
        to_segmentation = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(volume_parent, segmentation_parent, to_segmentation)
        merge_geometry = slicer.vtkOrientedImageData()
        merge_geometry.DeepCopy(reference)
        resample.TransformOrientedImage(merge_geometry, to_segmentation, True)
    merged = slicer.vtkOrientedImageData()
    ok = with_binary_labelmaps(segmentation_node).GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merge_geometry, id_array, value_array
    )
    if ok and to_segmentation is not None:
        to_reference = to_segmentation.GetInverse()
        to_reference.Update()
        on_reference = slicer.vtkOrientedImageData()
        ok = resample.ResampleOrientedImageToReferenceOrientedImage(merged, reference, on_reference, False, False, to_reference)
        merged = on_reference
    if not ok or merged.GetPointData().GetScalars() is None:
        raise ValueError(
            f"The segmentation {node_label(segmentation_node)} could not be turned into a label map "
            f"on the grid of {node_label(reference_volume)}."
        )
    image = vtk.vtkImageData()
    image.ShallowCopy(merged)
    image.SetOrigin(0.0, 0.0, 0.0)
    image.SetSpacing(1.0, 1.0, 1.0)
    if hasattr(image, "SetDirectionMatrix"):
        image.SetDirectionMatrix(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    label_map = slicer.vtkMRMLLabelMapVolumeNode()
    label_map.SetIJKToRASMatrix(matrix)
    label_map.SetAndObserveImageData(image)
    label_map.SetName(f"{segmentation_node.GetName()} label map")
    return label_map


def as_label_map(node, reference_volume, segments: Sequence[str] | None, role: str):
    """A label map on the reference grid from a label map volume or a segmentation node.

    Args:
        node: ``vtkMRMLLabelMapVolumeNode`` (must lie on the reference grid) or ``vtkMRMLSegmentationNode``.
        reference_volume: the image the mask or labels belong to.
        segments: for a segmentation, the segment IDs or names to use (default all).
        role: what the node is, for messages ("fixed mask", ...).

    Raises:
        ValueError: wrong node type, a label map on another grid or under another parent transform than the
            reference volume, or no usable segment.
    """
    if node.IsA("vtkMRMLSegmentationNode"):
        return segmentation_to_label_map(node, reference_volume, segment_ids(node, segments))
    if node.IsA("vtkMRMLLabelMapVolumeNode") or node.IsA("vtkMRMLScalarVolumeNode"):
        if node.GetParentTransformNode() is not reference_volume.GetParentTransformNode():
            raise ValueError(
                f"The {role} {node_label(node)} is not under the same transform as {node_label(reference_volume)}, "
                f"so its voxels do not lie where the volume's do; put both under the same transform (or harden "
                f"them), or use a segmentation node."
            )
        difference = grid_difference_mm(node, reference_volume)
        if difference > geometry.GRID_TOLERANCE_MM:
            raise ValueError(
                f"The {role} {node_label(node)} is not on the grid of {node_label(reference_volume)} "
                f"(corners differ by {difference:.3g} mm); use a segmentation node, or resample the label map "
                f"onto that volume first."
            )
        return node
    raise ValueError(f"The {role} {node_label(node)} is a {node.GetClassName()}; use a label map volume or a segmentation.")


def fill_table(table_node, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Replaces a table node's content: string first column, numbers after (``None`` -> NaN)."""
    vtk = _vtk()
    table = table_node.GetTable()
    table.Initialize()
    arrays = []
    for index, name in enumerate(columns):
        array = vtk.vtkStringArray() if index == 0 else vtk.vtkDoubleArray()
        array.SetName(name)
        table.AddColumn(array)
        arrays.append(array)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.SetValue(r, c, vtk.vtkVariant(str(value) if c == 0 else float("nan") if value is None else float(value)))
    table.Modified()
    table_node.Modified()
