"""The Lightning module and data of segmentation training (seed 001, nnU-Net style).

When a run starts, the dataset is found by the configured PathFinder, fingerprinted and planned
(:mod:`RegSegLib.segmentation.plan`); the plan and the network topology derived from it are written into
the configuration, which the run folder stores, so a continued run neither plans again nor can change them.

Loss: MONAI's Dice (foreground classes, over the batch) + cross-entropy on the softmax, as nnU-Net's, with
deep supervision over the decoder's outputs
weighted 1/2^i (normalised, the lowest output left out, as nnU-Net). Validation metric ``dice``: the mean
foreground Dice over the whole validation cases (sliding window, no mirroring), per case then averaged.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from lightning.pytorch import LightningDataModule

from RegSegLib.networks.unet import logits, plain_conv_unet
from RegSegLib.segmentation.inference import predict_probabilities
from RegSegLib.training.config import BaseConfig, TrainingError
from RegSegLib.training.data import PairSampler, ResumableLoader, epoch_batches, resolve_split
from RegSegLib.training.modules import TrainingModule
from RegSegLib.training.segmentation_data import SegmentationPatches, WholeCases, preprocess_case
from RegSegLib.validation import SettingsError

TOPOLOGY = ("n_stages", "n_conv_per_stage", "n_conv_per_stage_decoder", "features_per_stage", "strides", "kernel_sizes")
"""The model arguments that the plan derives (seed 001: never set by hand)."""


def dice_per_class(probabilities: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice ``[num_classes - 1]`` of the argmax of ``[classes, D, H, W]`` against class indices ``[1, D, H, W]``
    (1 when a class is absent from both)."""
    predicted = probabilities.argmax(dim=0)
    truth = classes[0]
    values = []
    for index in range(1, num_classes):
        a, b = predicted == index, truth == index
        total = float(a.sum() + b.sum())
        values.append(2.0 * float((a & b).sum()) / total if total else 1.0)
    return torch.tensor(values)


def apply_plan(config: BaseConfig, plan: dict[str, Any]) -> BaseConfig:
    """Writes a plan into the config (``data.plan``, the topology in ``model_config.model_args``).

    Raises:
        SettingsError: a topology value given by hand that differs from the plan's.
    """
    args = config.model_config.model_args
    for name in TOPOLOGY:
        given = getattr(args, name)
        if given is not None and given != plan[name]:
            raise SettingsError(
                f"model_config.model_args.{name} is derived from the patch size and spacing and cannot be set "
                f"({given} given, the plan gives {plan[name]}); set data.patch_size or data.spacing instead"
            )
        setattr(args, name, plan[name])
    config.data.plan = plan
    return config


def segmentation_parts(config: BaseConfig) -> tuple[BaseConfig, "SegmentationModule", "SegmentationDataModule"]:
    """The config completed from the dataset (patient split, plan), the module and the data module."""
    from RegSegLib.segmentation.pathfinders import pathfinder
    from RegSegLib.segmentation.plan import fingerprint_dataset, plan_experiment

    data = config.data
    finder = pathfinder(data.pathfinder, data.basepath, data.img_foldername, data.seg_foldername)
    cases = [case for case in finder.cases() if case.label is not None]
    if not cases:
        raise TrainingError(f"{data.basepath}: no labelled cases")
    pattern = re.compile(data.patient_pattern)
    patients = {}
    for case in cases:
        match = pattern.search(case.name)
        if match is None:
            raise TrainingError(f"{case.name}: the patient pattern {data.patient_pattern!r} does not match the case name")
        patients[case.name] = match.group(1) if match.groups() else match.group(0)
    config = resolve_split(config, sorted(set(patients.values())))
    if not data.plan:
        if len(data.modalities) != len(finder.channel_names):
            raise TrainingError(f"data.modalities names {len(data.modalities)} channel(s); the dataset has {len(finder.channel_names)}")
        args = config.model_config.model_args
        plan = plan_experiment(
            fingerprint_dataset(cases), patch_size=data.patch_size, spacing=data.spacing, batch_size=config.batch_size,
            transpose_forward=data.transpose_forward, transpose_backward=data.transpose_backward,
            modalities=list(data.modalities), base_features=args.base_features, max_features=args.max_features,
        )
        config = apply_plan(config, plan.as_dict())
    train = [case for case in cases if patients[case.name] in set(data.train_patients)]
    validation = [case for case in cases if patients[case.name] in set(data.validation_patients)]
    return config, SegmentationModule(config), SegmentationDataModule(config, train, validation)


class SegmentationDataModule(LightningDataModule):
    """Training patches and whole validation cases of the split (preprocessed once, in memory)."""

    def __init__(self, config: BaseConfig, train: list, validation: list) -> None:
        super().__init__()
        self.config, self.train_cases, self.validation_cases = config, train, validation
        self._prepared: dict[str, list] = {}

    def _cases(self, which: str) -> list:
        if which not in self._prepared:
            cases = self.train_cases if which == "train" else self.validation_cases
            self._prepared[which] = [preprocess_case(case, self.config.data.plan) for case in cases]
        return self._prepared[which]

    def _loader(self, dataset: Any, sampler: PairSampler, batch_size: int, seed: int) -> ResumableLoader:
        return ResumableLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(seed), persistent_workers=self.config.num_workers > 0,
        )

    def train_dataloader(self) -> ResumableLoader:
        data = self.config.data
        dataset = SegmentationPatches(self._cases("train"), data.plan, data.patches_per_epoch, data.foreground_oversampling, data.augment, self.config.seed)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        epoch_batches(len(dataset), self.config.batch_size, rank, world)
        return self._loader(dataset, PairSampler(len(dataset), rank, world), self.config.batch_size, self.config.seed)

    def val_dataloader(self) -> ResumableLoader:
        dataset = WholeCases(self._cases("validation"))
        sampler = PairSampler(len(dataset), self.trainer.global_rank, self.trainer.world_size, fixed_epoch=0)
        return self._loader(dataset, sampler, 1, self.config.seed + 1)


class SegmentationModule(TrainingModule):
    """Trains a PlainConvUNet of the config's plan.

    Args:
        config: the run's configuration with its plan (:func:`apply_plan`).
    """

    progress_metric = "dice"

    def __init__(self, config: BaseConfig) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.config = config
        plan, args = config.data.plan, config.model_config.model_args
        self.num_classes = int(plan["num_classes"])
        self.network = plain_conv_unet(
            int(plan["num_channels"]), self.num_classes, plan["features_per_stage"], plan["strides"], plan["kernel_sizes"],
            deep_supervision=args.deep_supervision,
        )
        self.loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
        outputs = max(len(plan["features_per_stage"]) - 2, 1) + 1 if args.deep_supervision else 1
        weights = torch.tensor([0.5**index for index in range(outputs)])
        if outputs > 1:
            weights[-1] = 0.0
        self.register_buffer("weights", weights / weights.sum(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return logits(self.network(image))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        output = self.network(batch["image"])
        stack = output.unbind(dim=1) if output.dim() == 6 else (output,)
        loss = sum(weight * self.loss(level, batch["labels"]) for weight, level in zip(self.weights, stack))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-case validation metrics ``{name: [B]}``: the loss and the mean foreground Dice."""
        patch = self.config.data.plan["patch_size"]
        losses, dices = [], []
        for image, classes in zip(batch["image"], batch["labels"]):
            probabilities = predict_probabilities(self, image, patch, mirror=False)
            logit = torch.log(probabilities.clamp(min=1e-8))
            losses.append(self.loss(logit[None], classes[None]))
            dices.append(dice_per_class(probabilities, classes, self.num_classes).mean())
        return {"loss": torch.stack(losses), "dice": torch.stack(dices).to(self.device)}

    def configure_optimizers(self) -> Any:
        trainable = [parameter for parameter in self.network.parameters() if parameter.requires_grad]
        return self.with_scheduler(torch.optim.SGD(
            trainable, lr=self.config.learning_rate, momentum=0.99, nesterov=True, weight_decay=self.config.weight_decay
        ))
