"""How the pipeline chains its stages: initial transforms, composition order, progress split, metric mapping.

The stages are replaced by stand-ins returning known transforms, so the composition can be checked
exactly; the real stages run end to end in ``test_cli.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import RegSegLib.registration.pipeline as pipeline_module
from RegSegLib.errors import InputError
from RegSegLib.runtime import Progress
from RegSegLib.io.checks import as_label_map, check_image
from RegSegLib.registration.pipeline import register, split_initial
from RegSegLib.transforms import AffineTransform, CompositeTransform, DisplacementField, resample
from RegSegLib.volume import Volume

GRID = np.diag([2.0, 2.0, 2.0, 1.0])
GRID[:3, 3] = -15.0


def _image() -> Volume:
    k, j, i = torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij")
    return Volume((torch.sin(i / 3) + torch.cos(j / 4) * k / 10)[None], GRID)


def _translation(t: list[float]) -> AffineTransform:
    matrix = np.eye(4)
    matrix[:3, 3] = t
    return AffineTransform(matrix)


@pytest.fixture
def stages(monkeypatch):
    calls: dict[str, dict] = {}
    found_affine = _translation([1.0, -2.0, 0.5])
    found_field = DisplacementField(torch.full((3, 16, 16, 16), 0.25), GRID)

    def fake_affine(fixed, moving, settings, **kwargs):
        calls["affine"] = dict(kwargs, moving=moving, settings=settings)
        kwargs["progress"].update(1.0, "affine done")
        return found_affine

    def fake_deformable(fixed, moving, settings, **kwargs):
        calls["deformable"] = dict(kwargs, moving=moving, settings=settings)
        kwargs["progress"].update(0.5, "half")
        return found_field

    monkeypatch.setattr(pipeline_module, "register_affine", fake_affine)
    monkeypatch.setattr(pipeline_module, "register_deformable", fake_deformable)
    return calls, found_affine, found_field


def test_affine_initial_starts_the_affine_stage(stages):
    calls, found_affine, _ = stages
    start = _translation([5.0, 0.0, 0.0])
    result = register(_image(), _image(), initial=start, family="rigid", device="cpu")
    assert calls["affine"]["initial"] is start
    assert calls["affine"]["settings"].family == "rigid"
    assert "init" not in calls["affine"]
    assert result.transform is found_affine and result.field is None
    assert set(result.seconds) == {"affine"}


def test_initial_with_a_field_is_pre_composed(stages):
    calls, found_affine, _ = stages
    fixed, moving = _image(), _image()
    pre = DisplacementField(torch.zeros(3, 16, 16, 16), GRID)
    pre.field[0] = 3.0
    result = register(fixed, moving, initial=CompositeTransform([_translation([0, 1, 0]), pre]), device="cpu")
    assert calls["affine"]["initial"] is None
    assert calls["affine"]["init"] == "identity"
    expected_moving = resample(moving, fixed, CompositeTransform([_translation([0, 1, 0]), pre]))
    torch.testing.assert_close(calls["affine"]["moving"].data, expected_moving.data)
    assert isinstance(result.transform, CompositeTransform)
    point = torch.tensor([[2.0, -4.0, 1.0]], dtype=torch.float64)
    # T(x) = translation(pre(affine(x))): affine first, then the field (+3 in R), then +1 in A
    expected = point + torch.tensor([1.0 + 3.0, -2.0 + 1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(result.transform.transform_points(point), expected)


def test_deformable_composes_affine_then_field_and_splits_progress(stages):
    calls, found_affine, found_field = stages
    reported: list[float] = []
    result = register(
        _image(), _image(), method="deformable", metric="mi", device="cpu",
        progress=Progress(lambda fraction, message: reported.append(fraction)),
    )  # fmt: skip
    assert calls["deformable"]["initial"] is found_affine
    assert calls["deformable"]["settings"].similarity == "mind"
    assert calls["affine"]["settings"].metric == "mi"
    assert isinstance(result.transform, CompositeTransform)
    assert result.transform.transforms == [found_affine, found_field]
    assert result.field is found_field and result.affine is found_affine
    assert reported == pytest.approx([0.25, 0.25 + 0.75 * 0.5, 1.0])
    assert set(result.seconds) == {"affine", "deformable"}


def test_split_initial():
    affine = _translation([1, 2, 3])
    assert split_initial(None) == (None, [])
    start, parts = split_initial(CompositeTransform([affine, affine]))
    np.testing.assert_allclose(start.matrix[:3, 3], [2, 4, 6])
    field = DisplacementField(torch.zeros(3, 4, 4, 4), np.eye(4))
    assert split_initial(field) == (None, [field])


def test_label_map_and_image_checks():
    volume = _image()
    assert as_label_map(volume.with_data(torch.round(volume.data * 3)), "l.nii").data.dtype == torch.int64
    with pytest.raises(InputError, match="non-integer"):
        as_label_map(volume, "l.nii")
    with pytest.raises(InputError, match="constant"):
        check_image(volume.with_data(torch.zeros_like(volume.data)), "c.nii")
    assert check_image(volume.with_data(volume.data.double()), "f.nii").data.dtype == torch.float32


def test_memory_check_refuses_a_job_larger_than_free_memory_and_is_skipped_where_free_memory_is_unknown(monkeypatch):
    import sys

    from RegSegLib.errors import RegSegError
    from RegSegLib import runtime as common

    free = common.available_host_memory()
    assert free is not None and free > 0
    common.check_memory(free // 2, torch.device("cpu"), "a small job")
    with pytest.raises(RegSegError, match=r"^a huge job needs about .* GiB on cpu but only .* GiB is free"):
        common.check_memory(free * 4, torch.device("cpu"), "a huge job")
    # Windows without psutil: no way to tell, so no refusal (and no crash)
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.delattr(common.os, "sysconf")
    assert common.available_host_memory() is None
    common.check_memory(free * 4, torch.device("cpu"), "a huge job")
