"""Lightning callbacks with ClinicaDL's training behaviours (seed 002).

* :class:`RelativeEarlyStopping`: stops when, during ``patience`` epochs, the epoch-end validation loss
  never fell below ``best x (1 - tolerance)``; Lightning's ``EarlyStopping`` compares with an absolute
  ``min_delta`` instead.
* :class:`BestModelSelection`: keeps, per selection metric, the model of the best epoch-end validation
  (strict improvement, in the metric's direction), as ``best-METRIC/model.pt``.
* :class:`LoaderPosition`: keeps the training loader's count of completed batches for mid-epoch resumption.
* :class:`InnerEvaluation`: evaluates the whole validation set every ``evaluation_steps`` weight updates
  within an epoch (logged as ``inner/...``); selection and stopping still look at epoch ends only.

Every callback keeps its state in the checkpoint (``state_dict``), so a continued run stops and selects
as the uninterrupted run would.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

METRIC_DIRECTIONS: dict[str, str] = {
    "loss": "min",
    "rotation_error_deg": "min",
    "translation_error_mm": "min",
    "target_error_mm": "min",
    "dice": "max",
    "folding_percent": "min",
}
"""Validation metric -> ``min`` or ``max`` (which way is better); a metric not listed cannot be selected on."""


def metric_direction(metric: str) -> str:
    """``min`` or ``max`` for a validation metric; raises ``ValueError`` naming the known metrics."""
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"unknown selection metric {metric!r}; known: {', '.join(METRIC_DIRECTIONS)}")
    return METRIC_DIRECTIONS[metric]


def improves(value: float, best: float | None, direction: str, tolerance: float = 0.0) -> bool:
    """Whether ``value`` strictly improves on ``best`` by more than ``tolerance x |best|`` (relative).

    ``best=None`` (nothing seen yet): any finite value improves. NaN never does.
    """
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    margin = tolerance * abs(best)
    return value < best - margin if direction == "min" else value > best + margin


def _epoch_end_value(trainer: Trainer, metric: str) -> float | None:
    """The epoch-end validation value of ``val/METRIC`` logged by the module, or ``None`` (sanity check,
    or not logged)."""
    if trainer.sanity_checking:
        return None
    value = trainer.callback_metrics.get(f"val/{metric}")
    return None if value is None else float(value)


class RelativeEarlyStopping(Callback):
    """Stops training when the epoch-end validation ``metric`` made no relative improvement for ``patience``
    epochs (ClinicaDL: never smaller than ``best x (1 - tolerance)``). ``patience=0`` disables it.

    Args:
        patience: epochs without improvement allowed.
        tolerance: relative improvement required.
        metric: the validation metric (its direction from :data:`METRIC_DIRECTIONS`).
    """

    def __init__(self, patience: int, tolerance: float = 0.0, metric: str = "loss") -> None:
        self.patience, self.tolerance, self.metric = patience, tolerance, metric
        self.direction = metric_direction(metric)
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = _epoch_end_value(trainer, self.metric)
        if self.patience == 0 or value is None:
            return
        if improves(value, self.best, self.direction, self.tolerance):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state_dict["best"], state_dict["wait"], state_dict["stopped_epoch"]


class BestModelSelection(Callback):
    """Saves the model of the best epoch-end validation per metric to ``folder/best-METRIC/model.pt``.

    Args:
        folder: the run folder.
        metrics: validation metrics to select on (directions from :data:`METRIC_DIRECTIONS`).
        extra: what is saved beside the weights (architecture, config, ...).
    """

    def __init__(self, folder: str | Path, metrics: list[str], extra: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.directions = {metric: metric_direction(metric) for metric in metrics}
        self.extra = extra
        self.best: dict[str, float | None] = {metric: None for metric in metrics}
        self.best_epoch: dict[str, int | None] = {metric: None for metric in metrics}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for metric, direction in self.directions.items():
            value = _epoch_end_value(trainer, metric)
            if value is None or not improves(value, self.best[metric], direction):
                continue
            self.best[metric], self.best_epoch[metric] = value, trainer.current_epoch
            if trainer.is_global_zero:
                target = self.folder / f"best-{metric}" / "model.pt"
                target.parent.mkdir(parents=True, exist_ok=True)
                state = {key: tensor.detach().cpu() for key, tensor in pl_module.network.state_dict().items()}
                record = {"state_dict": state, "epoch": trainer.current_epoch, "metric": metric, "value": value}
                record.update(self.extra)
                partial = target.with_suffix(".pt.partial")
                torch.save(record, partial)
                partial.replace(target)

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "best_epoch": dict(self.best_epoch)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best.update(state_dict["best"])
        self.best_epoch.update(state_dict["best_epoch"])


class InnerEvaluation(Callback):
    """Evaluates the whole validation set every ``steps`` weight updates within an epoch.

    The values are logged as ``inner/METRIC`` against the global step; they inform, they do not select
    (ClinicaDL compares and saves at epoch ends only). The module provides ``evaluate(dataloader) ->
    dict[str, float]``.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.last_step = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.steps == 0 or step == self.last_step or step % self.steps != 0:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        self.last_step = step
        loader = trainer.val_dataloaders
        values = pl_module.evaluate(loader)
        for logger in trainer.loggers:
            logger.log_metrics({f"inner/{name}": value for name, value in values.items()}, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict["last_step"]


class LoaderPosition(Callback):
    """Records in a :class:`~RegSegLib.training.data.ResumableLoader` how many batches of the epoch training
    has completed, before any checkpoint of that step is written (Lightning runs checkpoint callbacks last)."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loader = trainer.train_dataloader
        if hasattr(loader, "completed"):
            loader.completed = batch_idx + 1
