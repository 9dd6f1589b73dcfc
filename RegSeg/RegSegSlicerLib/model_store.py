"""The model section of a panel, without Qt: rows of the models of one task, import of a file, a description.

Every panel that runs a trained model (segmentation, learned registration, supervoxel, synthesis) shows the
models of its task from RegSegLib's store (:mod:`RegSegLib.models`, torch-free, used in-process), lets an offline
site import a model file, and shows the chosen model's licence and metrics. The widgets only display what these
functions return; errors are :class:`RegSegLib.errors.RegSegError` with a one-line message for the status line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from RegSegSlicerLib.paths import ensure_regseglib_importable

ensure_regseglib_importable()

from RegSegLib.models.manifest import TASKS, metrics_text  # noqa: E402  (torch-free)
from RegSegLib.models.store import ModelStore, StoredModel  # noqa: E402

IMPORT_FILTER = "Model files (*.json *.pt *.pth);;All files (*)"
"""The file dialog filter for :func:`import_model`: a sidecar ``NAME.json`` or the weights beside one."""


@dataclass(frozen=True)
class ModelRow:
    """One model as a row of the panel's model list.

    Args:
        name: the model's name (what the panel passes to the job).
        version: its version.
        licence: its licence.
        metrics: its first metrics as short text (``dice_mean 0.812, hd95_mm 3.4``).
        shipped: whether it ships with RegSeg (else it was imported or downloaded).
    """

    name: str
    version: str
    licence: str
    metrics: str
    shipped: bool

    @classmethod
    def of(cls, model: StoredModel) -> "ModelRow":
        """The row of a stored model."""
        entry = model.entry
        return cls(entry.name, entry.version, entry.licence, metrics_text(entry.metrics, most=3), model.shipped)

    @property
    def label(self) -> str:
        """What a combo box shows: ``name version``."""
        return f"{self.name} {self.version}"


def model_rows(task: str, store: ModelStore | None = None) -> list[ModelRow]:
    """The models of ``task``, shipped first, each sorted by name.

    Raises:
        ValueError: ``task`` is not one of :data:`RegSegLib.models.manifest.TASKS`.
        RegSegLib.errors.InputError: a manifest file of the store is broken.
    """
    if task not in TASKS:
        raise ValueError(f"unknown model task {task!r}; choose one of {', '.join(TASKS)}")
    return [ModelRow.of(model) for model in (store or ModelStore()).list_models(task)]


def import_model(path: str | os.PathLike, task: str | tuple[str, ...], store: ModelStore | None = None) -> ModelRow:
    """Installs a model file for an offline site: ``NAME.pt`` with ``NAME.json`` beside it, or the ``NAME.json``.

    Args:
        path: the file the user chose.
        task: the panel's task, or its tasks (registration: ``("affine", "elastic")``); a model of another task is
            refused before anything is copied.
        store: the store (default: the user's).

    Raises:
        RegSegLib.errors.RegSegError: a missing or broken entry, a size or sha256 mismatch, a name in use, or a
            model of another task; nothing is installed.
    """
    return ModelRow.of((store or ModelStore()).import_file(path, task=task))


def model_description(name: str, store: ModelStore | None = None) -> str:
    """The model's licence, provenance, metrics and input as lines of text, for a tooltip or an info box.

    Raises:
        RegSegLib.errors.RegSegError: no model has that name.
    """
    return "\n".join((store or ModelStore()).info(name).description())
