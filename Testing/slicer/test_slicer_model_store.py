"""The model section's logic (RegSegSlicerLib.model_store): rows of one task's models, import of a file for offline
sites (a model of another task or a changed file installs nothing), and the licence and metrics description. It
needs no MRML: the store is RegSegLib's, on a temporary ``REGSEG_HOME``.
"""

from __future__ import annotations

import pytest

from model_files import flip_byte, write_model
from RegSegLib.errors import InputError, RegSegError
from RegSegLib.models.manifest import write_manifest
from RegSegLib.models.store import ModelStore
from slicer_standins import MODULE_FOLDER


@pytest.fixture
def model_store(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE_FOLDER))
    from RegSegSlicerLib import model_store

    return model_store


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """The user's store in a temporary ``REGSEG_HOME``, and one shipped segmentation model."""
    monkeypatch.setenv("REGSEG_HOME", str(tmp_path / "home"))
    _, shipped = write_model(tmp_path / "shipped", "default-seg", task="segmentation", sidecar=False)
    write_manifest([shipped], tmp_path / "shipped" / "manifest.json")
    return ModelStore(shipped=tmp_path / "shipped")


def test_rows_per_task_and_import_of_a_file(model_store, store, tmp_path):
    assert model_store.model_rows("affine", store) == []
    assert model_store.model_rows("affine") == []  # the user's store: REGSEG_HOME, nothing shipped in the package
    weights, _ = write_model(tmp_path / "offline", "prostate-seg", task="segmentation", seed=2)
    row = model_store.import_model(weights, "segmentation", store)
    metrics = "dice_mean 0.8125, hd95_mm 3.5, folding_percent 0.016, ..."  # the first three
    assert row == model_store.ModelRow("prostate-seg", "1.2.0", "CC-BY-4.0", metrics, False)
    assert row.label == "prostate-seg 1.2.0"
    rows = model_store.model_rows("segmentation", store)
    assert [(r.name, r.shipped) for r in rows] == [("default-seg", True), ("prostate-seg", False)]
    default = model_store.model_rows("segmentation")  # the default store: REGSEG_HOME, and the package's shipped models
    assert [(r.name, r.shipped) for r in default] == [("regseg-prostate-gland-mr", True), ("regseg-prostate-gland-us", True), ("prostate-seg", False)]
    assert default[-1] == row
    with pytest.raises(ValueError, match="unknown model task 'registration'; choose one of affine, elastic"):
        model_store.model_rows("registration", store)
    assert "*.json" in model_store.IMPORT_FILTER and "*.pt" in model_store.IMPORT_FILTER


def test_import_refuses_another_task_and_a_changed_file(model_store, store, tmp_path):
    weights, _ = write_model(tmp_path / "offline", "brain-affine", task="affine")
    with pytest.raises(InputError) as caught:
        model_store.import_model(tmp_path / "offline" / "brain-affine.json", "segmentation", store)
    assert str(caught.value) == (
        f"{tmp_path / 'offline' / 'brain-affine.json'}: model 'brain-affine' is for affine, not segmentation; nothing installed"
    )
    flip_byte(weights, 50)
    with pytest.raises(InputError, match="sha256 is .*; nothing installed"):
        model_store.import_model(weights, "affine", store)
    assert model_store.model_rows("affine", store) == [] and not (store.folder / "brain-affine.pt").exists()


def test_description_shows_licence_provenance_and_metrics(model_store, store):
    text = model_store.model_description("default-seg", store)
    assert text.splitlines()[:5] == [
        "default-seg 1.2.0 (segmentation, shipped)",
        "licence: CC-BY-4.0",
        "training data: synthetic tensors written by the RegSeg tests",
        "trained with: CPU, under a second",
        "metrics: dice_mean 0.8125, hd95_mm 3.5, folding_percent 0.016, seconds 2.7",
    ]
    assert "input: 1 channel(s), 2x2x2 mm, any shape, z-score intensities" in text
    with pytest.raises(RegSegError, match="no model named 'absent'"):
        model_store.model_description("absent", store)
