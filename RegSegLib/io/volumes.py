"""Reading and writing volumes (NIfTI, NRRD, MHA/MHD, DICOM series).

NIfTI goes through nibabel (its affine is already RAS; arrays ``[I, J, K(, C)]`` are transposed to
``[C, K, J, I]``). NRRD, MHA and DICOM go through SimpleITK (LPS geometry converted to RAS in
:mod:`RegSegLib.geometry`). Every writer writes to a temporary name beside the target and renames it,
so a failed write leaves nothing half-written.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.arrays import check_read_memory, check_real, check_voxel_geometry, dims, torch_friendly
from RegSegLib.io import prefetch
from RegSegLib.io.files import atomic_output, check_exists, full_suffix
from RegSegLib.io.itk_images import read_dicom_series, read_with_sitk
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
            (:func:`RegSegLib.io.arrays.check_voxel_geometry`); a folder of several DICOM series.
    """
    path = Path(path)
    check_exists(path)
    if path.is_dir():
        volume = read_dicom_series(path)
    else:
        suffix = full_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            volume = _read_nifti(path)
        elif suffix in ITK_SUFFIXES or suffix == ".dcm":
            volume = read_with_sitk(path)
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
            content = prefetch.take(path)
            image = _nifti_from_bytes(content) if content is not None else None
            if image is None:
                image, content = nib.load(str(path)), None
            header = _raw_nifti_header(image, path, content)  # as stored: the loaded one has vox_offset reset to 0
            _check_nifti_header(header, path)
            affine = np.asarray(image.affine, dtype=np.float64)
            _check_nifti_data_size(header, path)
            raw = np.asanyarray(image.dataobj)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(path, f"cannot read NIfTI file ({exc})") from exc
    check_real(raw, path)
    if raw.ndim < 3 or (raw.ndim == 3 and 1 in raw.shape[:2] and raw.shape[2] == 1):
        raise InputError(path, f"is a 2D image of shape {raw.shape}; a 3D volume is needed")
    if raw.ndim == 5 and raw.shape[3] == 1:
        raw = raw[:, :, :, 0, :]
    if raw.ndim > 4:
        raise InputError(path, f"has {raw.ndim} dimensions {raw.shape}; a 3D or 4D volume is needed")
    if raw.ndim == 3:
        raw = raw[..., None]
    data = np.ascontiguousarray(np.transpose(raw, (3, 2, 1, 0)))
    data = torch_friendly(data)
    return Volume(torch.from_numpy(data), affine)


DEFLATE_MAX_RATIO = 1032
"""The most deflate can compress: a ``.nii.gz`` of ``n`` bytes holds at most ``1032 n`` bytes."""


def _check_nifti_data_size(header, path: Path) -> None:
    """Before any voxel is read: refuses a file too short for what its header describes (a header-only or
    truncated file) and a volume that does not fit in free memory.

    A ``.nii`` holds ``file size - vox_offset`` bytes of voxel data. The uncompressed size of a ``.nii.gz``
    cannot be known without inflating it (the gzip trailer's ISIZE is modulo 2^32 and covers only the
    last member), so only deflate's bound is checked there: it catches a header-only file, not a
    slightly truncated one (nibabel reports that one when reading).
    """
    shape = tuple(int(n) for n in header.get_data_shape())
    dtype = np.dtype(header.get_data_dtype())
    described = int(np.prod(shape, dtype=object)) * dtype.itemsize
    offset = int(header.get_data_offset())
    size = path.stat().st_size
    if full_suffix(path) == ".nii.gz":
        if described > DEFLATE_MAX_RATIO * size:
            raise InputError(
                path,
                f"is a {size}-byte compressed file, which cannot hold the {described} bytes of voxel data "
                f"its header describes ({dims(shape)} {dtype.name}); the file is truncated or has no data",
            )
    elif size - offset < described:
        raise InputError(
            path,
            f"holds {max(size - offset, 0)} bytes of voxel data but its header describes {described} "
            f"({dims(shape)} {dtype.name} from byte {offset}); the file is truncated or has no data",
        )
    check_read_memory(shape, dtype.itemsize, path)


def _nifti_from_bytes(content: bytes):
    """A single-file NIfTI-1 or NIfTI-2 image parsed from its (inflated) bytes, or ``None`` when the bytes are
    not one (the file is then read from disk, where nibabel says what is wrong with it)."""
    import nibabel as nib

    kinds = ((nib.Nifti1Image, 344, b"n+1\0"), (nib.Nifti2Image, 4, b"n+2\0"))
    for kind, offset, magic in kinds:
        if content[offset : offset + 4] == magic:
            try:
                return kind.from_bytes(content)
            except Exception:  # nibabel raises many types for corrupt bytes: read the file instead
                return None
    return None


def _raw_nifti_header(image, path: Path, content: bytes | None = None):
    """The header as stored (from the bytes read ahead, else from the file): nibabel's loaded header has bad
    ``pixdim`` values already replaced."""
    from nibabel.openers import ImageOpener

    if content is not None:
        return type(image.header).from_fileobj(io.BytesIO(content), check=False)
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

    array = np.transpose(data, (3, 2, 1, 0))  # Fortran-ordered [I, J, K, C]: the order NIfTI stores
    if array.shape[3] == 1:
        array = array[..., 0]
    image = nib.Nifti1Image(array, ijk_to_ras)
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
