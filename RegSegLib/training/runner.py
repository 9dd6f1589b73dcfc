"""Runs a training configuration on Lightning: run folder, data, callbacks, logger, trainer, continuation.

A run folder holds everything needed to continue or to use the result::

    RUN/config.yaml               the full resolved config (the patient split included)
    RUN/checkpoints/last.ckpt     weights, optimiser, scheduler, loops and callback states
    RUN/best-METRIC/model.pt      the best epoch-end model per selection metric (weights + config)
    RUN/logs/partN/               CSV or TensorBoard logs of each start or continuation
    RUN/summary.json              best values and epochs, why training stopped

:func:`continue_config` turns a run folder and command-line overrides into the config of its
continuation; :func:`run_training` starts or continues.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from RegSegLib.training.callbacks import BestModelSelection, InnerEvaluation, LoaderPosition, RelativeEarlyStopping
from RegSegLib.training.config import MODEL_CONFIGS, BaseConfig, TrainingError, data_schema, scheduler_epoch_warning
from RegSegLib.vocabulary import AFFINE_ARCHITECTURES, SEGMENTATION_ARCHITECTURES
from RegSegLib.training.data import PairSampler, ResumableLoader, Sample, SyntheticPairs, epoch_batches, find_samples, resolve_split

CONFIG_FILE = "config.yaml"
LAST_CHECKPOINT = "checkpoints/last.ckpt"


def to_config(node: Any) -> BaseConfig:
    """A composed OmegaConf node as the validated :class:`BaseConfig` (``__post_init__`` runs)."""
    return OmegaConf.to_object(node)  # type: ignore[return-value]


def save_config(config: BaseConfig, path: Path) -> None:
    """Writes the resolved config as YAML (atomically)."""
    partial = path.with_suffix(".yaml.partial")
    partial.write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    partial.replace(path)


def continue_config(run: str | Path, overrides: Sequence[str]) -> tuple[BaseConfig, list[str]]:
    """The config of a continued run: the stored ``config.yaml`` with ``overrides`` (``key=value``) applied.

    Returns:
        The config (its ``continue_from`` set to ``run``) and warnings to show (an epoch-dependent
        scheduler asked for more epochs than it was planned for).
    """
    folder = Path(run)
    stored_path = folder / CONFIG_FILE
    if not stored_path.is_file():
        raise TrainingError(f"{folder}: not a run folder (no {CONFIG_FILE})")
    if not (folder / LAST_CHECKPOINT).is_file():
        raise TrainingError(f"{folder}: no checkpoint to continue from ({LAST_CHECKPOINT})")
    raw = OmegaConf.load(stored_path)
    model = raw.get("model_config", {}).get("name")
    if model not in MODEL_CONFIGS:
        raise TrainingError(f"{stored_path}: unknown model_config name {model!r}")
    schema = OmegaConf.structured(BaseConfig)
    schema.model_config = OmegaConf.structured(MODEL_CONFIGS[model])
    schema.data = OmegaConf.structured(data_schema(model))
    stored = OmegaConf.merge(schema, raw)
    kept = [item for item in overrides if not item.lstrip("+~").startswith("continue_from=")]
    merged = OmegaConf.merge(stored, OmegaConf.from_dotlist(kept))
    merged.continue_from = str(folder)
    merged.run_name = folder.name
    merged.output_dir = str(folder.parent)
    config = to_config(merged)
    planned = int(stored.epochs)
    notes = [note for note in [scheduler_epoch_warning(config.lr_scheduler, planned, config.epochs)] if note]
    return config, notes


def run_folder(config: BaseConfig) -> Path:
    """The run folder of ``config``: ``output_dir/run_name``, or ``output_dir/TASK-foldF-TIME``."""
    name = config.run_name or f"{config.task}-fold{config.data.fold}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(config.output_dir) / name


class PairDataModule(LightningDataModule):
    """Training and validation synthetic pairs of the split's patients (this process's share under DDP);
    the validation pairs span the whole rotation range from the start, whatever the curriculum."""

    def __init__(self, config: BaseConfig, family: str, samples: Sequence[Sample]) -> None:
        super().__init__()
        self.config, self.family = config, family
        self.train_samples = [s for s in samples if s.patient in set(config.data.train_patients)]
        self.validation_samples = [s for s in samples if s.patient in set(config.data.validation_patients)]

    def _loader(self, dataset: SyntheticPairs, sampler: PairSampler, shuffle_seed: int) -> ResumableLoader:
        generator = torch.Generator().manual_seed(shuffle_seed)
        return ResumableLoader(
            dataset, batch_size=self.config.batch_size, sampler=sampler, num_workers=self.config.num_workers,
            generator=generator, persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> ResumableLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        dataset = SyntheticPairs(self.train_samples, self.config.data, self.family, self.config.seed)
        epoch_batches(len(dataset), self.config.batch_size, rank, world)
        return self._loader(dataset, PairSampler(len(dataset), rank, world), self.config.seed)

    def val_dataloader(self) -> ResumableLoader:
        data = self.config.data
        validation = replace(data, pairs_per_epoch=data.validation_pairs, rotation_curriculum_epochs=0)
        dataset = SyntheticPairs(self.validation_samples, validation, self.family, self.config.seed + 1)
        sampler = PairSampler(len(dataset), self.trainer.global_rank, self.trainer.world_size, fixed_epoch=0)
        return self._loader(dataset, sampler, self.config.seed + 1)


def resolve_precision(config: BaseConfig) -> str:
    """``auto``: bf16 mixed precision on CUDA when supported (else 16-bit mixed), 32-bit on the CPU."""
    if config.precision != "auto":
        return config.precision
    on_cuda = config.accelerator == "cuda" or (config.accelerator == "auto" and torch.cuda.is_available())
    if not on_cuda:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _logger(config: BaseConfig, folder: Path) -> Any:
    """CSV (default), TensorBoard, or ClearML when installed; each start or continuation of the run logs to
    its own part (``logs/part0``, ``logs/part1``, ...), the steps continuing."""
    part = f"part{len(list((folder / 'logs').glob('part*')))}"
    if config.logger == "tensorboard":
        from importlib.util import find_spec

        from lightning.pytorch.loggers import TensorBoardLogger

        if find_spec("tensorboard") is None and find_spec("tensorboardX") is None:
            raise TrainingError("logger=tensorboard needs the tensorboard package (pip install tensorboard); logger=csv needs nothing")
        return TensorBoardLogger(folder, name="logs", version=part)
    if config.logger == "clearml":
        try:
            from clearml import Task
        except ImportError as error:
            raise TrainingError("logger=clearml needs the clearml package (pip install clearml)") from error
        Task.init(project_name="RegSeg", task_name=folder.name, continue_last_task=bool(config.continue_from))
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(folder, name="logs", version=part)


def _transfer(network: torch.nn.Module, config: BaseConfig) -> None:
    """Loads ``transfer.source`` into an identical network and freezes all but the last n parameter tensors."""
    if config.transfer.source is None:
        return
    record = torch.load(config.transfer.source, map_location="cpu", weights_only=True)
    state = record["state_dict"] if "state_dict" in record else record
    own = network.state_dict()
    mismatched = [key for key in own if key not in state or state[key].shape != own[key].shape]
    if mismatched or set(state) - set(own):
        raise TrainingError(
            f"{config.transfer.source}: not an identical network (first differing parameter: "
            f"{(mismatched or sorted(set(state) - set(own)))[0]})"
        )
    network.load_state_dict(state)
    if config.transfer.trainable_last:
        parameters = list(network.parameters())
        for parameter in parameters[: max(len(parameters) - config.transfer.trainable_last, 0)]:
            parameter.requires_grad_(False)


class RunSummary(Callback):
    """Writes ``summary.json`` when training ends, in the process that trained (rank 0; also under
    ``ddp_spawn``, whose workers' callback states never return to the launching process)."""

    def __init__(self, folder: Path, selection: BestModelSelection, stopping: RelativeEarlyStopping) -> None:
        self.folder, self.selection, self.stopping = folder, selection, stopping

    def on_fit_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        summary = {
            "best": self.selection.best, "best_epoch": self.selection.best_epoch, "epochs_run": trainer.current_epoch,
            "global_step": trainer.global_step, "stopped_early_at_epoch": self.stopping.stopped_epoch,
            "world_size": trainer.world_size,
        }
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _last_checkpoint(folder: Path, **when: Any) -> ModelCheckpoint:
    """Saves ``checkpoints/last.ckpt`` at every epoch end, or every n weight updates (``every_n_train_steps``)."""
    return ModelCheckpoint(
        dirpath=folder / "checkpoints", filename="last", save_top_k=1, monitor=None, enable_version_counter=False,
        save_on_train_epoch_end=True, **when,
    )


def _affine_parts(config: BaseConfig) -> tuple[BaseConfig, Any, LightningDataModule]:
    """The split config, the Lightning module and the synthetic pairs of an affine network."""
    from RegSegLib.training.affine_module import AffineRegistrationModule

    samples = find_samples(config.data)
    config = resolve_split(config, [sample.patient for sample in samples])
    data = PairDataModule(config, config.model_config.model_args.family, samples)
    return config, AffineRegistrationModule(config), data


def build_parts(config: BaseConfig) -> tuple[BaseConfig, Any, LightningDataModule]:
    """The config completed from the data (patient split; a segmentation plan), the Lightning module and the
    data module of the config's model (``model_config.name``)."""
    if config.model_config.name in AFFINE_ARCHITECTURES:
        return _affine_parts(config)
    if config.model_config.name in SEGMENTATION_ARCHITECTURES:
        from RegSegLib.training.segmentation_module import segmentation_parts

        return segmentation_parts(config)
    raise TrainingError(f"no training module for the model {config.model_config.name!r} yet")


def run_training(config: BaseConfig, trainer_options: dict[str, Any] | None = None, extra_callbacks: Sequence[Any] = ()) -> Path:
    """Trains (or continues) and returns the run folder.

    Args:
        config: the validated configuration (``continue_from`` set: continue that run).
        trainer_options: extra ``lightning.Trainer`` arguments (``enable_progress_bar``, ``max_steps``, ...).
        extra_callbacks: Lightning callbacks added to the run's own.
    """
    seed_everything(config.seed, workers=True, verbose=False)
    folder = Path(config.continue_from) if config.continue_from else run_folder(config)
    config, module, data = build_parts(config)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / CONFIG_FILE)
    _transfer(module.network, config)
    extra = {"architecture": config.model_config.name, "config": OmegaConf.to_container(OmegaConf.structured(config))}
    selection = BestModelSelection(folder, list(config.selection_metrics), extra)
    stopping = RelativeEarlyStopping(config.patience, config.tolerance)
    callbacks: list[Any] = [
        selection, stopping, InnerEvaluation(config.evaluation_steps), LoaderPosition(), RunSummary(folder, selection, stopping),
        _last_checkpoint(folder), *extra_callbacks,
    ]
    if config.checkpoint_steps:
        callbacks.append(_last_checkpoint(folder, every_n_train_steps=config.checkpoint_steps))
    options: dict[str, Any] = dict(
        max_epochs=config.epochs, accelerator=config.accelerator if config.accelerator != "cuda" else "gpu",
        devices=config.devices, num_nodes=config.num_nodes, strategy=config.strategy,
        precision=resolve_precision(config), accumulate_grad_batches=config.accumulation_steps,
        deterministic=config.deterministic or None, use_distributed_sampler=False, num_sanity_val_steps=0,
        callbacks=callbacks, logger=_logger(config, folder), default_root_dir=folder, log_every_n_steps=1,
        enable_model_summary=False,
    )
    options.update(trainer_options or {})
    trainer = Trainer(**options)
    resume = folder / LAST_CHECKPOINT if config.continue_from else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    return folder
