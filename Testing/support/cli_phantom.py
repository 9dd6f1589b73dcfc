"""The phantom pair of the command-line tests: two ellipsoids, the moving ones moved by a known shift."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHIFT = np.array([6.0, -4.0, 3.0])
SIZE = 32
SPACING = 2.5


def affine_matrix() -> np.ndarray:
    matrix = np.diag([SPACING, SPACING, SPACING, 1.0])
    matrix[:3, 3] = -SPACING * (SIZE - 1) / 2
    return matrix


def phantom(shift: np.ndarray, blob_shift: np.ndarray = np.zeros(3)) -> tuple[np.ndarray, np.ndarray]:
    """Image and label map ``[I, J, K]`` of two ellipsoids moved by ``shift`` mm, the inner one by ``blob_shift``
    mm more (a change no affine transform undoes)."""
    matrix = affine_matrix()
    i, j, k = np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij")
    x = matrix[0, 0] * i + matrix[0, 3] - shift[0]
    y = matrix[1, 1] * j + matrix[1, 3] - shift[1]
    z = matrix[2, 2] * k + matrix[2, 3] - shift[2]
    body = (x / 20) ** 2 + (y / 14) ** 2 + (z / 17) ** 2
    blob = ((x - 10 - blob_shift[0]) / 6) ** 2 + ((y + 5 - blob_shift[1]) / 5) ** 2 + ((z - 4 - blob_shift[2]) / 7) ** 2
    image = 100 * np.exp(-body) + 60 * np.exp(-blob)
    labels = np.zeros(image.shape, np.int16)
    labels[body < 1] = 1
    labels[blob < 1] = 2
    return image.astype(np.float32), labels


def save(array: np.ndarray, path: Path, matrix: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(array, affine_matrix() if matrix is None else matrix), str(path))
    return str(path)
