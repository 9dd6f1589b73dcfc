"""The proof DESIGN.md section 2 demands: RegSeg's transform files mean the same thing to ITK and Slicer.

For an affine, a displacement field and a composite [affine, field] on non-trivial geometry (an
oblique moving image, an LPS-ordered fixed image, a field on a permuted grid), every file format is
written and then:

(a) SimpleITK resampling the moving image with the file reproduces RegSeg's ``resample``;
(b) SimpleITK maps points (LPS) where RegSeg maps them (RAS);
(c) a pure translation along R, A or S keeps its sign in every format;
(d) a real MRML scene (``slicer-core``) loading the file into a transform node gives the same
    geometry: hardening a linear transform on the moving volume gives ``inv(T) @ IJKToRAS`` (the
    moving volume lands on the fixed one) and "transform from parent" maps points as ``T`` does.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from geometry_cases import make_ijk_to_ras, rotation_about
from slicer_standins import MODULE_FOLDER, import_file, require_mrml
from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.transforms import read_transform, write_transform
from RegSegLib.io.volumes import volume_to_sitk, write_volume
from RegSegLib.transforms import AffineTransform, CompositeTransform, DisplacementField, resample
from RegSegLib.geometry import points_ras as grid_points_ras
from RegSegLib.volume import Volume

CENTRE = np.array([10.0, -20.0, 30.0])
ITK_FILES = (".tfm", ".txt", ".h5")
FIELD_FILES = (".nii.gz", ".nrrd", ".h5")
CASES = [("affine", suffix) for suffix in ITK_FILES]
CASES += [("field", suffix) for suffix in FIELD_FILES]
CASES += [("composite", suffix) for suffix in ITK_FILES]


def centred_geometry(kind: str, spacing, shape_kji, centre=CENTRE) -> np.ndarray:
    matrix = make_ijk_to_ras(kind, spacing)
    size = np.array(shape_kji[::-1], dtype=np.float64)
    matrix[:3, 3] = centre - matrix[:3, :3] @ ((size - 1) / 2.0)
    return matrix


def build_scene() -> tuple[Volume, Volume, dict]:
    """Fixed grid (LPS-ordered), oblique moving image, and the three transforms."""
    fixed_shape = (14, 16, 18)
    fixed = Volume(torch.zeros(1, *fixed_shape), centred_geometry("lps", (2.0, 1.8, 2.5), fixed_shape))
    moving_shape = (26, 28, 30)
    moving_matrix = centred_geometry("oblique", (1.6, 1.7, 1.9), moving_shape, CENTRE + [1.0, -2.0, 0.5])
    points = grid_points_ras(moving_matrix, moving_shape).double().numpy() - CENTRE
    texture = (
        100.0 * np.exp(-np.sum((points - [4.0, -3.0, 2.0]) ** 2, -1) / 60.0)
        + 30.0 * np.sin(points[..., 0] / 4.0) * np.cos(points[..., 1] / 5.0)
        + 20.0 * np.sin(points[..., 2] / 3.5 + 0.4)
    )
    moving = Volume(torch.as_tensor(texture[None], dtype=torch.float32), moving_matrix)

    linear = np.eye(4)
    linear[:3, :3] = rotation_about("z", 12.0) @ rotation_about("x", -6.0) @ np.diag([1.05, 0.97, 1.02])
    linear[:3, 3] = [3.0, -2.0, 4.0]
    to_centre, from_centre = np.eye(4), np.eye(4)
    to_centre[:3, 3], from_centre[:3, 3] = CENTRE, -CENTRE
    affine = AffineTransform(to_centre @ linear @ from_centre)

    field_shape = (12, 13, 14)
    field_matrix = centred_geometry("flipped", (6.0, 5.5, 5.0), field_shape, CENTRE + [0.5, 0.5, -0.5])
    grid = grid_points_ras(field_matrix, field_shape).double().numpy() - CENTRE
    vectors = np.stack(
        [
            2.5 * np.sin(grid[..., 1] / 9.0),
            -2.0 * np.cos(grid[..., 2] / 11.0) * np.sin(grid[..., 0] / 13.0),
            1.5 * np.sin((grid[..., 0] + grid[..., 2]) / 10.0),
        ],
        0,
    )
    field = DisplacementField(torch.as_tensor(vectors, dtype=torch.float32), field_matrix)
    transforms = {"affine": affine, "field": field, "composite": CompositeTransform([affine, field])}
    return fixed, moving, transforms


@pytest.fixture(scope="module")
def scene_setup() -> tuple[Volume, Volume, dict]:
    return build_scene()


def sitk_transform_from_file(path: Path):
    """What ITK makes of a file: transform files via ReadTransform, field images as a displacement field."""
    if path.name.endswith((".nii.gz", ".nrrd")):
        image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
        return sitk.DisplacementFieldTransform(image)
    return sitk.ReadTransform(str(path))


def fixed_test_points(fixed: Volume) -> np.ndarray:
    """RAS points spread over the fixed grid, away from its border, ``[N, 3]``."""
    rng = np.random.default_rng(7)
    size = np.array(fixed.shape[::-1], dtype=np.float64)
    ijk = 1.0 + rng.random((40, 3)) * (size - 3.0)
    return geometry.transform_points(fixed.ijk_to_ras, ijk)


@pytest.mark.parametrize("name, suffix", CASES)
def test_sitk_resampling_with_the_file_reproduces_regseg(tmp_path, scene_setup, name, suffix):
    fixed, moving, transforms = scene_setup
    transform = transforms[name]
    path = tmp_path / f"{name}{suffix}"
    write_transform(transform, path)
    ours = resample(moving, fixed, transform).data[0].numpy()
    theirs = sitk.GetArrayFromImage(
        sitk.Resample(
            volume_to_sitk(moving.data.numpy(), moving.ijk_to_ras),
            volume_to_sitk(fixed.data.numpy(), fixed.ijk_to_ras),
            sitk_transform_from_file(path),
            sitk.sitkLinear,
            0.0,
            sitk.sitkFloat64,
        )
    )
    # compare where T(x) lies well inside the moving grid (interpolators differ at the very edge)
    points = transform.transform_points(fixed.grid.points_ras().double()).numpy()
    ijk = geometry.transform_points(np.linalg.inv(moving.ijk_to_ras), points)
    inside = np.all((ijk > 1.0) & (ijk < np.array(moving.shape[::-1]) - 2.0), axis=-1)
    inside[[0, -1], :, :] = inside[:, [0, -1], :] = inside[:, :, [0, -1]] = False
    assert inside.mean() > 0.5
    value_range = float(moving.data.max() - moving.data.min())
    assert np.abs(ours - theirs)[inside].max() < 1e-3 * value_range
    # and the transform is not a no-op: the identity would be far off
    identity = resample(moving, fixed).data[0].numpy()
    assert np.abs(identity - theirs)[inside].max() > 0.1 * value_range


@pytest.mark.parametrize("name, suffix", CASES)
def test_sitk_maps_points_where_regseg_does(tmp_path, scene_setup, name, suffix):
    fixed, _, transforms = scene_setup
    transform = transforms[name]
    path = tmp_path / f"{name}{suffix}"
    write_transform(transform, path)
    itk_transform = sitk_transform_from_file(path)
    points = fixed_test_points(fixed)
    ours = transform.transform_points(torch.as_tensor(points)).numpy()
    theirs_lps = np.array([itk_transform.TransformPoint(tuple(p)) for p in geometry.ras_to_lps_points(points)])
    np.testing.assert_allclose(geometry.lps_to_ras_points(theirs_lps), ours, atol=0.01)
    loaded = read_transform(path)
    np.testing.assert_allclose(loaded.transform_points(torch.as_tensor(points)).numpy(), ours, atol=1e-3)


@pytest.mark.parametrize("suffix", FIELD_FILES)
def test_a_field_acts_as_in_itk_at_and_beyond_the_edge_of_its_grid(tmp_path, suffix):
    """ITK: the edge value up to half a voxel outside the field's grid, no displacement further out."""
    field_grid = make_ijk_to_ras("oblique", spacing=(2.0, 1.5, 3.0), origin=(4.0, -3.0, 7.0))
    shape = (6, 7, 8)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    values = np.stack([1.0 + 0.1 * i, -0.5 + 0.05 * j * k, 0.3 * np.sin(i + j)])
    field = DisplacementField(torch.as_tensor(values, dtype=torch.float32), field_grid)
    path = tmp_path / f"field{suffix}"
    write_transform(field, path)
    itk_transform = sitk_transform_from_file(path)
    # lines through the grid along each index axis, from 2 voxels before the first to 2 after the last
    steps = np.concatenate([np.linspace(-2.0, -0.6, 5), np.linspace(-0.4, 0.4, 5), np.linspace(0.6, 2.0, 5)])
    ijk = []
    for axis, size in enumerate(shape[::-1]):
        for offset in np.concatenate([steps, size - 1 + steps]):
            point = np.array([3.3, 2.6, 2.2])
            point[axis] = offset
            ijk.append(point)
    points = geometry.transform_points(field_grid, np.array(ijk))
    ours = field.transform_points(torch.as_tensor(points)).numpy()
    theirs = geometry.lps_to_ras_points(
        np.array([itk_transform.TransformPoint(tuple(p)) for p in geometry.ras_to_lps_points(points)])
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    outside = np.any((np.array(ijk) < -0.5) | (np.array(ijk) > np.array(shape[::-1]) - 0.5), axis=1)
    assert outside.sum() == 30 and np.allclose(ours[outside], points[outside])
    assert np.linalg.norm(ours[~outside] - points[~outside], axis=1).min() > 0.5


AXES = {"R": [5.0, 0.0, 0.0], "A": [0.0, 5.0, 0.0], "S": [0.0, 0.0, 5.0]}


def translation_as(kind: str, shift: np.ndarray, field_grid: np.ndarray):
    if kind == "affine":
        matrix = np.eye(4)
        matrix[:3, 3] = shift
        return AffineTransform(matrix)
    constant = torch.as_tensor(shift, dtype=torch.float32).reshape(3, 1, 1, 1).expand(3, 6, 7, 8).clone()
    return DisplacementField(constant, field_grid)


@pytest.mark.parametrize("axis", list(AXES))
@pytest.mark.parametrize(
    "kind, suffix", [("affine", s) for s in ITK_FILES] + [("field", s) for s in FIELD_FILES + (".tfm",)]
)
def test_translation_keeps_its_sign_in_every_format(tmp_path, axis, kind, suffix):
    shift = np.array(AXES[axis])
    field_grid = centred_geometry("lps", (4.0, 4.0, 4.0), (6, 7, 8), np.zeros(3))
    path = tmp_path / f"shift_{axis}{suffix}"
    write_transform(translation_as(kind, shift, field_grid), path)
    origin = np.zeros(3)
    moved_lps = sitk_transform_from_file(path).TransformPoint((0.0, 0.0, 0.0))
    np.testing.assert_allclose(geometry.lps_to_ras_points(np.array(moved_lps)), shift, atol=1e-6)
    loaded = read_transform(path)
    np.testing.assert_allclose(loaded.transform_points(torch.as_tensor(origin)[None]).numpy()[0], shift, atol=1e-6)
    if suffix == ".nii.gz":
        # NIFTI_INTENT_DISPVECT: the file holds the vectors in NIfTI world space (RAS); ITK flips them to LPS
        header = nib.load(path).header
        assert int(header["intent_code"]) == 1006 and header["dim"][0] == 5 and header["dim"][5] == 3
        stored = np.asarray(nib.load(path).dataobj)
        assert stored.shape == (8, 7, 6, 1, 3)
        np.testing.assert_allclose(stored[4, 3, 2, 0], shift, atol=1e-6)
    if suffix == ".nrrd":
        text = path.read_bytes().split(b"\n\n")[0].decode("ascii", "replace")
        assert "kinds: vector domain domain domain" in text and "intent_code:=1006" in text
        assert "space: left-posterior-superior" in text
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        np.testing.assert_allclose(stored[2, 3, 4], geometry.ras_to_lps_points(shift), atol=1e-6)


def test_translation_moves_the_resampled_image_the_same_way_in_sitk(tmp_path, make_volume):
    ijk_to_ras = make_ijk_to_ras("oblique", (1.0, 1.0, 1.0))
    moving = make_volume((20, 20, 20), ijk_to_ras, sigma_mm=2.0)
    reference = volume_to_sitk(moving.data.numpy(), moving.ijk_to_ras)
    for axis, shift in AXES.items():
        path = tmp_path / f"shift_{axis}.tfm"
        write_transform(translation_as("affine", np.array(shift) * 0.6, ijk_to_ras), path)
        itk_transform = sitk.ReadTransform(str(path))
        warped = sitk.GetArrayFromImage(sitk.Resample(reference, reference, itk_transform, sitk.sitkLinear))
        ours = resample(moving, moving, read_transform(path)).data[0].numpy()
        assert np.abs(warped - ours).max() < 1e-3 * float(moving.data.max())
        # the content moves by -shift (warped(x) = moving(x + shift))
        weights = ours.clip(min=0)
        k, j, i = np.meshgrid(*[np.arange(n) for n in ours.shape], indexing="ij")
        centroid_ijk = np.array([(weights * i).sum(), (weights * j).sum(), (weights * k).sum()]) / weights.sum()
        blob = geometry.grid_centre_ras(ijk_to_ras, moving.shape)
        np.testing.assert_allclose(
            geometry.transform_points(ijk_to_ras, centroid_ijk) - blob, -np.array(shift) * 0.6, atol=0.05
        )


def test_composite_h5_has_itk_part_order(tmp_path, scene_setup):
    _, _, transforms = scene_setup
    path = tmp_path / "composite.h5"
    write_transform(transforms["composite"], path)
    itk_transform = sitk.ReadTransform(str(path))
    assert isinstance(itk_transform, sitk.CompositeTransform)
    assert itk_transform.GetNumberOfTransforms() == 2
    assert isinstance(itk_transform.GetNthTransform(0), sitk.AffineTransform)
    assert isinstance(itk_transform.GetNthTransform(1), sitk.DisplacementFieldTransform)
    loaded = read_transform(path)
    assert isinstance(loaded, CompositeTransform)
    assert [type(part) for part in loaded.transforms] == [AffineTransform, DisplacementField]
    np.testing.assert_allclose(loaded.transforms[0].matrix, transforms["affine"].matrix, atol=1e-12)
    torch.testing.assert_close(loaded.transforms[1].field, transforms["field"].field)
    np.testing.assert_allclose(loaded.transforms[1].ijk_to_ras, transforms["field"].ijk_to_ras, atol=1e-12)


@pytest.mark.parametrize(
    "itk_transform",
    [
        sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, -5.0, 6.0)),
        sitk.Similarity3DTransform(1.2, (0.0, 0.3, 1.0), 0.4, (1.0, 2.0, 3.0), (3.0, 2.0, 1.0)),
        sitk.VersorRigid3DTransform((0.0, 0.0, 1.0), 0.5, (1.0, -1.0, 2.0)),
        sitk.ScaleSkewVersor3DTransform(
            (1.1, 0.9, 1.2), (0.01, 0.02, 0.0, 0.03, 0.0, 0.01), (0.1, 0.0, 0.0), 0.2, (1.0, 0.0, 2.0), (3.0, 4.0, 5.0)
        ),
        sitk.TranslationTransform(3, (1.0, -2.0, 3.0)),
        sitk.ScaleTransform(3, (1.5, 0.5, 2.0)),
    ],
    ids=lambda t: t.GetName(),
)
def test_other_itk_linear_kinds_read_as_matrices(tmp_path, itk_transform):
    path = tmp_path / "linear.tfm"
    sitk.WriteTransform(itk_transform, str(path))
    loaded = read_transform(path)
    assert isinstance(loaded, AffineTransform)
    points = np.array([[0.0, 0.0, 0.0], [10.0, -20.0, 30.0], [-5.0, 7.0, -9.0]])
    expected = [itk_transform.TransformPoint(tuple(p)) for p in geometry.ras_to_lps_points(points)]
    np.testing.assert_allclose(
        geometry.transform_points(loaded.matrix, points), geometry.lps_to_ras_points(np.array(expected)), atol=1e-9
    )


def test_wrong_files_are_input_errors(tmp_path):
    scalar = tmp_path / "scalar.nii.gz"
    sitk.WriteImage(sitk.Image(4, 5, 6, sitk.sitkFloat32), str(scalar))
    with pytest.raises(InputError, match="scalar.nii.gz: .*not a displacement field"):
        read_transform(scalar)
    text = tmp_path / "notes.tfm"
    text.write_text("this is not a transform\n")
    with pytest.raises(InputError, match="notes.tfm: is not a readable ITK transform file"):
        read_transform(text)
    flat = tmp_path / "flat.tfm"
    sitk.WriteTransform(sitk.Euler2DTransform(), str(flat))
    with pytest.raises(InputError, match="flat.tfm: is a 2D transform"):
        read_transform(flat)
    bspline = tmp_path / "bspline.h5"
    sitk.WriteTransform(sitk.BSplineTransform(3), str(bspline))
    with pytest.raises(InputError, match="bspline.h5: holds a B-spline transform"):
        read_transform(bspline)
    with pytest.raises(InputError, match="absent.h5: file not found"):
        read_transform(tmp_path / "absent.h5")
    with pytest.raises(InputError, match="shift.png: unsupported transform format"):
        write_transform(AffineTransform.identity(), tmp_path / "shift.png")
    with pytest.raises(InputError, match="affine.nii.gz: a AffineTransform cannot be stored"):
        write_transform(AffineTransform.identity(), tmp_path / "affine.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bspline.h5", "flat.tfm", "notes.tfm", "scalar.nii.gz"]


# (d) Slicer's own MRML classes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mrml():
    return require_mrml()


def load_transform_node(slicer, scene, path: Path):
    storage = slicer.vtkMRMLTransformStorageNode()
    scene.AddNode(storage)
    node = slicer.vtkMRMLTransformNode()
    scene.AddNode(node)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1, f"Slicer could not read {path.name}"
    return node


def vtk_to_numpy(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


grid_parts = import_file(MODULE_FOLDER / "RegSegSlicerLib" / "nodes.py").grid_parts
"""The ``vtkGridTransform`` parts of a VTK transform: the Slicer glue's own search (it imports slicer lazily)."""


def map_points(vtk_transform, points: np.ndarray) -> np.ndarray:
    return np.array([vtk_transform.TransformPoint(tuple(float(v) for v in p)) for p in points])


@pytest.mark.parametrize("name, suffix", CASES)
def test_slicer_transform_node_maps_points_from_parent_like_regseg(tmp_path, mrml, scene_setup, name, suffix):
    fixed, _, transforms = scene_setup
    transform = transforms[name]
    path = tmp_path / f"{name}{suffix}"
    write_transform(transform, path)
    scene = mrml.vtkMRMLScene()
    node = load_transform_node(mrml, scene, path)
    assert bool(node.IsLinear()) == (name == "affine")
    points = fixed_test_points(fixed)
    ours = transform.transform_points(torch.as_tensor(points)).numpy()
    from_parent = node.GetTransformFromParent()
    grids = grid_parts(from_parent)
    assert len(grids) == (0 if name == "affine" else 1)
    if grids:
        # Slicer interpolates displacement grids cubically by default, ITK and RegSeg linearly: on this
        # coarse (5-6 mm) grid that is a sub-voxel difference, small against the 2.5 mm displacements ...
        assert grids[0].GetInterpolationModeAsString() == "Cubic"
        assert np.abs(map_points(from_parent, points) - ours).max() < 0.25
        # ... and with linear interpolation Slicer's grid is exactly RegSeg's field
        grids[0].SetInterpolationModeToLinear()
        from_parent.Modified()
    np.testing.assert_allclose(map_points(from_parent, points), ours, atol=0.01)
    # the inverse ("transform to parent") brings moving points back onto the fixed points
    to_parent = node.GetTransformToParent()
    for grid in grid_parts(to_parent):
        grid.SetInterpolationModeToLinear()
    to_parent.Modified()
    np.testing.assert_allclose(map_points(to_parent, ours), points, atol=0.01)


@pytest.mark.parametrize("suffix", ITK_FILES)
@pytest.mark.parametrize("image_suffix", [".nrrd", ".nii.gz"])
def test_slicer_hardening_puts_the_moving_volume_on_the_fixed_one(tmp_path, mrml, scene_setup, suffix, image_suffix):
    import vtk

    _, moving, transforms = scene_setup
    transform = transforms["affine"]
    transform_path = tmp_path / f"affine{suffix}"
    write_transform(transform, transform_path)
    image_path = tmp_path / f"moving{image_suffix}"
    write_volume(moving, image_path)
    scene = mrml.vtkMRMLScene()
    volume_storage = mrml.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(volume_storage)
    volume = mrml.vtkMRMLScalarVolumeNode()
    scene.AddNode(volume)
    volume_storage.SetFileName(str(image_path))
    assert volume_storage.ReadData(volume) == 1
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(vtk_to_numpy(matrix), moving.ijk_to_ras, atol=1e-4)
    node = load_transform_node(mrml, scene, transform_path)
    to_parent = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToParent(to_parent)
    np.testing.assert_allclose(vtk_to_numpy(to_parent), np.linalg.inv(transform.matrix), atol=1e-6)
    volume.SetAndObserveTransformNodeID(node.GetID())
    volume.HardenTransform()
    assert volume.GetParentTransformNode() is None
    volume.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(vtk_to_numpy(matrix), np.linalg.inv(transform.matrix) @ moving.ijk_to_ras, atol=1e-4)
    # a moving voxel whose centre T maps a fixed point onto now sits at that fixed point
    fixed_point = CENTRE + np.array([3.0, -4.0, 5.0])
    moving_point = geometry.transform_points(transform.matrix, fixed_point)
    moving_ijk = geometry.transform_points(np.linalg.inv(moving.ijk_to_ras), moving_point)
    np.testing.assert_allclose(geometry.transform_points(vtk_to_numpy(matrix), moving_ijk), fixed_point, atol=1e-4)


@pytest.mark.parametrize("axis", list(AXES))
@pytest.mark.parametrize("kind, suffix", [("affine", s) for s in ITK_FILES] + [("field", s) for s in FIELD_FILES])
def test_slicer_reads_translation_with_its_sign(tmp_path, mrml, axis, kind, suffix):
    shift = np.array(AXES[axis])
    field_grid = centred_geometry("lps", (4.0, 4.0, 4.0), (6, 7, 8), np.zeros(3))
    path = tmp_path / f"shift_{axis}{suffix}"
    write_transform(translation_as(kind, shift, field_grid), path)
    node = load_transform_node(mrml, mrml.vtkMRMLScene(), path)
    np.testing.assert_allclose(node.GetTransformFromParent().TransformPoint((0.0, 0.0, 0.0)), shift, atol=1e-6)
    np.testing.assert_allclose(node.GetTransformToParent().TransformPoint(tuple(shift)), np.zeros(3), atol=1e-3)


@pytest.mark.parametrize("suffix", [".tfm", ".txt"])
def test_affine_text_files_written_without_itk_read_back_exactly_by_simpleitk(tmp_path, suffix):
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_about("z", 17.0) @ rotation_about("x", -11.0) @ np.diag([1.1, 0.95, 1.02])
    matrix[:3, 3] = [5.0, -3.0, 2.0 / 3.0]
    first = AffineTransform(matrix)
    second_matrix = np.eye(4)
    second_matrix[:3, :3] = rotation_about("y", -8.0)
    second = AffineTransform(second_matrix)
    points = torch.tensor([[10.0, -20.0, 30.0], [-45.5, 12.25, 0.1]], dtype=torch.float64)
    for transform in (first, CompositeTransform([first, second])):
        path = tmp_path / f"written{suffix}"
        write_transform(transform, path)
        assert path.read_text().startswith("#Insight Transform File V1.0\n#Transform 0\n")
        itk = sitk.ReadTransform(str(path))
        lps = [itk.TransformPoint(tuple(p)) for p in geometry.ras_to_lps_points(points.numpy())]
        np.testing.assert_allclose(geometry.lps_to_ras_points(np.array(lps)), transform.transform_points(points).numpy(), atol=1e-9)
    affine = sitk.AffineTransform(sitk.ReadTransform(str(tmp_path / f"written{suffix}")).GetNthTransform(1))
    assert affine.GetMatrix() == tuple(geometry.ras_to_lps_matrix(second.matrix)[:3, :3].reshape(-1))
