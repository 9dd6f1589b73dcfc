"""Quality-control picture of a registration: fixed/moving overlays before and after, in three planes.

The planes pass through the centre of the fixed grid and are sampled in RAS directions, so anatomy shows
as in Slicer's default views whatever the voxel order of the files: axial and coronal with the patient's
right on the left of the picture (radiological convention), sagittal with anterior on the left; superior
and anterior up. Pixels are square in millimetres.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from RegSegLib import geometry
from RegSegLib.io.files import atomic_output
from RegSegLib.ops.intensity import robust_range
from RegSegLib.transforms import sample_at_points
from RegSegLib.volume import Volume

VIEWS = (
    ("axial", np.array([-1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), ("R", "L", "A", "P")),
    ("coronal", np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), ("R", "L", "S", "I")),
    ("sagittal", np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]), ("A", "P", "S", "I")),
)
"""``(name, screen-right direction, screen-up direction, (left, right, top, bottom) labels)`` in RAS."""
MAX_PIXELS = 384
"""Largest side of a sampled plane."""


def _corners_ras(volume: Volume) -> np.ndarray:
    k, j, i = volume.shape
    corners = np.array([[a, b, c] for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)], dtype=np.float64)
    return geometry.transform_points(volume.ijk_to_ras, corners)


def plane_points(volume: Volume, right: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """RAS points of a plane through the grid centre covering the grid's extent.

    Args:
        volume: the grid to cover.
        right: RAS unit vector pointing to the right of the picture.
        up: RAS unit vector pointing up.

    Returns:
        ``([H, W, 3] points, (left, right, bottom, top) extent in mm)``; row 0 is the top.
    """
    centre = geometry.grid_centre_ras(volume.ijk_to_ras, volume.shape)
    offsets = _corners_ras(volume) - centre
    h_low, h_high = float((offsets @ right).min()), float((offsets @ right).max())
    v_low, v_high = float((offsets @ up).min()), float((offsets @ up).max())
    pixel = max(float(volume.spacing.min()), max(h_high - h_low, v_high - v_low) / (MAX_PIXELS - 1), 1e-6)
    width = int(round((h_high - h_low) / pixel)) + 1
    height = int(round((v_high - v_low) / pixel)) + 1
    horizontal = np.linspace(h_low, h_high, width)
    vertical = np.linspace(v_high, v_low, height)
    points = centre + vertical[:, None, None] * up + horizontal[None, :, None] * right
    return points, (h_low, h_high, v_low, v_high)


def _sample(volume: Volume, points: np.ndarray) -> np.ndarray:
    values = sample_at_points(volume.data[:1].float(), volume.ijk_to_ras, torch.as_tensor(points), mode="bilinear")
    return values[..., 0].cpu().numpy()


def _normalise(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return np.clip((image - window[0]) / (window[1] - window[0]), 0.0, 1.0)


def qc_figure(fixed: Volume, moving_resampled_before: Volume, warped: Volume, path: str | os.PathLike) -> None:
    """Writes a 2x3 PNG of magenta (fixed) / green (moving) overlays: before (top) and after (bottom).

    Where the images agree the overlay is grey; magenta or green fringes show misalignment.

    Args:
        fixed: fixed image ``[C, K, J, I]`` (channel 0 is shown); its grid defines the planes.
        moving_resampled_before: the moving image on the fixed grid before registration.
        warped: the moving image on the fixed grid after registration.
        path: the PNG to write (atomically).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fixed_window = robust_range(fixed.data[0], 0.01, 0.99)
    moving_window = robust_range([moving_resampled_before.data[0], warped.data[0]], 0.01, 0.99)
    figure = Figure(figsize=(12, 8.4), facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3)
    for column, (name, right, up, (left_label, right_label, top_label, bottom_label)) in enumerate(VIEWS):
        points, extent = plane_points(fixed, right, up)
        fixed_plane = _normalise(_sample(fixed, points), fixed_window)
        for row, (stage, moving) in enumerate((("before", moving_resampled_before), ("after", warped))):
            moving_plane = _normalise(_sample(moving, points), moving_window)
            rgb = np.stack([fixed_plane, moving_plane, fixed_plane], axis=-1)
            axis = axes[row, column]
            axis.imshow(rgb, extent=extent, origin="upper", aspect="equal", interpolation="bilinear")
            axis.set_title(f"{name}, {stage}", color="white", fontsize=11)
            axis.set_xticks([])
            axis.set_yticks([])
            text = {"color": "yellow", "fontsize": 10, "transform": axis.transAxes}
            axis.text(0.01, 0.5, left_label, ha="left", va="center", **text)
            axis.text(0.99, 0.5, right_label, ha="right", va="center", **text)
            axis.text(0.5, 0.99, top_label, ha="center", va="top", **text)
            axis.text(0.5, 0.01, bottom_label, ha="center", va="bottom", **text)
    figure.suptitle("fixed (magenta) / moving (green); grey where they agree", color="white", fontsize=12)
    figure.tight_layout(rect=(0, 0, 1, 0.96), h_pad=2.0)
    with atomic_output(path) as temp:
        figure.savefig(temp, format="png", dpi=80, facecolor="black")
