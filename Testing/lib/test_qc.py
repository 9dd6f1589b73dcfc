"""The QC picture shows anatomy in Slicer's orientation whatever the voxel order of the file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from RegSegLib.evaluation.qc import (
    FONT_SCALE,
    GAP,
    VIEWS,
    _sample,
    draw_text,
    plane_points,
    png_bytes,
    qc_figure,
    qc_picture,
    text_mask,
)
from RegSegLib.volume import Volume


def _blob_volume(lps_order: bool) -> Volume:
    """A bright blob at RAS (+12, +8, -6) mm in a 2 mm grid stored in RAS or LPS voxel order."""
    n, spacing = 24, 2.0
    matrix = np.diag([spacing, spacing, spacing, 1.0])
    matrix[:3, 3] = -spacing * (n - 1) / 2
    if lps_order:
        matrix[:2, :2] *= -1
        matrix[:2, 3] *= -1
    k, j, i = torch.meshgrid(*[torch.arange(float(n))] * 3, indexing="ij")
    ijk = torch.stack([i, j, k, torch.ones_like(i)], dim=-1).double()
    ras = ijk @ torch.as_tensor(matrix).T
    distance = torch.linalg.norm(ras[..., :3] - torch.tensor([12.0, 8.0, -6.0], dtype=torch.float64), dim=-1)
    return Volume(torch.exp(-((distance / 4) ** 2)).float()[None], matrix)


def _peak(volume: Volume, view: str) -> tuple[int, int, tuple[int, int]]:
    _, right, up, _ = next(v for v in VIEWS if v[0] == view)
    points, _ = plane_points(volume, right, up)
    plane = _sample(volume, points)
    row, column = np.unravel_index(np.argmax(plane), plane.shape)
    return int(row), int(column), plane.shape


@pytest.mark.parametrize("lps_order", [False, True])
def test_planes_show_right_on_the_left_and_superior_up(lps_order):
    volume = _blob_volume(lps_order)
    row, column, (height, width) = _peak(volume, "axial")
    assert column < width / 2 and row < height / 2, "right on the left; the blob is anterior (+8 mm), above centre"
    row, column, (height, width) = _peak(volume, "coronal")
    assert column < width / 2 and row > height / 2, "right on the left; the blob is inferior (-6 mm), below centre"
    row, column, (height, width) = _peak(volume, "sagittal")
    assert column < width / 2 and row > height / 2, "anterior on the left; inferior below centre"


def test_planes_do_not_depend_on_voxel_order():
    ras, lps = _blob_volume(False), _blob_volume(True)
    for _, right, up, _ in VIEWS:
        points, extent = plane_points(ras, right, up)
        np.testing.assert_allclose(_sample(ras, points), _sample(lps, points), atol=1e-5)
        assert extent == pytest.approx(plane_points(lps, right, up)[1])


def test_qc_figure_writes_a_png(tmp_path):
    volume = _blob_volume(False)
    path = tmp_path / "qc.png"
    qc_figure(volume, volume.with_data(torch.roll(volume.data, 3, dims=3)), volume, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["qc.png"]


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB PNG's pixels ``[H, W, 3]``, read chunk by chunk with every CRC checked (filters 0-2)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        position += 12 + length
    assert [kind for kind, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = np.frombuffer(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")), dtype=np.uint8)
    rows = raw.reshape(height, 3 * width + 1)
    pixels = np.zeros((height, 3 * width), dtype=np.uint8)
    for row in range(height):
        kind, line = rows[row, 0], rows[row, 1:]
        above = pixels[row - 1] if row else np.zeros_like(line)
        if kind == 0:
            pixels[row] = line
        elif kind == 1:
            pixels[row] = np.cumsum(line.reshape(-1, 3), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            pixels[row] = line + above
        else:
            raise AssertionError(f"unexpected filter {kind}")
    return pixels.reshape(height, width, 3)


def test_png_encoding_round_trips():
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (5, 7, 3), (40, 33, 3)]:
        picture = rng.integers(0, 256, size=shape, dtype=np.uint8)
        np.testing.assert_array_equal(decode_png(png_bytes(picture)), picture)


def test_qc_picture_shows_misalignment_before_and_grey_after(tmp_path):
    """Fixed and warped are the same image (grey everywhere after); before is shifted (magenta/green fringes)."""
    volume = _blob_volume(False)
    shifted = volume.with_data(torch.roll(volume.data, 3, dims=3))
    path = tmp_path / "qc.png"
    qc_figure(volume, shifted, volume, path)
    picture = decode_png(path.read_bytes())
    np.testing.assert_array_equal(picture, qc_picture(volume, shifted, volume))
    height, width, _ = picture.shape
    assert 600 <= height <= 800 and 900 <= width <= 1100
    assert picture.max() == 255 and picture.min() == 0
    # titles and labels are white or yellow, the overlay grey where fixed and moving agree: red == green
    differs = picture[..., 0] != picture[..., 1]
    rows, columns = np.nonzero(differs)
    header = 7 * FONT_SCALE + 2 * GAP
    assert rows.size > 0 and rows.max() < (height + header) / 2, "only the 'before' row shows disagreement"
    for third in range(3):
        inside = (columns >= third * width / 3) & (columns < (third + 1) * width / 3)
        assert inside.any(), "each plane shows the shift"
    # the two rows show the same fixed image (blue is the fixed image's alone): only the titles differ
    row = (height - header) // 2
    top, bottom = picture[header : header + row, :, 2], picture[header + row :, :, 2]
    assert top.shape == bottom.shape and np.mean(top != bottom) < 0.01


def test_qc_picture_reads_with_an_image_library(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    volume = _blob_volume(True)
    path = tmp_path / "qc.png"
    qc_figure(volume, volume, volume, path)
    decoded = image.imread(path)
    np.testing.assert_array_equal(np.round(decoded[..., :3] * 255).astype(np.uint8), qc_picture(volume, volume, volume))


def test_a_single_slice_volume_gets_a_picture(tmp_path):
    matrix = np.diag([0.8, 0.8, 3.0, 1.0])
    volume = Volume(torch.rand(1, 1, 30, 40, generator=torch.Generator().manual_seed(0)), matrix)
    picture = qc_picture(volume, volume, volume)
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8


def test_text_is_drawn_in_capitals_and_clipped_to_the_picture():
    mask = text_mask("Ab?", scale=1)
    assert mask.shape == (7, 17)
    np.testing.assert_array_equal(text_mask("aB~", scale=1), mask)
    assert text_mask("", scale=2).shape == (14, 0)
    canvas = np.zeros((10, 12, 3), dtype=np.uint8)
    draw_text(canvas, "WWW", 6, 5, (255, 255, 0), "cc")
    assert canvas[..., 0].any() and not canvas[..., 2].any()
    draw_text(canvas, "A", 100, 100, (1, 2, 3))
    assert not (canvas == 1).any()
