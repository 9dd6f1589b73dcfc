"""Landmarks as RAS millimetre points: CSV, Slicer markups JSON and ``.fcsv`` files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io.files import atomic_output, check_exists


def read_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads landmarks as RAS millimetre points.

    Supported:
        * CSV with a header. Paired columns ``fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S``
          give ``{"fixed", "moving"}``; columns ``R,A,S`` (or ``L,P,S``, flipped to RAS) give
          ``{"points"}``.
        * Slicer markups JSON (``.mrk.json``, ``.json``) in RAS or LPS: ``{"points"}``.
        * Slicer ``.fcsv`` (RAS or LPS per its header): ``{"points"}``.

    Returns:
        dict of ``[N, 3]`` float64 arrays.

    Raises:
        InputError: missing file, unknown layout, non-numeric, NaN or infinite values.
    """
    path = Path(path)
    check_exists(path)
    name = path.name.lower()
    try:
        if name.endswith(".json"):
            points = {"points": _read_markups_json(path)}
        elif name.endswith(".fcsv"):
            points = {"points": _read_fcsv(path)}
        elif name.endswith(".csv"):
            points = _read_landmark_csv(path)
        else:
            raise InputError(path, "unsupported landmark format; use .csv, .fcsv or Slicer .mrk.json")
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read landmarks ({exc})") from exc
    _check_finite(points, path)
    return points


def _check_finite(points: dict[str, np.ndarray], path: Path) -> None:
    """Refuses NaN or infinite coordinates, naming the first point (1-based) that holds one."""
    for name, array in points.items():
        finite = np.isfinite(array).all(axis=-1)
        if not finite.all():
            first = int(np.argmin(finite)) + 1
            count = int((~finite).sum())
            where = f"{name} " if len(points) > 1 else ""
            raise InputError(
                path,
                f"{where}point {first} has a NaN or infinite coordinate ({count} of {len(finite)} points do); "
                f"every landmark needs three finite coordinates",
            )


def _read_landmark_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(path, "landmark file holds no points")
    columns = [c.strip() for c in rows[0].keys()]

    def take(names: list[str]) -> np.ndarray:
        return np.array([[float(row[n]) for n in names] for row in rows], dtype=np.float64)

    if all(f"{side}_{axis}" in columns for side in ("fixed", "moving") for axis in "RAS"):
        return {"fixed": take(["fixed_R", "fixed_A", "fixed_S"]), "moving": take(["moving_R", "moving_A", "moving_S"])}
    if all(c in columns for c in "RAS"):
        return {"points": take(["R", "A", "S"])}
    if all(c in columns for c in "LPS"):
        return {"points": geometry.lps_to_ras_points(take(["L", "P", "S"]))}
    raise InputError(path, f"unknown landmark columns {columns}; expected R,A,S or fixed_R..moving_S")


def _read_markups_json(path: Path) -> np.ndarray:
    content = json.loads(path.read_text())
    points = []
    for markup in content.get("markups", []):
        system = markup.get("coordinateSystem", "LPS").upper()
        for control_point in markup.get("controlPoints", []):
            position = np.asarray(control_point["position"], dtype=np.float64)
            points.append(geometry.lps_to_ras_points(position) if system == "LPS" else position)
    if not points:
        raise InputError(path, "markups file holds no control points")
    return np.stack(points)


def _read_fcsv(path: Path) -> np.ndarray:
    system = "RAS"
    points = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if "CoordinateSystem" in line:
                value = line.split("=")[-1].strip().upper()
                system = "LPS" if value in ("LPS", "1") else "RAS"
            continue
        if line.strip():
            fields = line.split(",")
            points.append([float(v) for v in fields[1:4]])
    if not points:
        raise InputError(path, "markups file holds no control points")
    array = np.asarray(points, dtype=np.float64)
    return geometry.lps_to_ras_points(array) if system == "LPS" else array


def write_landmarks_json(points_ras: np.ndarray, path: str | os.PathLike, labels: list[str] | None = None) -> None:
    """Writes ``[N, 3]`` RAS points as a Slicer markups fiducial file (``.mrk.json``, coordinates in LPS)."""
    points_lps = geometry.ras_to_lps_points(np.asarray(points_ras, dtype=np.float64).reshape(-1, 3))
    control_points = [
        {"id": str(n + 1), "label": labels[n] if labels else f"F-{n + 1}", "position": [float(v) for v in p]}
        for n, p in enumerate(points_lps)
    ]
    content = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": control_points}],
    }
    with atomic_output(path) as temp:
        Path(temp).write_text(json.dumps(content, indent=2))
