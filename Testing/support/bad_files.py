"""Files that are wrong on purpose, written for the tests that check how RegSeg refuses them."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np


def header_only_nifti(path: Path, shape=(1024, 1024, 1024)) -> Path:
    """A real NIfTI-1 header (348 bytes + 4 extension bytes, vox_offset 352) claiming ``shape`` float32,
    with no voxel data; gzipped when ``path`` ends in ``.gz``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0\0\0\0"
    assert len(raw) == 352
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path
