"""What every Lightning module of RegSeg's training shares: inner evaluations over a whole loader, and the
optimiser with the configured learning-rate scheduler."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from lightning.pytorch import LightningModule

from RegSegLib.training.config import BaseConfig, LRSchedulerConfig


def build_scheduler(optimizer: torch.optim.Optimizer, config: LRSchedulerConfig) -> Any:
    """The ``torch.optim.lr_scheduler`` class named by ``config``, or ``None``."""
    if config.type == "none":
        return None
    return getattr(torch.optim.lr_scheduler, config.type)(optimizer, **dict(config.kwargs))


class TrainingModule(LightningModule):
    """A module whose subclass defines ``_metrics(batch) -> {name: [B]}`` (per-item validation metrics) and
    :attr:`batch_key`, the batch entry whose first dimension is the batch size."""

    batch_key = "image"
    progress_metric = "loss"
    """The validation metric the progress bar shows."""
    config: BaseConfig

    def _metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        size = batch[self.batch_key].shape[0]
        for name, values in self._metrics(batch).items():
            self.log(f"val/{name}", values.mean(), on_epoch=True, batch_size=size, sync_dist=True, prog_bar=name == self.progress_metric)

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Mean validation metrics over a whole data loader (inner-epoch evaluations)."""
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            batch = {key: value.to(self.device) for key, value in batch.items()}
            for name, values in self._metrics(batch).items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
            count += batch[self.batch_key].shape[0]
        self.train(was_training)
        return {name: value / max(count, 1) for name, value in sums.items()}

    def with_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """``configure_optimizers``' answer for ``optimizer`` and the configured scheduler (stepped per epoch;
        ``ReduceLROnPlateau`` watches the validation loss)."""
        scheduler = build_scheduler(optimizer, self.config.lr_scheduler)
        if scheduler is None:
            return optimizer
        settings: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if self.config.lr_scheduler.type == "ReduceLROnPlateau":
            settings["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": settings}
