"""Images read through SimpleITK: NRRD, MHA/MHD and single DICOM files, and DICOM series folders.

ITK's geometry is LPS; it becomes RAS through :func:`RegSegLib.geometry.ijk_to_ras_from_itk`. A DICOM folder
must hold one series of one volume: a series whose slices repeat positions (several b-values, echoes or
acquisitions) is refused before any pixel is read, naming what tells its volumes apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.arrays import check_read_memory, check_real, check_voxel_geometry, torch_friendly
from RegSegLib.volume import Volume


def sitk_to_volume(image, path: Path) -> Volume:
    import SimpleITK as sitk

    dimension = image.GetDimension()
    if dimension == 2:
        raise InputError(path, f"is a 2D image of size {image.GetSize()}; a 3D volume is needed")
    if dimension > 4:
        raise InputError(path, f"has {dimension} dimensions; a 3D or 4D volume is needed")
    array = sitk.GetArrayFromImage(image)
    check_real(array, path)
    if dimension == 4:
        origin, spacing = image.GetOrigin()[:3], image.GetSpacing()[:3]
        direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3].reshape(-1)
        data = array if image.GetNumberOfComponentsPerPixel() == 1 else None
        if data is None:
            raise InputError(path, "4D vector images are not supported")
    else:
        origin, spacing, direction = image.GetOrigin(), image.GetSpacing(), image.GetDirection()
        data = array[None] if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(array, -1, 0)
    data = torch_friendly(np.ascontiguousarray(data))
    if not np.all(np.asarray(spacing, dtype=np.float64) > 0):
        raise InputError(path, f"has voxel sizes {' '.join(f'{v:g}' for v in spacing)}; every voxel size must be positive")
    ijk_to_ras = geometry.ijk_to_ras_from_itk(origin, spacing, direction)
    check_voxel_geometry(ijk_to_ras, str(path), "voxel geometry (spacing and directions)")
    return Volume(torch.from_numpy(data), ijk_to_ras)


def itk_error_reason(exc: Exception) -> str:
    """The reason an ITK exception gives, as one line without its ``ITK ERROR: Class(0x...):`` prefix.

    ITK messages span several lines (a direction matrix is printed row by row), so the whole text after
    the prefix is joined; a singular direction matrix is said in words.
    """
    text = str(exc).strip()
    if not text:
        return "unknown reason"
    match = re.search(r"ITK ERROR: \w+\(0x[0-9a-fA-F]+\):\s*(.*)", text, flags=re.DOTALL)
    reason = " ".join((match.group(1) if match else text.splitlines()[-1]).split())
    if "Bad direction, determinant is 0" in reason:
        return "its direction matrix is singular (determinant 0): the voxel axes do not span 3D space"
    return reason[:200]


def read_with_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: size and pixel type, to estimate before reading
        size = tuple(int(n) for n in reader.GetSize())[::-1] + (int(reader.GetNumberOfComponents()),)
        check_read_memory(size, _sitk_component_bytes(reader.GetPixelID()), path)
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image ({itk_error_reason(exc)})") from exc
    return sitk_to_volume(image, path)


def _sitk_component_bytes(pixel_id: int) -> int:
    """Bytes per component of a SimpleITK pixel type ("vector of 64-bit float" -> 8, complex doubled)."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", name)
    return (int(bits.group(1)) // 8 if bits else 8) * (2 if "complex" in name else 1)


def read_dicom_series(folder: Path) -> Volume:
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        below = _series_folders_below(folder)
        if below:
            names = ", ".join(str(Path(f).relative_to(folder)) for f in below[:5]) + (", ..." if len(below) > 5 else "")
            raise InputError(
                folder,
                f"folder holds no DICOM files itself but {len(below)} DICOM series folder(s) below it ({names}); "
                f"give one series folder, e.g. {below[0]}",
            )
        raise InputError(folder, "folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(folder, f"folder holds {len(series)} DICOM series ({', '.join(series)}); give one series folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    _check_one_volume_per_series(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"cannot read DICOM series ({itk_error_reason(exc)})") from exc
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        raise InputError(folder, "DICOM series has a single slice; a 3D volume is needed")
    return sitk_to_volume(image, folder)


# Tags that tell the volumes of one series apart, in the order they are tried: (what they are, how to
# read one from a slice's header). Siemens keeps the b-value in a private tag or in the sequence name.
_VOLUME_TAGS = (
    ("b-values", ("0018|9087", "0019|100c", "2001|1003", "0043|1039", "0018|0024")),
    ("echo numbers", ("0018|0086",)),
    ("acquisition numbers", ("0020|0012",)),
    ("temporal positions", ("0020|0100",)),
)


def _b_value(key: str, text: str) -> float | None:
    if key == "0018|0024":  # Siemens sequence name, e.g. "*ep_b800t"
        match = re.search(r"_b(\d+)", text)
        return float(match.group(1)) if match else None
    value = _first_number(text)
    if value is not None and key == "0043|1039":  # GE: the first value, offset by 1e9 on some scanners
        value %= 1e9
    return value


def _first_number(text: str) -> float | None:
    try:
        value = float(text.split("\\")[0])
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _slice_headers(files) -> list[dict[str, str]]:
    """The tags that place a slice and tell volumes apart, read from each file's header (no pixel data)."""
    import SimpleITK as sitk

    keys = ["0020|0032", "0008|0018"] + [key for _name, tags in _VOLUME_TAGS for key in tags]
    headers = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.LoadPrivateTagsOn()
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            headers.append({})  # the series reader says what is wrong with it
            continue
        headers.append({key: reader.GetMetaData(key).strip() for key in keys if reader.HasMetaDataKey(key)})
    return headers


def _check_one_volume_per_series(folder: Path, files) -> None:
    """Refuses a series whose slices repeat positions: several volumes (DWI b-values, echoes, time points).

    ITK would stack them into one volume with a wrong slice spacing and only warn.
    """
    import SimpleITK as sitk

    if len(files) < 2:
        return
    warning_display = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # nothing printed before the one error line
    try:
        headers = _slice_headers(files)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warning_display)
    positions = []
    for header in headers:
        numbers = [_first_number(v) for v in header.get("0020|0032", "").split("\\")]
        if len(numbers) != 3 or None in numbers:
            return  # positions unknown: nothing to check
        positions.append(tuple(round(v, 2) for v in numbers))
    per_position: dict[tuple, list[int]] = {}
    for index, position in enumerate(positions):
        per_position.setdefault(position, []).append(index)
    repeats = max(len(indices) for indices in per_position.values())
    if repeats == 1:
        return
    uids = [header.get("0008|0018") for header in headers]
    if all(uids) and len(set(uids)) < len(uids):
        raise InputError(
            folder,
            f"holds {len(files)} DICOM files but only {len(set(uids))} distinct slices (the same slice saved "
            "more than once); keep one copy of each",
        )
    slices = len(per_position)
    description = _what_tells_volumes_apart(headers, positions)
    if len({len(indices) for indices in per_position.values()}) == 1:
        holds = f"holds {repeats} volumes of {slices} slices in one series"
    else:
        holds = f"holds {len(files)} slices at only {slices} positions (up to {repeats} per position) in one series"
    raise InputError(
        folder,
        f"{holds} ({description}); RegSeg reads one volume per folder: put each volume in its own folder",
    )


def _what_tells_volumes_apart(headers: list[dict[str, str]], positions: list[tuple]) -> str:
    """Names the tag whose values split the slices into volumes without repeated positions, with its values."""
    for name, keys in _VOLUME_TAGS:
        for key in keys:
            read = _b_value if name == "b-values" else (lambda _key, text: _first_number(text))
            values = [read(key, header[key]) if header.get(key) else None for header in headers]
            if None in values or len(set(values)) < 2:
                continue
            seen = {(value, position) for value, position in zip(values, positions)}
            if len(seen) == len(positions):  # no position repeats within one value
                return f"{name} {', '.join(f'{v:g}' for v in sorted(set(values)))}"
    return "slices repeat the same positions; no b-value, echo, acquisition or temporal tag tells them apart"


def _series_folders_below(folder: Path, limit: int = 50) -> list[str]:
    """Subfolders (any depth, in name order) that hold a DICOM series, at most ``limit`` of them."""
    import SimpleITK as sitk

    found: list[str] = []
    for root, dirs, _files in os.walk(folder):
        dirs.sort()
        if Path(root) != folder and sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
            found.append(root)
            dirs.clear()  # a series folder's own subfolders are not searched
            if len(found) >= limit:
                break
    return found
