"""A DICOM folder whose one series holds several volumes (issue 9 audit item 2).

Slices that repeat positions (DWI b-values, echoes, acquisitions) used to be stacked into one volume with
a wrong slice spacing and only an ITK warning; now the folder is refused with one line saying what it
holds, and each volume in a folder of its own reads with its true spacing. The DICOM files are written
for real with SimpleITK.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from RegSegLib import cli
from RegSegLib.errors import InputError
from RegSegLib.io import read_volume

SERIES_UID = "1.2.826.0.1.3680043.2.1125.9.2.1"
STUDY_UID = "1.2.826.0.1.3680043.2.1125.9.2"
SLICES, SLICE_SPACING, PIXEL_SPACING = 6, 2.5, 1.5
B_VALUES = (0, 500, 1000)


def _write_series(folder: Path, values=B_VALUES, tag: str = "0018|9087", first_instance: int = 1) -> Path:
    """Writes ``len(values)`` volumes of SLICES 8x8 slices into ``folder`` as one series, ``tag`` set per volume."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    instance = first_instance
    for volume, value in enumerate(values):
        for k in range(SLICES):
            image = sitk.GetImageFromArray(np.full((1, 8, 8), 100 * volume + k, dtype=np.int16))
            image.SetSpacing((PIXEL_SPACING, PIXEL_SPACING, 1.0))
            position = (-6.0, -6.0, 10.0 + k * SLICE_SPACING)
            image.SetOrigin(position)
            tags = {
                "0008|0060": "MR",
                "0020|000e": SERIES_UID,
                "0020|000d": STUDY_UID,
                "0020|0032": "\\".join(f"{v:g}" for v in position),
                "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0013": str(instance),
                "0028|0030": f"{PIXEL_SPACING:g}\\{PIXEL_SPACING:g}",
                tag: str(value),
            }
            for key, text in tags.items():
                image.SetMetaData(key, text)
            writer.SetFileName(str(folder / f"IM{instance:04d}.dcm"))
            writer.Execute(image)
            instance += 1
    return folder


@pytest.mark.parametrize(
    "tag, values, words",
    [
        ("0018|9087", B_VALUES, "b-values 0, 500, 1000"),
        ("0020|0012", (1, 2, 3), "acquisition numbers 1, 2, 3"),
        ("0018|0086", (1, 2, 3), "echo numbers 1, 2, 3"),
    ],
)
def test_series_of_three_volumes_is_refused_naming_what_tells_them_apart(tmp_path, tag, values, words):
    folder = _write_series(tmp_path / "dwi", values, tag)
    with pytest.raises(InputError) as info:
        read_volume(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: holds 3 volumes of {SLICES} slices in one series"), message
    assert words in message and "own folder" in message, message


def test_real_prostatex_dwi_series_is_refused_with_its_b_values(shared_data):
    # The audit's case: 3 b-values x 19 slices, once read as 57 slices 0.96 mm apart.
    folder = shared_data / "prostatex/ProstateX-0000/07-07-2011/6.000000-ep2ddifftraDYNDIST-69284"
    with pytest.raises(InputError, match=r"holds 3 volumes of 19 slices in one series \(b-values 50, 400, 800\)"):
        read_volume(folder)


def test_each_b_value_in_its_own_folder_reads_with_its_slice_spacing(tmp_path):
    for index, b_value in enumerate(B_VALUES):
        folder = _write_series(tmp_path / f"b{b_value}", (b_value,), first_instance=1 + index * SLICES)
        volume = read_volume(folder)
        assert volume.shape == (SLICES, 8, 8)
        np.testing.assert_allclose(np.linalg.norm(volume.ijk_to_ras[:3, :3], axis=0), [PIXEL_SPACING] * 2 + [SLICE_SPACING])
        data = volume.data[0].numpy()
        assert [int(data[k, 0, 0]) for k in range(SLICES)] == list(range(SLICES))  # slices in position order, one volume
        assert data.max() < 100  # the first written volume of this folder only, no other mixed in


def test_register_refuses_a_multi_volume_dicom_folder_with_one_line(tmp_path, capfd):
    dwi = _write_series(tmp_path / "dwi")
    single = _write_series(tmp_path / "b0", (0,))
    out = tmp_path / "out"
    capfd.readouterr()
    assert cli.main(["register", str(single), str(dwi), "-o", str(out), "--device", "cpu"]) == 2
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured
    assert all(line.startswith("regseg: [") for line in captured.out.splitlines()), captured  # stage lines only
    assert lines[0].startswith("regseg: error: ") and str(dwi) in lines[0] and "3 volumes" in lines[0], lines[0]
    assert "b-values 0, 500, 1000" in lines[0], lines[0]
    assert not out.exists()
    assert not any(path.name.startswith(".") for path in tmp_path.iterdir())  # no hidden partial output left


def test_the_same_slices_saved_twice_are_called_copies_not_volumes(tmp_path):
    folder = _write_series(tmp_path / "t2", (0,))
    for path in sorted(folder.iterdir()):
        (folder / f"copy_{path.name}").write_bytes(path.read_bytes())
    with pytest.raises(InputError, match=rf"holds {2 * SLICES} DICOM files but only {SLICES} distinct slices"):
        read_volume(folder)
