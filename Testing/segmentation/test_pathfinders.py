"""Dataset layouts: cases, channels and label maps found from file names; each layout mistake named in one line."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from RegSegLib.errors import InputError
from RegSegLib.segmentation.pathfinders import (
    PATHFINDERS,
    Case,
    DefaultNNUnetFormatPathFinder,
    ImagePaths,
    LabelPaths,
    PathFinder,
    RegistrationLayoutPathFinder,
    pathfinder,
    split_volume_name,
)
from RegSegLib.validation import SettingsError


def _write(path: Path, value: int = 0) -> Path:
    """A tiny 4x4x4 volume at ``path`` (NIfTI through nibabel, NRRD and MHA through SimpleITK)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((4, 4, 4), value, dtype=np.int16)
    if path.name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    else:
        sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    return path


def _nnunet_dataset(root: Path, images: str = "images_tr", labels: str = "labelsTr") -> Path:
    for name in ("liver_001_0000.nii.gz", "liver_001_0001.nii.gz", "liver_002_0000.nii", "liver_002_0001.mha"):
        _write(root / images / name)
    _write(root / labels / "liver_001.nii.gz")
    _write(root / labels / "liver_002.nrrd")
    (root / images / "README.txt").write_text("not an image")
    (root / images / ".liver_003_0000.nii.gz").write_text("hidden")
    return root


@pytest.mark.parametrize(
    ("filename", "parts"),
    [
        ("a_0000.nii.gz", ("a_0000", ".nii.gz")),
        ("A.NII.GZ", ("A", ".NII.GZ")),
        ("b.nii", ("b", ".nii")),
        ("c.nrrd", ("c", ".nrrd")),
        ("d.mha", ("d", ".mha")),
        ("e.txt", None),
        (".nii.gz", None),
        (".f.nii.gz", None),
    ],
)
def test_split_volume_name(filename, parts):
    assert split_volume_name(filename) == parts


def test_nnunet_layout_finds_cases_channels_and_labels(tmp_path):
    root = _nnunet_dataset(tmp_path / "Dataset001")
    finder = DefaultNNUnetFormatPathFinder(root)
    assert (finder.img_foldername, finder.seg_foldername) == ("images_tr", "labelsTr")
    assert finder.channel_names == ["0000", "0001"]
    images, labels = root / "images_tr", root / "labelsTr"
    assert finder.cases() == [
        Case(
            "liver_001",
            [images / "liver_001_0000.nii.gz", images / "liver_001_0001.nii.gz"],
            labels / "liver_001.nii.gz",
        ),
        Case("liver_002", [images / "liver_002_0000.nii", images / "liver_002_0001.mha"], labels / "liver_002.nrrd"),
    ]


def test_nnunet_folder_names_can_be_overridden(tmp_path):
    root = _nnunet_dataset(tmp_path / "Dataset002", images="imagesTr", labels="segs")
    finder = pathfinder("nnunet", root, img_foldername="imagesTr", seg_foldername="segs")
    assert isinstance(finder, DefaultNNUnetFormatPathFinder)
    assert finder.image_folder == root / "imagesTr" and finder.seg_folder == root / "segs"
    cases = finder.cases(require_labels=True)
    assert [case.name for case in cases] == ["liver_001", "liver_002"]
    assert [case.label.name for case in cases] == ["liver_001.nii.gz", "liver_002.nrrd"]
    with pytest.raises(InputError, match="folder not found") as error:
        pathfinder("nnunet", root).cases()
    assert error.value.path == str(root / "images_tr")


def test_cases_without_labels_are_kept_unless_labels_are_required(tmp_path):
    root = tmp_path / "set"
    _write(root / "images_tr" / "a_0000.nii.gz")
    _write(root / "images_tr" / "b_0000.nii.gz")
    _write(root / "labelsTr" / "a.nii.gz")
    finder = DefaultNNUnetFormatPathFinder(root)
    assert [(case.name, case.label) for case in finder.cases()] == [
        ("a", root / "labelsTr" / "a.nii.gz"),
        ("b", None),
    ]
    with pytest.raises(InputError, match=r"no label map for case 'b' \(image b_0000.nii.gz\)") as error:
        finder.cases(require_labels=True)
    assert error.value.path == str(root / "labelsTr")
    with pytest.raises(InputError, match="label folder not found"):
        DefaultNNUnetFormatPathFinder(root, seg_foldername="labels").cases(require_labels=True)


def test_registration_layout(tmp_path):
    root = tmp_path / "prostate"
    _write(root / "images" / "p01.nii.gz")
    _write(root / "images" / "p02.nrrd")
    _write(root / "masks" / "seg_p01.nii.gz", 1)
    _write(root / "masks" / "gland_p02.nii.gz", 1)
    finder = pathfinder("registration", root)
    assert isinstance(finder, RegistrationLayoutPathFinder)
    assert (finder.img_foldername, finder.seg_foldername) == ("images", "masks")
    assert finder.channel_names == ["0000"]
    assert finder.cases() == [
        Case("p01", [root / "images" / "p01.nii.gz"], root / "masks" / "seg_p01.nii.gz"),
        Case("p02", [root / "images" / "p02.nrrd"], None),
    ]


def test_missing_channel_names_the_case_file_and_the_channel(tmp_path):
    root = tmp_path / "set"
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz"):
        _write(root / "images_tr" / name)
    with pytest.raises(InputError) as error:
        DefaultNNUnetFormatPathFinder(root).cases()
    assert error.value.path == str(root / "images_tr" / "b_0000.nii.gz")
    assert str(error.value) == (
        f"{root / 'images_tr' / 'b_0000.nii.gz'}: case 'b' lacks channel(s) 0001 that other cases have "
        "(e.g. a_0001.nii.gz)"
    )


def test_label_without_image_is_refused(tmp_path):
    root = tmp_path / "set"
    _write(root / "images_tr" / "a_0000.nii.gz")
    _write(root / "labelsTr" / "a.nii.gz")
    _write(root / "labelsTr" / "c.nii.gz")
    with pytest.raises(InputError, match="label map has no image: no case 'c'") as error:
        DefaultNNUnetFormatPathFinder(root).cases()
    assert error.value.path == str(root / "labelsTr" / "c.nii.gz")
    registration = tmp_path / "registration"
    _write(registration / "images" / "a.nii.gz")
    _write(registration / "masks" / "seg_b.nii.gz")
    with pytest.raises(InputError, match="no case 'b'") as error:
        RegistrationLayoutPathFinder(registration).cases()
    assert error.value.path == str(registration / "masks" / "seg_b.nii.gz")


def test_missing_and_empty_image_folders_are_named(tmp_path):
    with pytest.raises(InputError, match="folder not found") as error:
        RegistrationLayoutPathFinder(tmp_path / "nowhere").cases()
    assert error.value.path == str(tmp_path / "nowhere" / "images")
    (tmp_path / "empty" / "images_tr").mkdir(parents=True)
    (tmp_path / "empty" / "images_tr" / "notes.txt").write_text("")
    with pytest.raises(InputError, match=r"holds no volume files \(.nii.gz, .nii, .nrrd") as error:
        DefaultNNUnetFormatPathFinder(tmp_path / "empty").channel_names
    assert error.value.path == str(tmp_path / "empty" / "images_tr")


def test_badly_named_and_duplicate_images_are_refused(tmp_path):
    root = tmp_path / "set"
    _write(root / "images_tr" / "a_0000.nii.gz")
    _write(root / "images_tr" / "b_T2.nii.gz")
    with pytest.raises(InputError, match="not named NAME_XXXX") as error:
        DefaultNNUnetFormatPathFinder(root).cases()
    assert error.value.path == str(root / "images_tr" / "b_T2.nii.gz")
    (root / "images_tr" / "b_T2.nii.gz").unlink()
    _write(root / "images_tr" / "a_0000.nii")
    with pytest.raises(InputError, match="case 'a' channel 0000 has two files: a_0000.nii and a_0000.nii.gz"):
        DefaultNNUnetFormatPathFinder(root).cases()
    _write(tmp_path / "reg" / "images" / "a.nii.gz")
    _write(tmp_path / "reg" / "images" / "a.mha")
    with pytest.raises(InputError, match="case 'a' has two files: a.mha and a.nii.gz"):
        RegistrationLayoutPathFinder(tmp_path / "reg").cases()


def test_unknown_pathfinder_lists_the_choices(tmp_path):
    assert sorted(PATHFINDERS) == ["nnunet", "registration"]
    with pytest.raises(SettingsError, match="unknown pathfinder 'nnUNetv2'; choose one of nnunet, registration"):
        pathfinder("nnUNetv2", tmp_path)


class _FlatLayout(PathFinder):
    """A layout written for this test: ``cases/NAME_image.nii.gz`` and ``cases/NAME_label.nii.gz``."""

    IMG_FOLDERNAME = "cases"
    SEG_FOLDERNAME = "cases"

    def _extract_channelnames_from_folder(self) -> list[str]:
        return ["image"]

    def _get_all_paths(self) -> tuple[ImagePaths, LabelPaths]:
        files = self._volume_files(self.image_folder, required=True)
        images = {stem[: -len("_image")]: {"image": path} for stem, path in files if stem.endswith("_image")}
        labels = {stem[: -len("_label")]: path for stem, path in files if stem.endswith("_label")}
        return images, labels


def test_a_new_layout_is_one_subclass(tmp_path):
    _write(tmp_path / "cases" / "x_image.nii.gz")
    _write(tmp_path / "cases" / "x_label.nii.gz")
    _write(tmp_path / "cases" / "y_label.nii.gz")
    finder = _FlatLayout(tmp_path)
    with pytest.raises(InputError, match="no case 'y'"):
        finder.cases()
    (tmp_path / "cases" / "y_label.nii.gz").unlink()
    assert finder.cases() == [Case("x", [tmp_path / "cases" / "x_image.nii.gz"], tmp_path / "cases" / "x_label.nii.gz")]
