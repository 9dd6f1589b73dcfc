"""The QC picture shows anatomy in Slicer's orientation whatever the voxel order of the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RegSegLib.evaluation.qc import VIEWS, _sample, plane_points, qc_figure
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
