"""ITK text transform files (``.tfm``, ``.txt``) of matrix transforms, written without loading ITK.

The layout, as ITK's ``TxtTransformIO`` writes and reads it::

    #Insight Transform File V1.0
    #Transform 0
    Transform: CompositeTransform_double_3_3      (a composite: its type, then its parts numbered from 1)
    #Transform 1
    Transform: AffineTransform_double_3_3
    Parameters: m11 m12 m13 m21 ... m33 t1 t2 t3    row-major LPS matrix, then the translation
    FixedParameters: 0 0 0                          the centre

Numbers are written as the shortest decimal that reads back to the same float64 (``repr``), so a file
read back by ITK holds the exact values.
"""

from __future__ import annotations

import os
from typing import Sequence

from RegSegLib.io.itk_hdf5 import COMPOSITE_TYPE, ItkTransformPart

HEADER = "#Insight Transform File V1.0"


def write_itk_text(parts: Sequence[ItkTransformPart], filename: str | os.PathLike, composite: bool) -> None:
    """Writes transforms with few parameters (affines) as an ITK text transform file.

    Args:
        parts: the transforms, in ITK order for a composite.
        filename: the file to create (overwritten).
        composite: write a composite transform of ``parts``; otherwise ``parts`` must hold exactly one.

    Raises:
        ValueError: ``composite`` false with other than one part.
    """
    if not composite and len(parts) != 1:
        raise ValueError(f"a transform file without a composite holds one transform, not {len(parts)}")
    lines = [HEADER]
    number = 0
    if composite:
        lines += ["#Transform 0", f"Transform: {COMPOSITE_TYPE}"]
        number = 1
    for part in parts:
        lines += [
            f"#Transform {number}",
            f"Transform: {part.kind}",
            "Parameters: " + " ".join(repr(float(value)) for value in part.parameters),
            "FixedParameters: " + " ".join(repr(float(value)) for value in part.fixed_parameters),
        ]
        number += 1
    with open(filename, "w", encoding="ascii") as file:
        file.write("\n".join(lines) + "\n")
