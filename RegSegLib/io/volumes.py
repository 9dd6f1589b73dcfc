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
            header = _raw_nifti_header(image, path)  # as stored: the loaded one has vox_offset reset to 0
            _check_nifti_header(header, path)
            affine = np.asarray(image.affine, dtype=np.float64)
            _check_nifti_data_size(header, path)
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
                f"its header describes ({_dims(shape)} {dtype.name}); the file is truncated or has no data",
            )
    elif size - offset < described:
        raise InputError(
            path,
            f"holds {max(size - offset, 0)} bytes of voxel data but its header describes {described} "
            f"({_dims(shape)} {dtype.name} from byte {offset}); the file is truncated or has no data",
        )
    _check_read_memory(shape, dtype.itemsize, path)


def _check_read_memory(shape: tuple[int, ...], itemsize: int, path: Path) -> None:
    """Refuses, before reading, a volume whose voxels (held as float32 or wider) exceed free host memory."""
    from RegSegLib.runtime import check_memory

    voxels = int(np.prod(shape, dtype=object))
    check_memory(
        voxels * max(itemsize, 4),
        torch.device("cpu"),
        f"reading this {_dims(shape)} volume",
        hint="crop or downsample it, or free memory",
        path=path,
    )


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


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

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: size and pixel type, to estimate before reading
        size = tuple(int(n) for n in reader.GetSize())[::-1] + (int(reader.GetNumberOfComponents()),)
        _check_read_memory(size, _sitk_component_bytes(reader.GetPixelID()), path)
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image ({itk_error_reason(exc)})") from exc
    return _sitk_to_volume(image, path)


def _sitk_component_bytes(pixel_id: int) -> int:
    """Bytes per component of a SimpleITK pixel type ("vector of 64-bit float" -> 8, complex doubled)."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", name)
    return (int(bits.group(1)) // 8 if bits else 8) * (2 if "complex" in name else 1)


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
    _check_one_volume_per_series(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"cannot read DICOM series ({itk_error_reason(exc)})") from exc
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        raise InputError(folder, "DICOM series has a single slice; a 3D volume is needed")
    return _sitk_to_volume(image, folder)


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
