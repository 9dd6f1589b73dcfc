"""The training configuration: Hydra structured configs (dataclasses), torch-free.

Every training script composes a :class:`BaseConfig` from a YAML file with a ``defaults`` list (seed 000's
style)::

    defaults:
      - base_config
      - lr_scheduler: step_lr        # YAML group: RegSegLib/training/configs/lr_scheduler/step_lr.yaml
      - model_config: affine_params  # Python group: the dataclasses below, stored by register_configs()
      - _self_

Small classes (the learning-rate scheduler, the data) are YAML groups, because a new choice then needs no
code; the model configurations nest dataclasses and are Python classes stored in Hydra's ``ConfigStore``
(:func:`register_configs`). ``OmegaConf.to_object`` turns the composed config into these dataclasses, whose
``__post_init__`` validates every value (Hydra itself does not run it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from RegSegLib.validation import SettingsError, check_choice, check_positive
from RegSegLib.vocabulary import AFFINE_ARCHITECTURES, DEVICES, FAMILIES, SEGMENTATION_ARCHITECTURES

SCHEDULERS: dict[str, bool] = {
    "none": False,
    "StepLR": True,
    "MultiStepLR": True,
    "ExponentialLR": True,
    "CosineAnnealingLR": True,
    "PolynomialLR": True,
    "ReduceLROnPlateau": False,
}
"""``torch.optim.lr_scheduler`` classes a config may name -> whether their schedule is fixed by the epoch
count (stepping them past the planned epochs changes what they do: :func:`scheduler_epoch_warning`)."""
LOGGERS: tuple[str, ...] = ("csv", "tensorboard", "clearml")
PRECISIONS: tuple[str, ...] = ("auto", "32-true", "bf16-mixed", "16-mixed")
"""``auto``: bf16 mixed precision on a CUDA device that supports it (else 16-bit mixed), 32-bit on the CPU."""
FUSIONS: tuple[str, ...] = ("early", "late")


class TrainingError(ValueError):
    """A training configuration that cannot run (the message says why)."""


@dataclass
class LRSchedulerConfig:
    """A learning-rate scheduler: a ``torch.optim.lr_scheduler`` class name and its keyword arguments.

    Attributes:
        type: one of :data:`SCHEDULERS` (``none``: a constant learning rate).
        kwargs: the class's keyword arguments (``step_size``, ``gamma``, ``T_max``, ...).
    """

    type: str = "none"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice(self.type, tuple(SCHEDULERS), "learning-rate scheduler")


@dataclass
class DataConfig:
    """Where the training volumes are and how they become network inputs.

    Attributes:
        roots: dataset folders in the registration layout (``images/NAME.nii.gz``, optional
            ``masks/seg_NAME.nii.gz``); several folders form a multi-cohort set.
        cohorts_tsv: a TSV file with columns ``cohort`` and ``path`` listing the dataset folders instead.
        patient_pattern: regular expression whose first group is the patient of a file name: all files of
            one patient fall in the same split.
        test_fraction: share of the patients held out as the test split (never trained on or selected on).
        n_folds: cross-validation folds of the remaining patients; ``fold`` picks the validation fold.
        fold: the validation fold.
        shape: network input size (D, H, W) in voxels.
        spacing_mm: isotropic spacing of the network grid; ``None``: the spacing that fits the image's largest
            extent into the largest size (:func:`RegSegLib.networks.inputs.network_spacing`).
        max_translation: largest translation of the synthetic pairs along each axis, as a fraction of the
            half span of the network grid.
        max_rotation_deg: largest rotation angle of the synthetic pairs (180: the whole sphere).
        rotation_curriculum_epochs: epochs over which the largest angle grows linearly from
            ``curriculum_start_deg`` to ``max_rotation_deg`` (0: ``max_rotation_deg`` from the start); small
            rotations first, which a regression network learns sooner.
        curriculum_start_deg: the largest angle of the first epoch of the curriculum.
        max_scale: largest relative scale deviation (similarity, anisotropic, affine families).
        max_shear: largest shear (affine family).
        pairs_per_epoch: synthetic pairs drawn from the training volumes per epoch.
        validation_pairs: synthetic pairs of the validation volumes (drawn once, the same every evaluation).
        label_synthesis: share of pairs whose images are synthesised from a label map (random intensity per
            label, SynthMorph style) instead of augmented from the image; needs masks.
        balance_cohorts: draw each pair's cohort uniformly, then a volume of it (a cohort of one volume is seen
            as often as one of hundreds); ``False``: draw volumes uniformly.
        crop_probability: chance that each image of a pair loses 10-40 % of its field of view on one side.
        train_patients: the patients of each split (``cohort/patient``); empty: split by ``seed``, ``fold``,
            ``test_fraction`` and ``n_folds`` when the run starts. The run folder's ``config.yaml`` stores the
            split made, so a continued run keeps it.
        validation_patients: see ``train_patients``.
        test_patients: see ``train_patients``.
    """

    roots: list[str] = field(default_factory=list)
    cohorts_tsv: Optional[str] = None
    patient_pattern: str = r"^([^_.]+)"
    test_fraction: float = 0.2
    n_folds: int = 5
    fold: int = 0
    shape: list[int] = field(default_factory=lambda: [64, 64, 64])
    spacing_mm: Optional[float] = None
    max_translation: float = 0.2
    max_rotation_deg: float = 180.0
    rotation_curriculum_epochs: int = 0
    curriculum_start_deg: float = 30.0
    max_scale: float = 0.1
    max_shear: float = 0.05
    pairs_per_epoch: int = 64
    validation_pairs: int = 16
    label_synthesis: float = 0.0
    balance_cohorts: bool = True
    crop_probability: float = 0.3
    train_patients: list[str] = field(default_factory=list)
    validation_patients: list[str] = field(default_factory=list)
    test_patients: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.roots and not self.cohorts_tsv:
            raise SettingsError("data: give dataset folders (data.roots=[...]) or a cohort list (data.cohorts_tsv=FILE)")
        if not 0.0 <= self.test_fraction < 1.0:
            raise SettingsError(f"data.test_fraction must be in [0, 1), got {self.test_fraction}")
        check_positive(self.n_folds, "data.n_folds", integer=True)
        if not 0 <= self.fold < self.n_folds:
            raise SettingsError(f"data.fold must be in 0..{self.n_folds - 1}, got {self.fold}")
        if len(self.shape) != 3:
            raise SettingsError(f"data.shape needs three sizes (D, H, W), got {list(self.shape)}")
        for size in self.shape:
            check_positive(size, "data.shape", integer=True)
        if self.spacing_mm is not None:
            check_positive(self.spacing_mm, "data.spacing_mm")
        if not 0.0 <= self.max_translation < 1.0:
            raise SettingsError(f"data.max_translation must be in [0, 1), got {self.max_translation}")
        for name in ("max_rotation_deg", "curriculum_start_deg"):
            if not 0.0 <= getattr(self, name) <= 180.0:
                raise SettingsError(f"data.{name} must be in [0, 180], got {getattr(self, name)}")
        check_positive(self.rotation_curriculum_epochs, "data.rotation_curriculum_epochs", integer=True, zero_allowed=True)
        for name in ("max_scale", "max_shear"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise SettingsError(f"data.{name} must be in [0, 0.5), got {value}")
        check_positive(self.pairs_per_epoch, "data.pairs_per_epoch", integer=True)
        check_positive(self.validation_pairs, "data.validation_pairs", integer=True)
        for name in ("label_synthesis", "crop_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingsError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class SegmentationDataConfig:
    """A segmentation dataset and the values of its plan (seed 001's fingerprint table).

    Attributes:
        basepath: the dataset folder.
        pathfinder: its layout (:data:`RegSegLib.segmentation.pathfinders.PATHFINDERS`: ``nnunet`` or
            ``registration``).
        img_foldername: the image folder (``None``: the layout's default, ``images_tr`` for ``nnunet``).
        seg_foldername: the label folder (``None``: the layout's default, ``labelsTr`` for ``nnunet``).
        modalities: per channel, ``CT`` (global clipping and z-score) or anything else (per-image z-score).
        patient_pattern: regular expression whose first group is the patient of a case name.
        test_fraction: share of the patients held out as the test split.
        n_folds: cross-validation folds of the rest; ``fold`` picks the validation fold.
        fold: the validation fold.
        patch_size: an *initial* patch size (D, H, W after the transpose); the plan moves it to the closest
            valid size. ``None``: from the median shape.
        spacing: target spacing in mm (K, J, I of the images); ``None``: the plan's (median, anisotropy rule).
        transpose_forward: axis order that puts the coarsest axis first; given only with
            ``transpose_backward``.
        transpose_backward: its inverse.
        patches_per_epoch: training patches per epoch.
        foreground_oversampling: share of patches centred on a foreground voxel (nnU-Net: 1/3).
        augment: spatial and intensity augmentation of the training patches.
        plan: the resolved plan (:class:`RegSegLib.segmentation.plan.Plan` as a dictionary), filled when the
            run starts; the run folder's ``config.yaml`` keeps it, so a continued run does not plan again.
        train_patients: the patients of each split (filled when the run starts, as for registration).
        validation_patients: see ``train_patients``.
        test_patients: see ``train_patients``.
    """

    basepath: str = MISSING
    pathfinder: str = "nnunet"
    img_foldername: Optional[str] = None
    seg_foldername: Optional[str] = None
    modalities: list[str] = field(default_factory=lambda: ["MR"])
    patient_pattern: str = r"^(.+)$"
    test_fraction: float = 0.0
    n_folds: int = 5
    fold: int = 0
    patch_size: Optional[list[int]] = None
    spacing: Optional[list[float]] = None
    transpose_forward: Optional[list[int]] = None
    transpose_backward: Optional[list[int]] = None
    patches_per_epoch: int = 250
    foreground_oversampling: float = 0.33
    augment: bool = True
    plan: dict[str, Any] = field(default_factory=dict)
    train_patients: list[str] = field(default_factory=list)
    validation_patients: list[str] = field(default_factory=list)
    test_patients: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise SettingsError(f"data.test_fraction must be in [0, 1), got {self.test_fraction}")
        check_positive(self.n_folds, "data.n_folds", integer=True)
        if not 0 <= self.fold < self.n_folds:
            raise SettingsError(f"data.fold must be in 0..{self.n_folds - 1}, got {self.fold}")
        check_positive(self.patches_per_epoch, "data.patches_per_epoch", integer=True)
        if not 0.0 <= self.foreground_oversampling <= 1.0:
            raise SettingsError(f"data.foreground_oversampling must be in [0, 1], got {self.foreground_oversampling}")
        if not self.modalities:
            raise SettingsError("data.modalities is empty: name the modality of each channel (e.g. [MR])")


@dataclass
class ModelConfig:
    """A network: its architecture name (:data:`RegSegLib.networks.ARCHITECTURES`) and arguments."""

    name: str = MISSING
    model_args: Any = None


@dataclass
class AffineArgs:
    """What every affine network takes: the transform family it predicts (:data:`RegSegLib.vocabulary.FAMILIES`)."""

    family: str = "rigid"

    def __post_init__(self) -> None:
        check_choice(self.family, tuple(FAMILIES), "transform family")


@dataclass
class AffineParamsArgs(AffineArgs):
    """Parameter regression on a 3D ResNet-18 (MONAI).

    Attributes:
        fusion: ``early`` (moving and fixed as two channels of one encoder) or ``late`` (a shared encoder per
            image, features concatenated).
        widen_factor: channel multiplier of the ResNet (1.0: 64-512 channels, 33 M parameters, 133 MB of
            float32 weights; 0.25: 2.1 M parameters, 8.3 MB).
        cascade: passes of the network; pass n + 1 sees the moving image warped by the composed prediction.
    """

    fusion: str = "early"
    widen_factor: float = 0.25
    cascade: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.fusion, FUSIONS, "fusion")
        check_positive(self.widen_factor, "widen_factor")
        check_positive(self.cascade, "cascade", integer=True)


@dataclass
class AffineParamsConfig(ModelConfig):
    name: str = "affine_params"
    model_args: AffineParamsArgs = field(default_factory=AffineParamsArgs)


@dataclass
class AffineMatrixArgs(AffineArgs):
    """Matrix estimation from keypoints (:class:`~RegSegLib.networks.affine.AffineMatrixNet`; ``family``: the
    family its least-squares fit is projected onto).

    Attributes:
        keypoints: heat maps (keypoints) per image.
        features: channels of the U-Net's first level.
    """

    keypoints: int = 32
    features: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.keypoints, "keypoints", integer=True)
        check_positive(self.features, "features", integer=True)


@dataclass
class AffineMatrixConfig(ModelConfig):
    name: str = "affine_matrix"
    model_args: AffineMatrixArgs = field(default_factory=AffineMatrixArgs)


@dataclass
class PlainConvUNetArgs:
    """PlainConvUNet (MONAI DynUNet without residual blocks). The topology is derived from the patch size
    and the spacing by the plan and stored here when the run starts; it cannot be set by hand (set
    ``data.patch_size`` or ``data.spacing`` instead), because stages, strides and kernels depend on each
    other.

    Attributes:
        deep_supervision: train on the lower decoder outputs as well (nnU-Net's weights 1/2^i).
        base_features: features of the first stage (doubled per stage up to ``max_features``).
        max_features: cap of the features per stage.
        n_stages: from the plan.
        n_conv_per_stage: from the plan.
        n_conv_per_stage_decoder: from the plan.
        features_per_stage: from the plan.
        strides: from the plan.
        kernel_sizes: from the plan.
    """

    deep_supervision: bool = True
    base_features: int = 32
    max_features: int = 320
    n_stages: Optional[int] = None
    n_conv_per_stage: Optional[list[int]] = None
    n_conv_per_stage_decoder: Optional[list[int]] = None
    features_per_stage: Optional[list[int]] = None
    strides: Optional[list[list[int]]] = None
    kernel_sizes: Optional[list[list[int]]] = None

    def __post_init__(self) -> None:
        check_positive(self.base_features, "base_features", integer=True)
        check_positive(self.max_features, "max_features", integer=True)


@dataclass
class PlainConvUNetConfig(ModelConfig):
    name: str = "plain_conv_unet"
    model_args: PlainConvUNetArgs = field(default_factory=PlainConvUNetArgs)


@dataclass
class TransferConfig:
    """Transfer learning between identical networks (ClinicaDL: every parameter is transferred, so the
    parameter names and shapes must match).

    Attributes:
        source: a ``model.pt`` saved by a run (``best-METRIC/model.pt``); ``None``: no transfer.
        trainable_last: train only the last n parameter tensors, freezing the others (0: train all).
    """

    source: Optional[str] = None
    trainable_last: int = 0

    def __post_init__(self) -> None:
        check_positive(self.trainable_last, "transfer.trainable_last", integer=True, zero_allowed=True)


@dataclass
class BaseConfig:
    """Everything a training run needs; the run folder stores it resolved (``config.yaml``).

    Attributes:
        task: what is trained (``affine``, ``elastic``, ``segmentation``, ...).
        seed: seed of ``random``, ``numpy``, ``torch`` and every data-loader worker.
        deterministic: deterministic algorithms (exactly reproducible on one GPU; slower).
        epochs: most epochs.
        batch_size: pairs per batch.
        accumulation_steps: batches per weight update (virtual batch = batch_size x accumulation_steps);
            leftover batches at the end of an epoch still make an update.
        learning_rate: Adam's learning rate.
        weight_decay: Adam's weight decay.
        evaluation_steps: evaluate on the whole validation set every this many weight updates as well
            (0: at the end of each epoch only). Model selection happens at epoch ends only.
        selection_metrics: validation metrics for which the best model is kept (``best-METRIC/``).
        patience: epochs without a relative improvement of the validation loss before stopping (0: never).
        tolerance: relative improvement required: the loss must fall below ``best x (1 - tolerance)``.
        accelerator: ``auto``, ``cpu`` or ``cuda``.
        devices: devices per node (a number, or a list of GPU indices such as ``[1]``).
        num_nodes: nodes (several: Lightning's DDP across machines).
        strategy: Lightning strategy (``auto``, ``ddp``, ``ddp_spawn``, ...).
        precision: :data:`PRECISIONS`.
        num_workers: data-loader worker processes.
        logger: ``csv``, ``tensorboard`` or ``clearml`` (when installed).
        output_dir: parent folder of run folders.
        run_name: the run folder's name (``None``: the task, fold and a time stamp).
        continue_from: a run folder to continue: its stored config with this run's overrides, its last
            checkpoint (mid-epoch when killed) and its callbacks' states.
        checkpoint_steps: also save ``last.ckpt`` every this many weight updates (0: epoch ends only).
        transfer: transfer learning.
        lr_scheduler: learning-rate scheduler.
        model_config: the network.
        data: the data (:data:`DATA_CONFIGS` of the task: :class:`DataConfig` for registration networks,
            :class:`SegmentationDataConfig` for segmentation).
    """

    task: str = "affine"
    seed: int = 0
    deterministic: bool = False
    epochs: int = 100
    batch_size: int = 4
    accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    evaluation_steps: int = 0
    selection_metrics: list[str] = field(default_factory=lambda: ["loss"])
    patience: int = 10
    tolerance: float = 0.0
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    logger: str = "csv"
    output_dir: str = "runs"
    run_name: Optional[str] = None
    continue_from: Optional[str] = None
    checkpoint_steps: int = 0
    transfer: TransferConfig = field(default_factory=TransferConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    model_config: ModelConfig = MISSING
    data: Any = MISSING

    def __post_init__(self) -> None:
        check_positive(self.seed, "seed", integer=True, zero_allowed=True)
        for name in ("epochs", "batch_size", "accumulation_steps", "num_nodes"):
            check_positive(getattr(self, name), name, integer=True)
        for name in ("evaluation_steps", "patience", "num_workers", "checkpoint_steps"):
            check_positive(getattr(self, name), name, integer=True, zero_allowed=True)
        check_positive(self.learning_rate, "learning_rate")
        check_positive(self.weight_decay, "weight_decay", zero_allowed=True)
        if not 0.0 <= self.tolerance < 1.0:
            raise SettingsError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if not self.selection_metrics:
            raise SettingsError("selection_metrics is empty: name at least one validation metric")
        check_choice(self.accelerator, DEVICES, "accelerator")
        check_choice(self.precision, PRECISIONS, "precision")
        check_choice(self.logger, LOGGERS, "logger")

    @property
    def virtual_batch_size(self) -> int:
        """Pairs per weight update: ``batch_size x accumulation_steps``."""
        return self.batch_size * self.accumulation_steps


def scheduler_epoch_warning(scheduler: LRSchedulerConfig, planned_epochs: int, epochs: int) -> str | None:
    """The warning for continuing an epoch-dependent schedule past the epochs it was planned for, or ``None``.

    A schedule such as ``CosineAnnealingLR(T_max=100)`` or ``StepLR`` was laid out for ``planned_epochs``;
    asking for more epochs when continuing runs it past that plan (a cosine rises again, a step schedule
    keeps decaying), which is rarely what was meant.
    """
    if epochs > planned_epochs and SCHEDULERS[scheduler.type]:
        return (
            f"warning: the learning-rate scheduler {scheduler.type} depends on the epoch and was planned for "
            f"{planned_epochs} epochs; continuing to {epochs} epochs runs it past that plan"
        )
    return None


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    **dict(zip(AFFINE_ARCHITECTURES, (AffineParamsConfig, AffineMatrixConfig))),
    **dict(zip(SEGMENTATION_ARCHITECTURES, (PlainConvUNetConfig,))),
}
"""The model group: ``model_config`` name (:data:`RegSegLib.vocabulary.AFFINE_ARCHITECTURES`,
:data:`RegSegLib.vocabulary.SEGMENTATION_ARCHITECTURES`) -> its dataclass."""
DATA_CONFIGS: dict[str, type] = {"registration": DataConfig, "segmentation": SegmentationDataConfig}
"""The data group's schemas: each YAML file of ``configs/data/`` extends one of them (its ``defaults``
list names ``NAME_schema``), so that ``OmegaConf.to_object`` makes the dataclass and validates it."""


def data_schema(model_name: str) -> type:
    """The data dataclass of a model (segmentation networks read labelled cases, the others make pairs)."""
    return SegmentationDataConfig if model_name in SEGMENTATION_ARCHITECTURES else DataConfig


def register_configs() -> None:
    """Stores the structured configs in Hydra's ``ConfigStore``: ``base_config``, the model group
    (:data:`MODEL_CONFIGS`) and the data group's schemas (:data:`DATA_CONFIGS`)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="base_config", node=BaseConfig)
    for name, node in MODEL_CONFIGS.items():
        store.store(group="model_config", name=name, node=node)
    for name, node in DATA_CONFIGS.items():
        store.store(group="data", name=f"{name}_schema", node=node)
