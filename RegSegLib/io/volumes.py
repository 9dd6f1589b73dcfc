"""Reading and writing volumes (NIfTI, NRRD, MHA/MHD, DICOM series).

NIfTI goes through nibabel (its affine is already RAS; arrays ``[I, J, K(, C)]`` are transposed to
``[C, K, J, I]``). NRRD, MHA and DICOM go through SimpleITK (LPS geometry converted to RAS in
:mod:`RegSegLib.geometry`). Every writer writes to a temporary name beside the target and renames it,
so a failed write leaves nothing half-written.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.checks import check_voxel_geometry
from RegSegLib.io.files import atomic_output, check_exists, full_suffix
from RegSegLib.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


def read_volume(path: str | os.PathLike) -> Volume:
    """Reads a 3D or 4D volume.

    Args:
        path: a NIfTI, NRRD, MHA/MHD file or a folder holding one DICOM series.

    Returns:
        Volume ``[C, K, J, I]``; integer files stay integer, scaled or float files become float32.

    Raises:
        InputError: missing, unreadable, unsupported or 2D input; complex values; a voxel geometry
            that is singular, sheared or has a zero, negative or non-finite NIfTI voxel size
            (:func:`RegSegLib.io.checks.check_voxel_geometry`); a folder of several DICOM series.
    """
    path = Path(path)
    check_exists(path)
    if path.is_dir():
        volume = _read_dicom_series(path)
    else:
        suffix = full_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            volume = _read_nifti(path)
        elif suffix in ITK_SUFFIXES or suffix == ".dcm":
            volume = _read_with_sitk(path)
        else:
            raise InputError(
                path, f"unsupported format {suffix or '(no suffix)'}; use NIfTI, NRRD, MHA/MHD or a DICOM folder"
            )
    volume.meta["path"] = str(path)
    return volume


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    from nibabel.imageglobals import LoggingOutputSuppressor

    try:
        # nibabel logs and warns about (and silently fixes) bad headers; the checks below say it in one line
        with LoggingOutputSuppressor(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = nib.load(str(path))
            _check_nifti_header(_raw_nifti_header(image, path), path)
            affine = np.asarray(image.affine, dtype=np.float64)
            raw = np.asanyarray(image.dataobj)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(path, f"cannot read NIfTI file ({exc})") from exc
    _check_real(raw, path)
    if raw.ndim < 3 or (raw.ndim == 3 and 1 in raw.shape[:2] and raw.shape[2] == 1):
        raise InputError(path, f"is a 2D image of shape {raw.shape}; a 3D volume is needed")
    if raw.ndim == 5 and raw.shape[3] == 1:
        raw = raw[:, :, :, 0, :]
    if raw.ndim > 4:
        raise InputError(path, f"has {raw.ndim} dimensions {raw.shape}; a 3D or 4D volume is needed")
    if raw.ndim == 3:
        raw = raw[..., None]
    data = np.ascontiguousarray(np.transpose(raw, (3, 2, 1, 0)))
    data = _torch_friendly(data)
    return Volume(torch.from_numpy(data), affine)


def _raw_nifti_header(image, path: Path):
    """The header as stored: nibabel's loaded header has bad ``pixdim`` values already replaced."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as handle:
        return type(image.header).from_fileobj(handle, check=False)


def _check_nifti_header(header, path: Path) -> None:
    """Refuses voxel sizes (``pixdim``) that are zero, negative or not finite, and singular or sheared
    ``sform``/``qform`` matrices (the one nibabel's affine comes from)."""
    spatial = int(min(max(int(header["dim"][0]), 1), 3))
    pixdim = np.asarray(header["pixdim"][1 : 1 + spatial], dtype=np.float64)
    if not np.isfinite(pixdim).all() or np.any(pixdim <= 0):
        values = " ".join(f"{v:g}" for v in pixdim)
        raise InputError(path, f"has NIfTI voxel sizes (pixdim) {values}; every voxel size must be a positive number of mm")
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        check_voxel_geometry(header.get_sform(), path, "NIfTI sform")
    elif qform_code > 0:
        quaternion = np.asarray([header["quatern_b"], header["quatern_c"], header["quatern_d"]], dtype=np.float64)
        if not np.isfinite(quaternion).all() or float(quaternion @ quaternion) > 1.0 + 1e-6:
            raise InputError(path, "has an invalid NIfTI qform (quaternion of norm above 1 or not finite)")
        check_voxel_geometry(header.get_qform(), path, "NIfTI qform")


def _check_real(array: np.ndarray, path: Path) -> None:
    if np.iscomplexobj(array):
        raise InputError(
            path, f"holds complex values ({array.dtype}); RegSeg needs a real-valued image (save its magnitude)"
        )


def _torch_friendly(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype in (np.uint16, np.uint32, np.uint64):
        return data.astype(np.int64 if data.dtype != np.uint16 else np.int32)
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        return data.astype(np.float32)
    return data


def _sitk_to_volume(image, path: Path) -> Volume:
    import SimpleITK as sitk

    dimension = image.GetDimension()
    if dimension == 2:
        raise InputError(path, f"is a 2D image of size {image.GetSize()}; a 3D volume is needed")
    if dimension > 4:
        raise InputError(path, f"has {dimension} dimensions; a 3D or 4D volume is needed")
    array = sitk.GetArrayFromImage(image)
    _check_real(array, path)
    if dimension == 4:
        origin, spacing = image.GetOrigin()[:3], image.GetSpacing()[:3]
        direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3].reshape(-1)
        data = array if image.GetNumberOfComponentsPerPixel() == 1 else None
        if data is None:
            raise InputError(path, "4D vector images are not supported")
    else:
        origin, spacing, direction = image.GetOrigin(), image.GetSpacing(), image.GetDirection()
        data = array[None] if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(array, -1, 0)
    data = _torch_friendly(np.ascontiguousarray(data))
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


def _read_with_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image ({itk_error_reason(exc)})") from exc
    return _sitk_to_volume(image, path)


def _read_dicom_series(folder: Path) -> Volume:
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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"cannot read DICOM series ({itk_error_reason(exc)})") from exc
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        raise InputError(folder, "DICOM series has a single slice; a 3D volume is needed")
    return _sitk_to_volume(image, folder)


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


def write_volume(volume: Volume, path: str | os.PathLike) -> None:
    """Writes a volume; NIfTI through nibabel, NRRD/MHA through SimpleITK, atomically.

    Integer volumes are written as integers (int16/uint8/int32 as the values need), float as float32.

    Raises:
        InputError: unsupported suffix or unwritable folder.
    """
    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(path, f"unsupported output format {suffix or '(no suffix)'}; use .nii.gz, .nrrd or .mha")
    data = volume.data.detach().cpu().numpy()
    data = _storage_dtype(data)
    with atomic_output(path) as temp:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(data, volume.ijk_to_ras, temp)
        else:
            _write_with_sitk(data, volume.ijk_to_ras, temp)


def _storage_dtype(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32)
    if data.size == 0:
        return data.astype(np.int16)
    low, high = int(data.min()), int(data.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return data.astype(dtype)
    return data.astype(np.int64)


def _write_nifti(data: np.ndarray, ijk_to_ras: np.ndarray, filename: str) -> None:
    import nibabel as nib

    array = np.transpose(data, (3, 2, 1, 0))
    if array.shape[3] == 1:
        array = array[..., 0]
    image = nib.Nifti1Image(np.ascontiguousarray(array), ijk_to_ras)
    image.set_sform(ijk_to_ras, code=1)
    image.set_qform(ijk_to_ras, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, filename)


def volume_to_sitk(volume_data: np.ndarray, ijk_to_ras: np.ndarray, vector: bool = False):
    """A SimpleITK image from ``[C, K, J, I]`` data (one channel, or ``vector=True`` for a vector image)."""
    import SimpleITK as sitk

    if vector:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(volume_data, 0, -1)), isVector=True)
    else:
        if volume_data.shape[0] != 1:
            raise ValueError(f"expected one channel, got {volume_data.shape[0]}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume_data[0]))
    origin, spacing, direction = geometry.itk_geometry_from_ijk_to_ras(ijk_to_ras)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _write_with_sitk(data: np.ndarray, ijk_to_ras: np.ndarray, filename: str) -> None:
    import SimpleITK as sitk

    image = volume_to_sitk(data, ijk_to_ras, vector=data.shape[0] > 1)
    sitk.WriteImage(image, filename, useCompression=True)
