"""ITK HDF5 transform files (``.h5``, ``.hdf5``) written with h5py in the layout of ITK's ``HDF5TransformIO``.

The layout, as ITK 5 writes and reads it::

    /HDFVersion, /ITKVersion, /OSName, /OSVersion      1-element variable-length ASCII strings
    /TransformGroup/0/TransformType                     "CompositeTransform_double_3_3" (composite) or a part
    /TransformGroup/N/TransformType                     e.g. "AffineTransform_double_3_3"
    /TransformGroup/N/TransformParameters               [P] float64, or float32 for a ``_float_`` type
    /TransformGroup/N/TransformFixedParameters          [F] float64

A composite's parts follow its type entry, numbered from 1, in ITK order (the last part applied first).
ITK's reader converts a ``_float_`` part to the precision it reads in (``TransformFileReaderTemplate<double>``
reads ``DisplacementFieldTransform_float_3_3`` as a double field), and HDF5 undoes the filters of a
chunked dataset on reading, so the large parameter arrays of displacement fields can be written as
float32 through HDF5's byte shuffle and deflate filters: half the bytes of ITK's own uncompressed
float64, and less after compression.

Compression is done here, chunk by chunk, with zlib's run-length strategy (``Z_RLE``): on float data it
compresses about as well as HDF5's default deflate and takes less than half the time; the chunks are
ordinary zlib streams that any HDF5 deflate filter decodes.
"""

from __future__ import annotations

import os
import platform
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from RegSegLib import __version__

TRANSFORM_GROUP = "TransformGroup"
COMPOSITE_TYPE = "CompositeTransform_double_3_3"
COMPRESSION_LEVEL = 1
"""zlib level of the compressed parameter arrays (with ``Z_RLE`` the level hardly changes the size)."""
CHUNK_VALUES = 1 << 18
"""Values per HDF5 chunk of a compressed parameter array (1 MiB of float32)."""
COMPRESSION_THREADS = min(4, os.cpu_count() or 1)
"""Chunks compressed at once (zlib releases the GIL)."""
COMPRESS_ABOVE = 4096
"""Parameter arrays with more values than this are chunked and compressed (fields, not affines)."""


@dataclass(frozen=True)
class ItkTransformPart:
    """One transform as ITK stores it.

    Attributes:
        kind: ITK transform type name, e.g. ``AffineTransform_double_3_3`` or
            ``DisplacementFieldTransform_float_3_3``.
        parameters: ``[P]`` parameters (float64, or float32 for a ``_float_`` kind).
        fixed_parameters: ``[F]`` float64 fixed parameters.
    """

    kind: str
    parameters: np.ndarray
    fixed_parameters: np.ndarray


def write_itk_hdf5(parts: Sequence[ItkTransformPart], filename: str | os.PathLike, composite: bool) -> None:
    """Writes transforms in ITK's HDF5 transform file layout.

    Args:
        parts: the transforms, in ITK order for a composite.
        filename: the file to create (overwritten).
        composite: write a composite transform of ``parts`` (any number, one included); otherwise
            ``parts`` must hold exactly one transform.

    Raises:
        ValueError: ``composite`` false with other than one part, or parameters that are not 1D.
    """
    import h5py

    if not composite and len(parts) != 1:
        raise ValueError(f"a transform file without a composite holds one transform, not {len(parts)}")
    with h5py.File(filename, "w") as file:
        _write_string(file, "HDFVersion", f"HDF5 library version: {h5py.version.hdf5_version}")
        _write_string(file, "ITKVersion", f"RegSeg {__version__} (ITK HDF5TransformIO layout)")
        _write_string(file, "OSName", platform.system())
        _write_string(file, "OSVersion", platform.release())
        group = file.create_group(TRANSFORM_GROUP)
        number = 0
        if composite:
            _write_string(group.create_group("0"), "TransformType", COMPOSITE_TYPE)
            number = 1
        for part in parts:
            entry = group.create_group(str(number))
            _write_string(entry, "TransformType", part.kind)
            _write_parameters(entry, "TransformParameters", part.parameters)
            entry.create_dataset("TransformFixedParameters", data=np.asarray(part.fixed_parameters, dtype=np.float64))
            number += 1


def _write_string(group, name: str, text: str) -> None:
    """A ``[1]`` variable-length ASCII string dataset, as ITK writes its strings."""
    import h5py

    group.create_dataset(name, data=np.array([text.encode("ascii", "replace")], dtype=object), dtype=h5py.string_dtype("ascii"))


def _write_parameters(group, name: str, values: np.ndarray) -> None:
    """A 1D parameter dataset; large ones chunked, byte-shuffled and deflated (:func:`_compressed_chunk`)."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1:
        raise ValueError(f"transform parameters must be 1D, got shape {values.shape}")
    if values.size <= COMPRESS_ABOVE:
        group.create_dataset(name, data=values)
        return
    chunk = min(CHUNK_VALUES, values.size)
    dataset = group.create_dataset(
        name, shape=values.shape, dtype=values.dtype, chunks=(chunk,), shuffle=True, compression="gzip",
        compression_opts=COMPRESSION_LEVEL,
    )  # fmt: skip
    offsets = range(0, values.size, chunk)
    with ThreadPoolExecutor(max_workers=COMPRESSION_THREADS) as pool:
        payloads = pool.map(lambda offset: _compressed_chunk(values[offset : offset + chunk], chunk), offsets)
        for offset, payload in zip(offsets, payloads):
            dataset.id.write_direct_chunk((offset,), payload)


def _compressed_chunk(block: np.ndarray, chunk: int) -> bytes:
    """The stored bytes of one chunk of a 1D array: HDF5's shuffle filter, then deflate.

    The shuffle filter stores the first byte of every value, then every second byte, and so on, which
    puts the sign and exponent bytes of floats side by side where they compress well. A partial (last)
    chunk is zero-padded to the full chunk, as HDF5 stores edge chunks.

    Args:
        block: ``[n]`` values of the chunk, ``n <= chunk``.
        chunk: values per chunk.

    Returns:
        The zlib stream of the shuffled, padded chunk.
    """
    if block.size < chunk:
        block = np.concatenate([block, np.zeros(chunk - block.size, dtype=block.dtype)])
    shuffled = block.view(np.uint8).reshape(-1, block.dtype.itemsize).T.tobytes()
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_RLE)
    return compressor.compress(shuffled) + compressor.flush()
