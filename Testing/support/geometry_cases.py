"""Named test geometries: rotations about the RAS axes and IJK-to-RAS matrices of chosen kinds."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rotation_about(axis: str, degrees: float) -> np.ndarray:
    """``[3, 3]`` right-handed rotation about the R, A or S axis (``"x"``, ``"y"``, ``"z"``)."""
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_ijk_to_ras(
    kind: str, spacing: Sequence[float] = (1.0, 1.0, 1.0), origin: Sequence[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """A named test geometry, ``[4, 4]`` IJK-to-RAS.

    Kinds:
        ``identity``: i, j, k along R, A, S.
        ``lps``: i along L, j along P, k along S (what DICOM and ITK files usually hold).
        ``oblique``: direction cosines rotated about all three axes.
        ``flipped``: i along A, j along R, k along I (a permuted, left-handed grid).
    """
    directions = {
        "identity": np.eye(3),
        "lps": np.diag([-1.0, -1.0, 1.0]),
        "oblique": rotation_about("z", 30.0) @ rotation_about("y", -20.0) @ rotation_about("x", 15.0),
        "flipped": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
    }[kind]
    matrix = np.eye(4)
    matrix[:3, :3] = directions @ np.diag(np.asarray(spacing, dtype=np.float64))
    matrix[:3, 3] = origin
    return matrix


GEOMETRY_KINDS = ("identity", "lps", "oblique", "flipped")
