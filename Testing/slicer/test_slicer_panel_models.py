"""The Registration panel's Models section: the affine and elastic models of the store, import of a model file for
offline sites, and the chosen model's licence and metrics.

The widgets are the named stand-ins built from the real .ui (``slicer_panel_standins``); the file dialog is the
``qt.QFileDialog`` stand-in, answering the file the test picks. The store is RegSegLib's real one in a temporary
``REGSEG_HOME``, and the model files are real ``torch.save`` files with their manifest entries (``model_files``).
"""

from __future__ import annotations

import pytest

from model_files import flip_byte, write_model
from slicer_panel_standins import install_standin_application
from slicer_standins import MODULE_FOLDER, QFileDialog, import_file, require_mrml, slicer_module_standins

slicer = require_mrml()

pytestmark = pytest.mark.filterwarnings("error:does not have observer", "error:already has observer")

NONE_INSTALLED = "No trained models installed (RegSeg ships none yet)"


@pytest.fixture
def panel(tmp_path, monkeypatch):
    """The panel on an empty scene, its model store empty (``REGSEG_HOME`` in ``tmp_path``); cleaned up afterwards."""
    app = install_standin_application(monkeypatch, tmp_path, slicer.vtkMRMLScene())
    monkeypatch.setattr(QFileDialog, "answer", "")
    monkeypatch.setattr(QFileDialog, "requests", [])
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        widget = module.RegSegRegistrationWidget()
        widget.setup()
        widget.enter()
        yield widget, app
        widget.exit()
        widget.cleanup()


def listed(widget) -> list[str]:
    combo = widget.ui.modelComboBox
    return [combo.itemText(i) for i in range(combo.count())]


def import_through_button(widget, monkeypatch, path) -> None:
    """The user presses "Import model file..." and picks ``path`` in the file dialog."""
    monkeypatch.setattr(QFileDialog, "answer", str(path))
    widget.ui.importModelButton.click()


def test_an_empty_store_shows_one_disabled_line_in_a_collapsed_section(panel):
    widget, app = panel
    ui = widget.ui
    assert ui.modelsCollapsibleButton.collapsed and ui.modelsCollapsibleButton.text == "Models"
    assert listed(widget) == [NONE_INSTALLED] and not ui.modelComboBox.enabled
    assert ui.modelInfoTextEdit.readOnly and ui.modelInfoTextEdit.toPlainText() == ""
    assert ui.importModelButton.text == "Import model file..." and ui.importModelButton.enabled
    ui.importModelButton.click()  # Cancel in the dialog: nothing happens
    assert listed(widget) == [NONE_INSTALLED] and app.errors == []


def test_an_imported_model_is_listed_with_its_version_licence_and_metrics(panel, tmp_path, monkeypatch):
    widget, app = panel
    from RegSegSlicerLib import model_store

    elastic, _ = write_model(tmp_path / "offline", "prostate-elastic", task="elastic", seed=1)
    import_through_button(widget, monkeypatch, elastic)  # NAME.pt with NAME.json beside it
    assert QFileDialog.requests == [("Import model file", model_store.IMPORT_FILTER)]
    assert listed(widget) == ["prostate-elastic 1.2.0"] and widget.ui.modelComboBox.enabled
    info = widget.ui.modelInfoTextEdit.toPlainText()
    assert "prostate-elastic 1.2.0 (elastic, installed)" in info and "licence: CC-BY-4.0" in info
    assert "training data: synthetic tensors written by the RegSeg tests" in info and "dice_mean 0.8125" in info

    write_model(tmp_path / "offline", "brain-affine", task="affine", seed=2)
    import_through_button(widget, monkeypatch, tmp_path / "offline" / "brain-affine.json")  # the sidecar alone
    assert listed(widget) == ["brain-affine 1.2.0", "prostate-elastic 1.2.0"]  # affine first, then elastic
    assert widget.ui.modelComboBox.currentText == "brain-affine 1.2.0"  # the imported model is chosen
    assert widget.ui.modelInfoTextEdit.toPlainText().startswith("brain-affine 1.2.0 (affine, installed)")
    widget.ui.modelComboBox.choose("prostate-elastic 1.2.0")
    assert widget.ui.modelInfoTextEdit.toPlainText().startswith("prostate-elastic 1.2.0 (elastic, installed)")
    assert app.errors == []


def test_a_bad_file_shows_one_readable_error_and_changes_nothing(panel, tmp_path, monkeypatch):
    widget, app = panel
    good, _ = write_model(tmp_path / "offline", "brain-affine", task="affine")
    import_through_button(widget, monkeypatch, good)
    before, info = listed(widget), widget.ui.modelInfoTextEdit.toPlainText()
    models = tmp_path / "regseg-home" / "models"
    installed = sorted(p.name for p in models.iterdir())

    changed, _ = write_model(tmp_path / "offline", "prostate-elastic", task="elastic", seed=1)
    flip_byte(changed, 50)
    import_through_button(widget, monkeypatch, changed)
    assert len(app.errors) == 1
    assert app.errors[0].startswith(f"Could not import the model: {changed}: ")
    assert "sha256 is" in app.errors[0] and app.errors[0].endswith("; nothing installed")
    assert (listed(widget), widget.ui.modelInfoTextEdit.toPlainText()) == (before, info)
    assert sorted(p.name for p in models.iterdir()) == installed

    segmentation, _ = write_model(tmp_path / "offline", "prostate-seg", task="segmentation", seed=2)
    import_through_button(widget, monkeypatch, segmentation)  # a model of a task this panel does not use
    assert app.errors[1] == (
        f"Could not import the model: {segmentation}: model 'prostate-seg' is for segmentation, not affine or elastic; "
        "nothing installed"
    )
    assert listed(widget) == before and sorted(p.name for p in models.iterdir()) == installed
