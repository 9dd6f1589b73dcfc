"""Quality-control picture of a registration: fixed/moving overlays before and after, in three planes.

The planes pass through the centre of the fixed grid and are sampled in RAS directions, so anatomy shows
as in Slicer's default views whatever the voxel order of the files: axial and coronal with the patient's
right on the left of the picture (radiological convention), sagittal with anterior on the left; superior
and anterior up. Pixels are square in millimetres, at the same scale in every panel.

The picture is composed as an RGB array and written as a PNG here, without a plotting library (importing
matplotlib and laying out its figure cost about a second); the titles use a built-in 5x7 pixel font of
capital letters.
"""

from __future__ import annotations

import math
import os
import struct
import zlib

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


def _plane_extent(volume: Volume, right: np.ndarray, up: np.ndarray) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` offsets in mm from the grid centre of the grid's corners along the plane."""
    offsets = _corners_ras(volume) - geometry.grid_centre_ras(volume.ijk_to_ras, volume.shape)
    return (
        float((offsets @ right).min()),
        float((offsets @ right).max()),
        float((offsets @ up).min()),
        float((offsets @ up).max()),
    )


def plane_points(
    volume: Volume, right: np.ndarray, up: np.ndarray, pixel_mm: float | None = None
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """RAS points of a plane through the grid centre covering the grid's extent.

    Args:
        volume: the grid to cover.
        right: RAS unit vector pointing to the right of the picture.
        up: RAS unit vector pointing up.
        pixel_mm: pixel size; by default the finest voxel spacing, coarsened until the longer side has
            at most :data:`MAX_PIXELS` pixels.

    Returns:
        ``([H, W, 3] points, (left, right, bottom, top) extent in mm)``; row 0 is the top.
    """
    centre = geometry.grid_centre_ras(volume.ijk_to_ras, volume.shape)
    h_low, h_high, v_low, v_high = _plane_extent(volume, right, up)
    if pixel_mm is None:
        pixel_mm = max(float(volume.spacing.min()), max(h_high - h_low, v_high - v_low) / (MAX_PIXELS - 1))
    pixel = max(pixel_mm, 1e-6)
    width = int(round((h_high - h_low) / pixel)) + 1
    height = int(round((v_high - v_low) / pixel)) + 1
    horizontal = np.linspace(h_low, h_high, width)
    vertical = np.linspace(v_high, v_low, height)
    points = centre + vertical[:, None, None] * up + horizontal[None, :, None] * right
    return points, (h_low, h_high, v_low, v_high)


def _sample(volume: Volume, points: np.ndarray) -> np.ndarray:
    values = sample_at_points(volume.data[:1].float(), volume.ijk_to_ras, torch.as_tensor(points), mode="bilinear")
    return values[..., 0].cpu().numpy()


WINDOW_SAMPLES = 1 << 17
"""Voxels per image (at most) whose quantiles set the display window."""


def _window(volumes: list[Volume]) -> tuple[float, float]:
    """The display window of images on one grid: the 1 % and 99 % quantiles of channel 0, pooled.

    The quantiles are taken on a regular subset (every ``n``-th voxel along each axis, at most about
    :data:`WINDOW_SAMPLES` per image), which gives practically the window of all voxels without
    gathering and sorting millions of values.
    """
    stride = max(1, math.ceil((volumes[0].num_voxels / WINDOW_SAMPLES) ** (1.0 / 3.0)))
    return robust_range([volume.data[0, ::stride, ::stride, ::stride] for volume in volumes], 0.01, 0.99)


def _normalise(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return np.clip((image - window[0]) / (window[1] - window[0]), 0.0, 1.0)


PANEL_PIXELS = 320
"""Longer side, in pixels, of the largest plane; every panel is drawn at the same mm per pixel."""
GAP = 10
"""Pixels between panels and around the picture."""
FONT_SCALE = 2
"""Screen pixels per font pixel (the 5x7 font is drawn 10x14)."""
TITLE = "fixed (magenta) / moving (green); grey where they agree"
WHITE = (255, 255, 255)
YELLOW = (255, 255, 0)
PNG_LEVEL = 3
"""zlib level of the PNG data (on a brain picture: 20 ms, 3 % larger than level 6 in half the time)."""

_FONT = {
    " ": "..... ..... ..... ..... ..... ..... .....",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": ".###. #.... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ....# .###.",
    ",": "..... ..... ..... ..... ..... ..#.. .#...",
    ".": "..... ..... ..... ..... ..... ..... ..#..",
    ":": "..... ..#.. ..... ..... ..... ..#.. .....",
    ";": "..... ..#.. ..... ..... ..... ..#.. .#...",
    "-": "..... ..... ..... .###. ..... ..... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "/": "....# ....# ...#. ..#.. .#... #.... #....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
}
"""A 5x7 pixel font: seven rows of five pixels per character (``#`` set); text is shown in capitals."""


def text_mask(text: str, scale: int = FONT_SCALE) -> np.ndarray:
    """The pixels of ``text`` in the built-in font, one blank column between characters.

    Args:
        text: the text; letters are drawn as capitals, characters without a glyph as ``?``.
        scale: screen pixels per font pixel.

    Returns:
        ``[7 * scale, (6 * len(text) - 1) * scale]`` boolean mask (empty text: zero width).
    """
    mask = np.zeros((7, max(6 * len(text) - 1, 0)), dtype=bool)
    for position, character in enumerate(text.upper()):
        rows = _FONT.get(character, _FONT["?"]).split()
        mask[:, 6 * position : 6 * position + 5] = np.array([[pixel == "#" for pixel in row] for row in rows])
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def draw_text(canvas: np.ndarray, text: str, x: float, y: float, colour: tuple[int, int, int], anchor: str = "lt") -> None:
    """Draws ``text`` on an RGB picture in place, clipped to the picture.

    Args:
        canvas: ``[H, W, 3]`` uint8 picture.
        text: the text (:func:`text_mask`).
        x: horizontal position in pixels of the anchor.
        y: vertical position in pixels of the anchor.
        colour: RGB colour.
        anchor: two letters, horizontal ``l``/``c``/``r`` (the text's left, centre or right at ``x``) and
            vertical ``t``/``c``/``b`` (its top, middle or bottom at ``y``).
    """
    mask = text_mask(text)
    height, width = mask.shape
    left = int(round(x - {"l": 0.0, "c": width / 2, "r": width}[anchor[0]]))
    top = int(round(y - {"t": 0.0, "c": height / 2, "b": height}[anchor[1]]))
    rows = slice(max(top, 0), min(top + height, canvas.shape[0]))
    columns = slice(max(left, 0), min(left + width, canvas.shape[1]))
    if rows.start >= rows.stop or columns.start >= columns.stop:
        return
    visible = mask[rows.start - top : rows.stop - top, columns.start - left : columns.stop - left]
    canvas[rows, columns][visible] = colour


def png_bytes(rgb: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """Encodes an RGB picture as a PNG file (8 bits per channel, no interlacing).

    Every row uses PNG's "Up" filter (the difference to the row above, modulo 256), which suits pictures
    with large uniform areas; the filtered rows are deflated by zlib into one ``IDAT`` chunk.

    Args:
        rgb: ``[H, W, 3]`` uint8 picture, ``H, W >= 1``.
        level: zlib compression level.

    Returns:
        The bytes of the PNG file.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    rows = rgb.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(filtered.tobytes(), level))
        + chunk(b"IEND", b"")
    )


def qc_picture(fixed: Volume, moving_before: Volume, warped: Volume) -> np.ndarray:
    """The QC picture as an RGB array: magenta (fixed) / green (moving) overlays, before (top) and after (bottom).

    Columns are the axial, coronal and sagittal planes through the centre of the fixed grid, all at one
    scale; each panel is titled with its plane and stage and labelled with the anatomical direction of
    each edge (:data:`VIEWS`). Where the images agree the overlay is grey.

    Args:
        fixed: fixed image ``[C, K, J, I]`` (channel 0 is shown); its grid defines the planes.
        moving_before: the moving image before registration, on any grid (it is read at the planes' RAS points).
        warped: the moving image on the fixed grid after registration.

    Returns:
        ``[H, W, 3]`` uint8 picture (about 1000 x 700 pixels).
    """
    fixed_window = _window([fixed])
    moving_window = _window([moving_before, warped])
    extents = [_plane_extent(fixed, right, up) for _, right, up, _ in VIEWS]
    longest = max(max(h_high - h_low, v_high - v_low) for h_low, h_high, v_low, v_high in extents)
    pixel = max(longest / (PANEL_PIXELS - 1), 1e-6)
    planes = [plane_points(fixed, right, up, pixel)[0] for _, right, up, _ in VIEWS]
    # one sampling per image for the three planes together
    points = np.concatenate([plane.reshape(-1, 3) for plane in planes])
    ends = np.cumsum([plane.shape[0] * plane.shape[1] for plane in planes])[:-1]
    fixed_values = np.split(_normalise(_sample(fixed, points), fixed_window), ends)
    moving_values = [
        np.split(_normalise(_sample(moving, points), moving_window), ends) for moving in (moving_before, warped)
    ]
    panels = []
    for view, (name, _, _, labels) in enumerate(VIEWS):
        shape = planes[view].shape[:2]
        for stage, values in zip(("before", "after"), moving_values):
            rgb = np.stack([fixed_values[view], values[view], fixed_values[view]], axis=-1).reshape(*shape, 3)
            panels.append((f"{name}, {stage}", labels, np.round(rgb * 255.0).astype(np.uint8)))
    cell_height = max(image.shape[0] for _, _, image in panels)
    cell_width = max(image.shape[1] for _, _, image in panels)
    line = 7 * FONT_SCALE
    header, title_height = line + 2 * GAP, line + GAP // 2 + 2
    canvas = np.zeros((header + 2 * (title_height + cell_height + GAP), GAP + 3 * (cell_width + GAP), 3), dtype=np.uint8)
    draw_text(canvas, TITLE, canvas.shape[1] / 2, GAP, WHITE, "ct")
    for number, (title, (left_label, right_label, top_label, bottom_label), image) in enumerate(panels):
        column, row = divmod(number, 2)
        cell_left = GAP + column * (cell_width + GAP)
        cell_top = header + row * (title_height + cell_height + GAP)
        draw_text(canvas, title, cell_left + cell_width / 2, cell_top, WHITE, "ct")
        height, width = image.shape[:2]
        top = cell_top + title_height + (cell_height - height) // 2
        left = cell_left + (cell_width - width) // 2
        canvas[top : top + height, left : left + width] = image
        draw_text(canvas, left_label, left + 3, top + height / 2, YELLOW, "lc")
        draw_text(canvas, right_label, left + width - 3, top + height / 2, YELLOW, "rc")
        draw_text(canvas, top_label, left + width / 2, top + 3, YELLOW, "ct")
        draw_text(canvas, bottom_label, left + width / 2, top + height - 3, YELLOW, "cb")
    return canvas


def qc_figure(fixed: Volume, moving_before: Volume, warped: Volume, path: str | os.PathLike) -> None:
    """Writes the QC picture (:func:`qc_picture`) as a PNG, atomically.

    Args:
        fixed: fixed image ``[C, K, J, I]`` (channel 0 is shown); its grid defines the planes.
        moving_before: the moving image before registration, on any grid (it is read at the planes' RAS points).
        warped: the moving image on the fixed grid after registration.
        path: the PNG to write.
    """
    data = png_bytes(qc_picture(fixed, moving_before, warped))
    with atomic_output(path) as temp:
        with open(temp, "wb") as file:
            file.write(data)
