"""Slicer segmentation files (``.seg.nrrd``) holding a label map and what its labels are.

The file is a NRRD image with one layer (a 3D label map of ``unsigned char`` or ``unsigned short``) plus
``Segmentation_*`` and ``Segment{N}_*`` key/value fields, as Slicer's segmentation storage node writes and
reads them (https://slicer.readthedocs.io/en/latest/developer_guide/modules/segmentations.html). The
geometry is written in LPS (``space: left-posterior-superior``, space directions and origin from
:func:`RegSegLib.geometry.itk_geometry_from_ijk_to_ras`'s convention): Slicer turns it back into the same
IJK-to-RAS matrix.

``SegmentN_Extent`` is the bounding box (voxel indices ``i0 i1 j0 j1 k0 k1`` of the file's grid) of the
segment's own label, ``0 -1 0 -1 0 -1`` when the label is absent. Slicer 5.8 and later read the union of the
extents of the segments of a layer (earlier versions cropped the shared layer to the first segment's extent).
The reference image geometry among the conversion parameters is the label map's grid, so that Slicer's
Segment Editor edits on that grid.

The header is written here from the NRRD specification; files are read through SimpleITK (ITK's NRRD reader,
which also reads what Slicer writes, detached ``.seg.nhdr`` headers included).
"""

from __future__ import annotations

import gzip
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.files import atomic_output, check_exists

if TYPE_CHECKING:
    from RegSegLib.volume import Volume

TERMINOLOGY_KEY = "TerminologyEntry"
"""The segment tag that holds the terminology entry."""

TERMINOLOGY_PARTS = 7
"""A terminology entry's ``~``-separated parts: context, category, type, type modifier, anatomic context,
anatomic region, anatomic region modifier (each coded part ``scheme^value^meaning``)."""

PROSTATE_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^41216001^Prostate~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)
"""The prostate gland in Slicer's General Anatomy list: category SNOMED CT 123037004 (Anatomical Structure),
type SNOMED CT 41216001 (Prostate)."""

PROSTATE_COLOUR: tuple[float, float, float] = (230 / 255, 158 / 255, 140 / 255)
"""The display colour that list recommends for the prostate, 0-1 RGB."""

MAX_LABEL = int(np.iinfo(np.uint16).max)
"""The largest label value a file holds (``unsigned short`` voxels)."""

BINARY_LABELMAP = "Binary labelmap"

_NRRD_TYPES = {np.dtype(np.uint8): "unsigned char", np.dtype("<u2"): "unsigned short"}

_CONVERSION_PARAMETERS = (
    ("Decimation factor", "0.0", "Fraction of surface polygons removed (0: none, 1: as many as possible)."),
    ("Smoothing factor", "0.5", "Surface smoothing (0: none, 1: strong)."),
    ("Compute surface normals", "1", "1: compute surface normals, 0: do not."),
    ("Joint smoothing", "0", "1: smooth all segments together, 0: one at a time."),
    ("Oversampling factor", "1", "Oversampling of the reference image geometry (1: none)."),
    ("Crop to reference image geometry", "0", "1: crop labelmaps made from surfaces to the reference geometry."),
    ("Collapse labelmaps", "1", "1: merge labelmaps into as few shared layers as possible."),
)
"""Conversion parameters (name, value, description) besides the reference image geometry: Slicer's defaults."""

REFERENCE_GEOMETRY_PARAMETER = "Reference image geometry"


@dataclass(frozen=True)
class Segment:
    """One segment of a segmentation: a label value of the label map and what it shows.

    Attributes:
        label: the voxel value of the segment, 1 to :data:`MAX_LABEL`.
        name: the name Slicer shows.
        colour: display colour, 0-1 RGB.
        terminology: Slicer's terminology entry (``context~category~type~type modifier~anatomic
            context~region~region modifier``, coded parts ``scheme^value^meaning``), e.g.
            :data:`PROSTATE_TERMINOLOGY`; ``None`` for none.

    Raises:
        ValueError: a label out of range, an empty name, a colour that is not three values in 0-1, or a
            terminology entry without its seven parts (or holding ``|``, which separates segment tags).
    """

    label: int
    name: str
    colour: tuple[float, float, float]
    terminology: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.label, bool):
            raise ValueError(f"segment {self.name!r}: label must be an integer, got {self.label!r}")
        try:
            label = operator.index(self.label)
        except TypeError:
            raise ValueError(f"segment {self.name!r}: label must be an integer, got {self.label!r}") from None
        if not 1 <= label <= MAX_LABEL:
            raise ValueError(
                f"segment {self.name!r}: label {label} is out of range 1-{MAX_LABEL} (0 is the background)"
            )
        object.__setattr__(self, "label", label)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"segment of label {label}: the name must be a non-empty string, got {self.name!r}")
        colour = tuple(float(c) for c in self.colour)
        if len(colour) != 3 or not all(0.0 <= c <= 1.0 for c in colour):
            raise ValueError(f"segment {self.name!r}: colour must be three values in 0-1 (RGB), got {self.colour!r}")
        object.__setattr__(self, "colour", colour)
        if self.terminology is not None:
            entry = self.terminology
            if not isinstance(entry, str) or entry.count("~") != TERMINOLOGY_PARTS - 1 or "|" in entry:
                raise ValueError(
                    f"segment {self.name!r}: terminology entry {self.terminology!r} must have {TERMINOLOGY_PARTS} "
                    "parts separated by '~' and no '|'"
                )


def write_segmentation_nrrd(labels: "Volume", segments: Sequence[Segment], path: str | os.PathLike) -> None:
    """Writes a label map and its segments as a Slicer segmentation file (``.seg.nrrd``), atomically.

    Args:
        labels: ``[1, K, J, I]`` integer label map; 0 is the background.
        segments: one :class:`Segment` per label value of the map (a segment whose label is absent is
            written as an empty segment).
        path: the output file; its folder must exist.

    Raises:
        ValueError: more than one channel, a non-integer or non-finite map, negative or too large values,
            duplicate segment labels, or label values in the map that no segment names.
        InputError: the output folder does not exist or cannot be written (nothing is written).
    """
    data = _label_array(labels)
    extents = _segment_extents(data, segments)
    header = _header(data, labels.ijk_to_ras, segments, extents)
    with atomic_output(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(header.encode("utf-8"))
            with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=6, mtime=0) as compressed:
                compressed.write(np.ascontiguousarray(data).tobytes())


def read_segmentation_nrrd(path: str | os.PathLike) -> tuple["Volume", list[Segment]]:
    """Reads a single-layer Slicer segmentation file (``.seg.nrrd`` or ``.seg.nhdr``).

    Args:
        path: the file.

    Returns:
        ``(labels, segments)``: the ``[1, K, J, I]`` label map (kind ``labels``, RAS geometry; voxels whose
        value no segment has are 0, as Slicer shows them) and the segments in file order.

    Raises:
        InputError: missing or unreadable file, a file that is not a Slicer segmentation, segments in more
            than one layer (overlapping segments), or missing or invalid segment fields.
    """
    import SimpleITK as sitk
    import torch

    from RegSegLib.io.itk_images import itk_error_reason, read_with_sitk
    from RegSegLib.volume import Volume

    path = Path(path)
    check_exists(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read segmentation ({itk_error_reason(exc)})") from exc
    fields = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    if "Segment0_ID" not in fields and not any(key.startswith("Segmentation_") for key in fields):
        raise InputError(path, "is not a Slicer segmentation: it has no Segment0_ID or Segmentation_ fields")
    if reader.GetDimension() != 3:
        raise InputError(path, f"is a {reader.GetDimension()}D image; a segmentation is 3D")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            path,
            f"holds {reader.GetNumberOfComponents()} layers (overlapping segments); "
            "only a single-layer segmentation is one label map",
        )
    segments = _segments_from_fields(fields, path)
    volume = read_with_sitk(path)
    data = volume.data.long()
    known = torch.as_tensor([segment.label for segment in segments], dtype=torch.long)
    data = torch.where(torch.isin(data, known), data, torch.zeros_like(data))
    storage = torch.uint8 if int(data.max()) <= np.iinfo(np.uint8).max else torch.int32
    loaded = Volume(data.to(storage), volume.ijk_to_ras, {"path": str(path)}, kind="labels")
    return loaded, segments


def _label_array(labels: "Volume") -> np.ndarray:
    """The ``[K, J, I]`` array to store: ``uint8`` when every value fits, else little-endian ``uint16``."""
    if labels.num_channels != 1:
        raise ValueError(f"a segmentation label map has one channel, got {labels.num_channels}")
    if not labels.is_integer:
        raise ValueError(f"a segmentation label map needs an integer dtype, got {labels.data.dtype}")
    if not np.isfinite(labels.ijk_to_ras).all():
        raise ValueError("the label map's ijk_to_ras holds non-finite values")
    data = labels.data[0].detach().cpu().numpy()
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0 or high > MAX_LABEL:
        raise ValueError(f"label values must lie in 0-{MAX_LABEL}, got {low} to {high}")
    return data.astype(np.uint8 if high <= np.iinfo(np.uint8).max else np.dtype("<u2"))


def _segment_extents(data: np.ndarray, segments: Sequence[Segment]) -> list[tuple[int, ...]]:
    """Each segment's bounding box ``(i0, i1, j0, j1, k0, k1)`` in voxel indices, ``(0, -1, 0, -1, 0, -1)`` when its
    label is absent, after checking that the segments' labels are distinct and name every label of the map."""
    from scipy import ndimage

    labels = [segment.label for segment in segments]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"each label needs one segment; label(s) {', '.join(map(str, repeated))} have several")
    boxes = ndimage.find_objects(data)
    unnamed = sorted({index + 1 for index, box in enumerate(boxes) if box is not None} - set(labels))
    if unnamed:
        shown = ", ".join(map(str, unnamed[:10])) + (", ..." if len(unnamed) > 10 else "")
        raise ValueError(
            f"label value(s) {shown} of the label map have no segment; give each a Segment or set them to 0"
        )
    extents = []
    for label in labels:
        box = boxes[label - 1] if label <= len(boxes) else None
        if box is None:
            extents.append((0, -1, 0, -1, 0, -1))
        else:
            k, j, i = box
            extents.append((i.start, i.stop - 1, j.start, j.stop - 1, k.start, k.stop - 1))
    return extents


def _header(
    data: np.ndarray, ijk_to_ras: np.ndarray, segments: Sequence[Segment], extents: Sequence[tuple[int, ...]]
) -> str:
    """The NRRD header (ending with its blank line) of a gzip-encoded ``[K, J, I]`` label map."""
    ijk_to_lps = geometry.LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64)
    k, j, i = data.shape
    directions = " ".join(_vector(ijk_to_lps[:3, axis]) for axis in range(3))
    lines = [
        "NRRD0004",
        f"type: {_NRRD_TYPES[data.dtype]}",
        "dimension: 3",
        "space: left-posterior-superior",
        f"sizes: {i} {j} {k}",
        f"space directions: {directions}",
        "kinds: domain domain domain",
        "endian: little",
        "encoding: gzip",
        f"space origin: {_vector(ijk_to_lps[:3, 3])}",
    ]
    fields: dict[str, str] = {}
    for index, (segment, extent) in enumerate(zip(segments, extents)):
        prefix = f"Segment{index}_"
        tags = f"{TERMINOLOGY_KEY}:{segment.terminology}|" if segment.terminology is not None else ""
        fields.update(
            {
                prefix + "Color": " ".join(_number(c) for c in segment.colour),
                prefix + "ColorAutoGenerated": "0",
                prefix + "Extent": " ".join(str(v) for v in extent),
                prefix + "ID": f"Segment_{segment.label}",
                prefix + "LabelValue": str(segment.label),
                prefix + "Layer": "0",
                prefix + "Name": segment.name,
                prefix + "NameAutoGenerated": "0",
                prefix + "Tags": tags,
            }
        )
    fields.update(
        {
            "Segmentation_ContainedRepresentationNames": f"{BINARY_LABELMAP}|",
            "Segmentation_ConversionParameters": _conversion_parameters(ijk_to_ras, data.shape),
            "Segmentation_MasterRepresentation": BINARY_LABELMAP,
            "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        }
    )
    lines += [f"{key}:={_escape(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n\n"


def _conversion_parameters(ijk_to_ras: np.ndarray, shape_kji: tuple[int, ...]) -> str:
    """``name|value|description&`` for each parameter; the reference geometry is the label map's grid
    (IJK-to-RAS row by row, then the extent, each value followed by ``;``)."""
    k, j, i = shape_kji
    values = [_number(v) for v in np.asarray(ijk_to_ras, dtype=np.float64).reshape(-1)]
    values += [str(v) for v in (0, i - 1, 0, j - 1, 0, k - 1)]
    reference = "".join(f"{v};" for v in values)
    description = "Grid (IJK-to-RAS matrix and extent) of labelmaps made from other representations."
    parameters = _CONVERSION_PARAMETERS + ((REFERENCE_GEOMETRY_PARAMETER, reference, description),)
    return "".join(f"{name}|{value}|{description}&" for name, value, description in parameters)


def _segments_from_fields(fields: dict[str, str], path: Path) -> list[Segment]:
    """The segments ``Segment0_*``, ``Segment1_*``, ... of a header's key/value fields (until an ID is missing)."""
    segments = []
    index = 0
    while f"Segment{index}_ID" in fields:
        prefix = f"Segment{index}_"
        missing = [key for key in ("Color", "LabelValue") if prefix + key not in fields]
        if missing:
            raise InputError(path, f"segment {index} has no {' or '.join(prefix + key for key in missing)} field")
        layer = fields.get(prefix + "Layer", "0").strip()
        if layer != "0":
            raise InputError(
                path, f"segment {index} lies in layer {layer}; only a single-layer segmentation is one label map"
            )
        tags = _tags(fields.get(prefix + "Tags", ""))
        try:
            segments.append(
                Segment(
                    label=int(fields[prefix + "LabelValue"]),
                    name=fields.get(prefix + "Name") or fields[prefix + "ID"],
                    colour=tuple(float(v) for v in fields[prefix + "Color"].split()),  # type: ignore[arg-type]
                    terminology=tags.get(TERMINOLOGY_KEY) or None,
                )
            )
        except ValueError as exc:
            raise InputError(path, f"segment {index} is invalid ({exc})") from exc
        index += 1
    labels = [segment.label for segment in segments]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(path, f"several segments share label(s) {', '.join(map(str, repeated))}")
    return segments


def _tags(text: str) -> dict[str, str]:
    """Segment tags ``key:value|key:value|`` (the closing ``|`` optional) as a dictionary."""
    pairs = (item.split(":", 1) for item in text.split("|") if ":" in item)
    return {key: value for key, value in pairs}


def _escape(value: str) -> str:
    """A key/value field's value as NRRD stores it: backslash and newline escaped as ``\\\\`` and ``\\n``."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """The shortest text that reads back as the same float64."""
    return repr(float(value))


def _vector(values: np.ndarray) -> str:
    """A NRRD vector, ``(x,y,z)``."""
    return "(" + ",".join(_number(v) for v in values) + ")"
