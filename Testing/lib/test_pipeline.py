"""How the pipeline chains its stages: initial transforms, composition order, progress split, metric mapping,
the automatic metric and the guard that undoes a stage which made the alignment worse.

The stages are replaced by stand-ins returning known transforms, so the composition can be checked
exactly; the real stages run end to end in ``test_cli.py``. The composition tests also replace the guard
by a stand-in that keeps every stage (named ``KeepEveryStage``); the guard tests use the real one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import RegSegLib.registration.pipeline as pipeline_module
from RegSegLib.errors import InputError
from RegSegLib.runtime import Progress
from RegSegLib.io.checks import as_label_map, check_image
from RegSegLib.registration.guard import Guard, Score, Verdict
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


class KeepEveryStage:
    """Stand-in for the guard: scores everything alike, so every stage is kept."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def score(self, transform) -> Score:
        return Score(1.0)

    def judge(self, stage, before, transform):
        return Verdict(stage, before, before, False), before


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
    monkeypatch.setattr(pipeline_module, "Guard", KeepEveryStage)
    return calls, found_affine, found_field


def test_affine_initial_starts_the_affine_stage(stages):
    calls, found_affine, _ = stages
    start = _translation([5.0, 0.0, 0.0])
    result = register(_image(), _image(), initial=start, family="rigid", device="cpu")
    assert calls["affine"]["initial"] is start
    assert calls["affine"]["settings"].family == "rigid"
    assert "init" not in calls["affine"]
    assert result.transform is found_affine and result.field is None
    assert set(result.seconds) == {"prepare", "affine", "guard"}


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
    assert set(result.seconds) == {"prepare", "affine", "deformable", "guard"}
    assert result.settings.metric == "mi" and result.metric_reason == "given"


def test_auto_metric_is_chosen_from_the_images_and_recorded(stages):
    calls, _, _ = stages
    image = _image()
    result = register(image, image, method="deformable", device="cpu")
    assert (calls["affine"]["settings"].metric, calls["deformable"]["settings"].similarity) == ("ncc", "lncc")
    assert result.settings.report_metric == "lncc"
    assert result.metric_reason.startswith("auto: coarse correlation of the centred images 1.00")
    # the same anatomy with another contrast (inverted intensities): a different modality, MIND for both stages
    inverted = image.with_data(image.data.max() - image.data)
    result = register(image, inverted, method="deformable", device="cpu")
    assert (calls["affine"]["settings"].metric, calls["deformable"]["settings"].similarity) == ("mind", "mind")
    assert result.settings.report_metric == "mind" and "different modalities" in result.metric_reason


def _blob(shift_mm: float = 0.0) -> Volume:
    """A bright ellipsoid on a dark background, moved by ``shift_mm`` along R."""
    k, j, i = torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij")
    r, a, s = i * 2 - 23 - shift_mm, j * 2 - 23, k * 2 - 23
    data = torch.exp(-4 * ((r / 12) ** 2 + (a / 9) ** 2 + (s / 7) ** 2)) + 0.3 * (torch.sin(r / 4) * torch.cos(a / 6) > 0.5)
    return Volume(data[None], np.diag([2.0, 2.0, 2.0, 1.0]) @ _translation([-11.5, -11.5, -11.5]).matrix)


def test_guard_scores_a_correct_transform_better_than_a_wrong_one():
    fixed, moving = _blob(), _blob(shift_mm=6.0)
    guard = Guard(fixed, moving)
    identity, right, wrong = guard.score(None), guard.score(_translation([6.0, 0, 0])), guard.score(_translation([-6.0, 0, 0]))
    assert right.mind < 0.5 * identity.mind
    assert wrong.mind > identity.mind
    assert right.mask_dice is None


def test_a_stage_that_makes_the_alignment_worse_is_undone_and_said(monkeypatch):
    wrong_affine = _translation([-8.0, 0.0, 0.0])
    monkeypatch.setattr(pipeline_module, "register_affine", lambda *a, **k: wrong_affine)
    fixed, moving = _blob(), _blob(shift_mm=6.0)
    result = register(fixed, moving, device="cpu")
    np.testing.assert_allclose(result.transform.matrix, np.eye(4))
    assert result.verdicts[0].rolled_back and result.verdicts[0].after.mind > result.verdicts[0].before.mind
    assert len(result.warnings) == 1
    assert "the affine stage made the alignment worse" in result.warnings[0] and "starting alignment was kept" in result.warnings[0]


def test_an_undone_affine_stage_falls_back_to_its_initialisation_when_that_is_better(monkeypatch):
    wrong_affine = _translation([-8.0, 0.0, 0.0])
    monkeypatch.setattr(pipeline_module, "register_affine", lambda *a, **k: wrong_affine)
    fixed = _blob()
    moved_grid = Volume(fixed.data.clone(), _translation([10.0, -4.0, 0.0]).matrix @ fixed.ijk_to_ras)
    result = register(fixed, moved_grid, device="cpu")
    assert result.verdicts[0].rolled_back
    np.testing.assert_allclose(result.transform.matrix[:3, 3], [10.0, -4.0, 0.0], atol=0.05)


def test_a_stage_that_improves_the_alignment_is_kept(monkeypatch):
    right_affine = _translation([6.0, 0.0, 0.0])
    monkeypatch.setattr(pipeline_module, "register_affine", lambda *a, **k: right_affine)
    result = register(_blob(), _blob(shift_mm=6.0), device="cpu")
    assert result.transform is right_affine and result.warnings == []
    assert not result.verdicts[0].rolled_back


def test_a_deformable_stage_that_makes_it_worse_is_undone_keeping_the_affine(monkeypatch):
    right_affine = _translation([6.0, 0.0, 0.0])
    fixed = _blob()
    scrambled = DisplacementField(torch.zeros(3, *fixed.shape), fixed.ijk_to_ras)
    scrambled.field[0] = 10.0 * torch.sin(torch.arange(24.0) / 1.5)[None, None, :]
    monkeypatch.setattr(pipeline_module, "register_affine", lambda *a, **k: right_affine)
    monkeypatch.setattr(pipeline_module, "register_deformable", lambda *a, **k: scrambled)
    result = register(fixed, _blob(shift_mm=6.0), method="deformable", device="cpu")
    assert result.transform is right_affine and result.field is None
    assert [v.rolled_back for v in result.verdicts] == [False, True]
    assert "the deformable stage made the alignment worse" in result.warnings[0] and "affine result was kept" in result.warnings[0]


def test_any_worsening_rolls_a_stage_back():
    """No tolerance: a slightly larger MIND distance or a slightly lower mask Dice is worse."""
    better = Score(mind=1.0, mask_dice=0.80)
    assert Score(mind=0.9, mask_dice=0.70).worse_than(better)
    assert Score(mind=0.9, mask_dice=0.795).worse_than(better)
    assert Score(mind=1.001, mask_dice=0.9).worse_than(better)
    assert not Score(mind=1.0, mask_dice=0.80).worse_than(better)
    assert not Score(mind=0.999, mask_dice=0.80).worse_than(better)
    assert not Score(mind=0.999).worse_than(Score(mind=1.0))


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
