"""nnU-Net-style dataset fingerprint and experiment plan (ALGORITHMS.md D, seed 001).

A :class:`DatasetFingerprint` holds what planning needs of a dataset: each case's spacing and shape, the
foreground labels and the intensities of the foreground voxels (:func:`fingerprint_dataset` reads them from
files, :func:`fingerprint_from_arrays` makes one up). :func:`plan_experiment` turns it into a :class:`Plan`:
target spacing, transposition, patch and batch size, the U-Net topology and the intensity normalisation.

**Axes.** A fingerprint and the plan's ``spacing`` use the data order of :class:`~RegSegLib.volume.Volume`,
``(K, J, I)``, in mm. The network sees the data transposed so that the coarsest axis comes first:
``data.permute(0, *(1 + a for a in plan.transpose_forward))`` of a ``[C, K, J, I]`` tensor (resampled to
``plan.spacing``) is in *network order*, and ``transpose_backward`` permutes it back the same way. The plan's
``patch_size``, ``strides`` and ``kernel_sizes`` are in network order.

**Rules** (nnU-Net's, written anew here):

1. Target spacing: the per-axis median spacing. When the coarsest median spacing exceeds
   :data:`ANISOTROPY_RATIO` times the largest other one and the median size along that axis (in voxels at the
   median spacing) times :data:`ANISOTROPY_RATIO` is below the smallest other median size, that axis takes
   the 10th percentile of the cases' spacings along it instead, but not less than the largest other spacing.
2. Transposition: the axis of the largest target spacing first (the first of equal ones), the others after it
   in data order.
3. Initial patch size: the user's, else the median shape at the target spacing (network order) shrunk one
   voxel at a time along the axis of largest extent in mm until it holds at most
   ``max_voxels_per_batch / MIN_BATCH_SIZE`` voxels.
4. Topology (:func:`network_topology`): pool by 2, stage after stage, along every axis whose feature map still
   has at least ``2 * MIN_FEATURE_MAP_SIZE`` voxels and whose current spacing is at most
   :data:`POOLING_SPACING_RATIO` times the finest current spacing of those axes; at most :data:`MAX_POOLINGS`
   poolings. The convolutions of a stage have kernel 1 along an axis whose current spacing exceeds
   :data:`POOLING_SPACING_RATIO` times the finest one, else 3 (once 3, an axis stays 3). Stage ``s`` has
   ``min(base_features * 2**s, max_features)`` features and :data:`CONVS_PER_STAGE` convolutions.
5. Closest valid patch size: each axis rounded (half up) to a multiple of the product of its strides; the
   topology is derived again from the rounded size until it no longer changes, so that planning with a plan's
   own patch size gives the same plan.
6. Batch size: the user's, else as many patches as ``max_voxels_per_batch`` voxels hold, but no
   more than :data:`MAX_DATASET_FRACTION_PER_BATCH` of the dataset's voxels (at the target spacing), and at
   least :data:`MIN_BATCH_SIZE`.
7. Normalisation per channel: ``ct`` for a channel the caller names ``CT`` (clip to the dataset's foreground
   0.5 / 99.5 percentiles, then z-score with the dataset's foreground mean and std), else ``zscore``.

The user may override ``patch_size`` (an initial value only), ``spacing``, ``batch_size`` and
``transpose_forward`` with ``transpose_backward`` (together); the topology always follows from the patch size
and the spacing (only the network's width, ``base_features`` and ``max_features``, is chosen). This module
imports torch only inside :func:`fingerprint_dataset` (through the readers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from RegSegLib.errors import InputError
from RegSegLib.segmentation.pathfinders import Case
from RegSegLib.validation import SettingsError, check_choice, check_counts, check_positive, is_number

ANISOTROPY_RATIO: float = 3.0
"""A median spacing this many times coarser than the others (and few voxels along it) marks an anisotropic dataset."""

ANISOTROPIC_SPACING_PERCENTILE: float = 10.0
"""Percentile of the cases' spacings taken along the coarse axis of an anisotropic dataset."""

POOLING_SPACING_RATIO: float = 2.0
"""An axis is pooled (and convolved with kernel 3) while its spacing is at most this many times the finest."""

MIN_FEATURE_MAP_SIZE: int = 4
"""The fewest voxels of a feature map along an axis; an axis is pooled only from twice this size."""

MAX_POOLINGS: int = 6
"""The most poolings of the encoder (stages = poolings + 1)."""

BASE_FEATURES: int = 32
"""Default features of the first stage; they double at each stage up to :data:`MAX_FEATURES`."""

MAX_FEATURES: int = 320
"""Default most features of a stage."""

CONVS_PER_STAGE: int = 2
"""Convolutions per encoder stage and per decoder stage."""

MIN_BATCH_SIZE: int = 2
"""The smallest batch a plan chooses."""

DEFAULT_MAX_VOXELS_PER_BATCH: int = 2 * 128**3
"""Voxel budget of a batch (two 128^3 patches); the initial patch holds at most half of it."""

MAX_DATASET_FRACTION_PER_BATCH: float = 0.05
"""A chosen batch holds at most this fraction of the dataset's voxels (unless that is below the minimum)."""

INTENSITY_SAMPLES_PER_CASE: int = 10_000
"""Foreground voxels drawn (with replacement) per case and channel for the dataset's intensity statistics."""

NORMALISATIONS: tuple[str, ...] = ("zscore", "ct")
"""Intensity normalisation schemes (:class:`ChannelNormalisation`)."""

RELATIVE_SPACING_TOLERANCE: float = 1e-5
"""Spacings within this relative difference are equal in the rules' comparisons (float noise of file headers)."""

_MAX_PATCH_ROUNDS = 8


@dataclass(frozen=True)
class IntensityStats:
    """Statistics of foreground intensities of one channel.

    Attributes:
        mean: mean intensity.
        std: standard deviation (population).
        percentile_00_5: 0.5th percentile.
        percentile_99_5: 99.5th percentile.
    """

    mean: float
    std: float
    percentile_00_5: float
    percentile_99_5: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not is_number(value) or not math.isfinite(value):
                raise SettingsError(f"intensity {f.name} must be a finite number, got {value!r}")
        if self.std < 0:
            raise SettingsError(f"intensity std must be non-negative, got {self.std!r}")
        if self.percentile_00_5 > self.percentile_99_5:
            raise SettingsError(
                f"intensity percentile_00_5 {self.percentile_00_5} exceeds percentile_99_5 {self.percentile_99_5}"
            )

    @classmethod
    def of(cls, values: np.ndarray) -> "IntensityStats":
        """The statistics of a non-empty array of intensities (any shape)."""
        values = np.asarray(values, dtype=np.float64)
        low, high = np.percentile(values, [0.5, 99.5])
        return cls(float(values.mean()), float(values.std()), float(low), float(high))


STANDARD_NORMAL = IntensityStats(0.0, 1.0, -2.5758293035489004, 2.5758293035489004)
"""The intensity statistics of a standard normal distribution (the default of a made-up fingerprint)."""


@dataclass(frozen=True)
class CaseFingerprint:
    """What planning needs of one case.

    Attributes:
        name: the case name.
        spacing: voxel size ``(K, J, I)`` in mm.
        shape: spatial shape ``(K, J, I)``.
        intensity: per channel, the statistics of the case's foreground voxels; empty when the case has no
            foreground voxel or the fingerprint was made up.
    """

    name: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    intensity: tuple[IntensityStats, ...] = ()


@dataclass(frozen=True)
class DatasetFingerprint:
    """What planning needs of a dataset.

    Attributes:
        cases: one fingerprint per case.
        foreground_labels: the nonzero label values found, sorted.
        num_channels: the number of image channels.
        intensity: per channel, the statistics of the foreground voxels of all cases (pooled samples, each case
            weighing the same).
    """

    cases: tuple[CaseFingerprint, ...]
    foreground_labels: tuple[int, ...]
    num_channels: int
    intensity: tuple[IntensityStats, ...]

    def __post_init__(self) -> None:
        if not self.cases:
            raise SettingsError("a dataset fingerprint needs at least one case")
        object.__setattr__(self, "foreground_labels", _labels(self.foreground_labels, "foreground labels"))
        check_positive(self.num_channels, "number of channels", integer=True)
        if len(self.intensity) != self.num_channels:
            raise SettingsError(f"{len(self.intensity)} intensity statistics for {self.num_channels} channel(s)")

    @property
    def spacings(self) -> np.ndarray:
        """Voxel sizes of the cases, ``[N, 3]`` ``(K, J, I)`` mm."""
        return np.array([case.spacing for case in self.cases], dtype=np.float64)

    @property
    def shapes(self) -> np.ndarray:
        """Spatial shapes of the cases, ``[N, 3]`` ``(K, J, I)``."""
        return np.array([case.shape for case in self.cases], dtype=np.float64)


@dataclass(frozen=True)
class ChannelNormalisation:
    """How one channel's intensities are normalised before the network.

    ``zscore`` (nnU-Net's rule for MR and other non-CT images): each image is z-scored with its own mean and
    standard deviation; ``mean``, ``std`` and the clip values are the dataset's, kept for reference. ``ct``:
    intensities are clipped to ``[low, high]`` (the dataset's foreground 0.5 / 99.5 percentiles),
    then z-scored with the dataset's foreground ``mean`` and ``std``.

    Attributes:
        scheme: one of :data:`NORMALISATIONS`.
        mean: the dataset's foreground mean.
        std: the dataset's foreground standard deviation (positive for ``ct``).
        low: the dataset's foreground 0.5th percentile.
        high: the dataset's foreground 99.5th percentile.
    """

    scheme: str
    mean: float
    std: float
    low: float
    high: float

    def __post_init__(self) -> None:
        check_choice(self.scheme, NORMALISATIONS, "normalisation")
        IntensityStats(self.mean, self.std, self.low, self.high)
        if self.scheme == "ct":
            check_positive(self.std, "the foreground std of a CT channel")


class Topology(NamedTuple):
    """A U-Net topology derived from a patch size and a spacing (network order).

    Attributes:
        strides: per stage, the pooling strides into it, ``(1, 1, 1)`` for the first stage.
        kernel_sizes: per stage, the convolution kernel size (1 or 3 per axis).
        patch_size: the closest valid patch size, a multiple of the product of the strides along each axis.
    """

    strides: tuple[tuple[int, int, int], ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    patch_size: tuple[int, int, int]


@dataclass(frozen=True)
class Plan:
    """The experiment plan of a segmentation network: the seed's dataset variables, the topology and the
    normalisation. ``spacing`` is in data order ``(K, J, I)``; ``patch_size``, ``strides`` and ``kernel_sizes``
    in network order (after ``transpose_forward``; see the module docstring).

    Attributes:
        foreground_labels: the label values to predict, sorted (class ``c`` of the network is
            ``foreground_labels[c - 1]``; class 0 is background).
        patch_size: the network input shape, 3 values.
        spacing: the spacing images are resampled to, mm, ``(K, J, I)``.
        batch_size: patches per batch.
        transpose_forward: data axes in network order.
        transpose_backward: its inverse.
        num_channels: input channels.
        num_classes: ``len(foreground_labels) + 1``.
        n_stages: stages of the encoder.
        n_conv_per_stage: convolutions per encoder stage, ``n_stages`` values.
        n_conv_per_stage_decoder: convolutions per decoder stage, ``n_stages - 1`` values.
        features_per_stage: features per stage, ``n_stages`` values.
        strides: per stage the pooling strides into it, ``n_stages`` triples, the first ``(1, 1, 1)``.
        kernel_sizes: per stage the convolution kernel size, ``n_stages`` triples of odd values.
        normalisation: per channel, its :class:`ChannelNormalisation`.

    Raises:
        SettingsError: values that do not fit together (counts, lengths, a patch size not divisible by the
            strides, transposes that are not inverse permutations).
    """

    foreground_labels: tuple[int, ...]
    patch_size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    batch_size: int
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    num_channels: int
    num_classes: int
    n_stages: int
    n_conv_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, int, int], ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    normalisation: tuple[ChannelNormalisation, ...]

    def __post_init__(self) -> None:
        labels = _labels(self.foreground_labels, "foreground_labels")
        check_positive(self.num_channels, "num_channels", integer=True)
        check_positive(self.n_stages, "n_stages", integer=True)
        check_positive(self.batch_size, "batch_size", integer=True)
        if self.num_classes != len(labels) + 1:
            raise SettingsError(
                f"num_classes must be len(foreground_labels) + 1 = {len(labels) + 1}, got {self.num_classes}"
            )
        forward, backward = _transposes(self.transpose_forward, self.transpose_backward)
        stages = self.n_stages
        strides = _per_stage(self.strides, stages, "strides")
        kernels = _per_stage(self.kernel_sizes, stages, "kernel_sizes")
        if strides[0] != (1, 1, 1):
            raise SettingsError(f"the first stage's strides must be (1, 1, 1), got {strides[0]}")
        if any(size % 2 == 0 for kernel in kernels for size in kernel):
            raise SettingsError(f"kernel_sizes must be odd, got {[list(kernel) for kernel in kernels]}")
        patch = _triple(self.patch_size, "patch_size", integer=True)
        multiples = _stride_products(strides)
        if any(size % multiple for size, multiple in zip(patch, multiples)):
            raise SettingsError(
                f"patch_size {list(patch)} is not divisible by the product of the strides {list(multiples)}"
            )
        normalisation = tuple(_channel_normalisation(item) for item in _values(self.normalisation, "normalisation"))
        if len(normalisation) != self.num_channels:
            raise SettingsError(f"{len(normalisation)} normalisation(s) for {self.num_channels} channel(s)")
        converted = {
            "foreground_labels": labels,
            "patch_size": patch,
            "spacing": _triple(self.spacing, "spacing", integer=False),
            "batch_size": int(self.batch_size),
            "transpose_forward": forward,
            "transpose_backward": backward,
            "num_channels": int(self.num_channels),
            "num_classes": int(self.num_classes),
            "n_stages": int(stages),
            "n_conv_per_stage": _counts(self.n_conv_per_stage, stages, "n_conv_per_stage"),
            "n_conv_per_stage_decoder": _counts(self.n_conv_per_stage_decoder, stages - 1, "n_conv_per_stage_decoder"),
            "features_per_stage": _counts(self.features_per_stage, stages, "features_per_stage"),
            "strides": strides,
            "kernel_sizes": kernels,
            "normalisation": normalisation,
        }
        for name, value in converted.items():
            object.__setattr__(self, name, value)

    @property
    def network_spacing(self) -> tuple[float, float, float]:
        """``spacing`` in network order (``transpose_forward`` applied)."""
        return _transposed(self.spacing, self.transpose_forward)

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-friendly values (lists, numbers, strings) for configs and model files."""
        values = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        values["normalisation"] = [asdict(scheme) for scheme in self.normalisation]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Plan":
        """The plan stored by :meth:`as_dict` (or a config mapping with the same keys).

        Raises:
            SettingsError: missing or unknown keys, or values that do not fit together.
        """
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in values]
        unknown = sorted(str(key) for key in values if key not in names)
        if missing or unknown:
            raise SettingsError(f"a plan needs exactly the keys {names}; missing {missing}, unknown {unknown}")
        return cls(**{name: values[name] for name in names})


def _channel_normalisation(item: Any) -> ChannelNormalisation:
    """A :class:`ChannelNormalisation`, or one stored as a mapping of its fields."""
    if isinstance(item, ChannelNormalisation):
        return item
    names = [f.name for f in fields(ChannelNormalisation)]
    if not isinstance(item, Mapping) or sorted(str(key) for key in item) != sorted(names):
        raise SettingsError(f"a normalisation needs exactly the keys {names}, got {item!r}")
    return ChannelNormalisation(**{name: item[name] for name in names})


def _values(values: Any, what: str) -> tuple:
    """``values`` as a tuple; a string or a non-iterable is refused."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise SettingsError(f"{what} must be a list of values, got {values!r}")
    return tuple(values)


def _labels(values: Any, what: str) -> tuple[int, ...]:
    """Distinct nonzero integer labels in increasing order, at least one."""
    values = _values(values, what)
    whole = all(is_number(value) and math.isfinite(value) and float(value).is_integer() for value in values)
    if not values or not whole or 0 in values or list(values) != sorted(set(values)):
        raise SettingsError(f"{what} must be distinct nonzero integers in increasing order, got {list(values)}")
    return tuple(int(value) for value in values)


def _triple(values: Any, what: str, *, integer: bool, zero_allowed: bool = False) -> tuple:
    """Three finite positive (or zero) numbers, one per axis."""
    values = _values(values, what)
    if len(values) != 3:
        raise SettingsError(f"{what} must have 3 values (one per axis), got {len(values)}: {list(values)}")
    return check_counts(values, what, integer=integer, zero_allowed=zero_allowed)


def _counts(values: Any, length: int, what: str) -> tuple[int, ...]:
    values = _values(values, what)
    if len(values) != length:
        raise SettingsError(f"{what} must have {length} values, got {len(values)}")
    return check_counts(values, what, integer=True) if values else ()


def _per_stage(values: Any, stages: int, what: str) -> tuple[tuple[int, int, int], ...]:
    values = _values(values, what)
    if len(values) != stages:
        raise SettingsError(f"{what} must have one triple per stage ({stages}), got {len(values)}")
    return tuple(_triple(value, what, integer=True) for value in values)


def _permutation(values: Any, what: str) -> tuple[int, int, int]:
    values = _triple(values, what, integer=True, zero_allowed=True)
    if sorted(values) != [0, 1, 2]:
        raise SettingsError(f"{what} must be a permutation of 0, 1, 2, got {list(values)}")
    return values


def _transposes(forward: Any, backward: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Checked ``(transpose_forward, transpose_backward)``: permutations of the axes, inverse to each other."""
    forward = _permutation(forward, "transpose_forward")
    backward = _permutation(backward, "transpose_backward")
    if tuple(forward[axis] for axis in backward) != (0, 1, 2):
        raise SettingsError(
            f"transpose_backward {list(backward)} is not the inverse of transpose_forward {list(forward)} "
            f"(that is {list(_inverse(forward))})"
        )
    return forward, backward


def _inverse(permutation: Sequence[int]) -> tuple[int, int, int]:
    return tuple(int(axis) for axis in np.argsort(permutation))  # type: ignore[return-value]


def _transposed(values: Sequence, permutation: Sequence[int]) -> tuple:
    return tuple(values[axis] for axis in permutation)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (JSON-friendly)."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _stride_products(strides: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """Per axis, the product of the strides of all stages (the total downsampling)."""
    return tuple(int(np.prod([stride[axis] for stride in strides])) for axis in range(3))  # type: ignore[return-value]


def fingerprint_dataset(
    cases: Sequence[Case], samples_per_case: int = INTENSITY_SAMPLES_PER_CASE, seed: int = 0
) -> DatasetFingerprint:
    """Reads every case and collects its spacing, shape, foreground labels and foreground intensities.

    Each channel file must be one 3D volume, all channels and the label map (an integer label map, 3D) on the
    same grid. Per case and channel, ``samples_per_case`` foreground voxels (label != 0) are drawn with
    replacement; the dataset's intensity statistics are those of all drawn samples, so each case weighs the same.

    Args:
        cases: the dataset's cases (:meth:`RegSegLib.segmentation.pathfinders.PathFinder.cases`), each with a
            label map.
        samples_per_case: foreground voxels drawn per case and channel.
        seed: seed of the draws (case ``n`` draws from ``numpy.random.default_rng([seed, n])``).

    Returns:
        The fingerprint; spacings and shapes in data order ``(K, J, I)``.

    Raises:
        InputError: no case, a case without a label map, an unreadable file, a channel file with several
            channels, NaN or infinite intensities, a label map that is not an integer 3D map on its image's grid,
            channels on different grids, differing channel counts, or no foreground voxel in the whole dataset.
    """
    check_positive(samples_per_case, "samples_per_case", integer=True)
    if not cases:
        raise InputError(None, "no cases to fingerprint")
    num_channels = len(cases[0].images)
    fingerprints, labels = [], set()
    samples: list[list[np.ndarray]] = [[] for _ in range(num_channels)]
    for index, case in enumerate(cases):
        if len(case.images) != num_channels:
            raise InputError(
                case.images[0] if case.images else None,
                f"case {case.name!r} has {len(case.images)} channel(s); case {cases[0].name!r} has {num_channels}",
            )
        channels, foreground, fingerprint = _read_case(case)
        labels.update(foreground)
        rng = np.random.default_rng([seed, index])
        for channel, values in enumerate(channels):
            if values.size:
                samples[channel].append(rng.choice(values, samples_per_case))
        fingerprints.append(fingerprint)
    if not labels:
        folder = Path(cases[0].label).parent  # type: ignore[arg-type]
        raise InputError(folder, "no label map holds a foreground voxel (a nonzero label)")
    intensity = tuple(IntensityStats.of(np.concatenate(drawn)) for drawn in samples)
    return DatasetFingerprint(tuple(fingerprints), tuple(sorted(labels)), num_channels, intensity)


def _read_case(case: Case) -> tuple[list[np.ndarray], set[int], CaseFingerprint]:
    """Reads one case: per channel its foreground intensities ``[F]``, its foreground labels and fingerprint."""
    from RegSegLib.io.checks import check_same_grid, read_labels
    from RegSegLib.io.volumes import read_volume

    if not case.images:
        raise InputError(None, f"case {case.name!r} has no image")
    if case.label is None:
        raise InputError(case.images[0], f"case {case.name!r} has no label map; fingerprinting needs one per case")
    first_path = str(case.images[0])
    volumes = []
    for path in case.images:
        volume = read_volume(path)
        if volume.num_channels != 1:
            raise InputError(path, f"has {volume.num_channels} channels; each channel of a case is its own 3D file")
        if volumes:
            check_same_grid(volume, str(path), volumes[0], first_path, "channel")
        volumes.append(volume)
    label_map = read_labels(str(case.label), volumes[0], first_path).data[0].numpy()
    inside = label_map != 0
    channels = []
    for path, volume in zip(case.images, volumes):
        data = volume.data[0].numpy()
        if not np.isfinite(data).all():
            raise InputError(path, "contains NaN or infinite values")
        channels.append(data[inside].astype(np.float64))
    first = volumes[0]
    fingerprint = CaseFingerprint(
        name=case.name,
        spacing=tuple(float(s) for s in first.spacing[::-1]),  # type: ignore[arg-type]
        shape=first.shape,
        intensity=tuple(IntensityStats.of(values) for values in channels) if inside.any() else (),
    )
    return channels, {int(label) for label in np.unique(label_map[inside])}, fingerprint


def fingerprint_from_arrays(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    foreground_labels: Sequence[int],
    num_channels: int = 1,
    intensity: Sequence[IntensityStats] | None = None,
) -> DatasetFingerprint:
    """A made-up fingerprint, to plan a dataset without files.

    Args:
        spacings: per case, the voxel size ``(K, J, I)`` in mm.
        shapes: per case, the spatial shape ``(K, J, I)``.
        foreground_labels: the nonzero label values (any order).
        num_channels: image channels.
        intensity: per channel, the foreground statistics (:data:`STANDARD_NORMAL` for each when ``None``).

    Raises:
        SettingsError: no case, different numbers of spacings and shapes, values that are not 3 positive
            numbers, bad labels or a wrong number of intensity statistics.
    """
    spacings, shapes = _values(spacings, "spacings"), _values(shapes, "shapes")
    if len(spacings) != len(shapes):
        raise SettingsError(f"{len(spacings)} spacings for {len(shapes)} shapes")
    check_positive(num_channels, "number of channels", integer=True)
    cases = tuple(
        CaseFingerprint(
            f"case_{index:03d}",
            _triple(spacing, "spacings", integer=False),
            _triple(shape, "shapes", integer=True),
        )
        for index, (spacing, shape) in enumerate(zip(spacings, shapes))
    )
    stats = (STANDARD_NORMAL,) * num_channels if intensity is None else tuple(intensity)
    labels = tuple(sorted({int(label) for label in _values(foreground_labels, "foreground labels")}))
    return DatasetFingerprint(cases, labels, num_channels, stats)


def _coarsest_axis(spacing: Sequence[float]) -> int:
    """The first axis whose spacing is the largest (within :data:`RELATIVE_SPACING_TOLERANCE`)."""
    largest = max(spacing)
    return next(axis for axis, value in enumerate(spacing) if value >= largest * (1 - RELATIVE_SPACING_TOLERANCE))


def target_spacing(fingerprint: DatasetFingerprint) -> tuple[float, float, float]:
    """The target spacing ``(K, J, I)`` in mm: the median spacing, with nnU-Net's anisotropic axis rule (rule 1)."""
    spacings = fingerprint.spacings
    target = np.median(spacings, axis=0)
    sizes = np.median(fingerprint.shapes * spacings / target, axis=0)
    coarse = _coarsest_axis(target)
    others = [axis for axis in range(3) if axis != coarse]
    finer = float(max(target[others]))
    anisotropic_spacing = target[coarse] > ANISOTROPY_RATIO * finer * (1 + RELATIVE_SPACING_TOLERANCE)
    if anisotropic_spacing and sizes[coarse] * ANISOTROPY_RATIO < min(sizes[others]):
        target[coarse] = max(float(np.percentile(spacings[:, coarse], ANISOTROPIC_SPACING_PERCENTILE)), finer)
    return tuple(float(value) for value in target)  # type: ignore[return-value]


def median_shape(fingerprint: DatasetFingerprint, spacing: Sequence[float]) -> tuple[int, int, int]:
    """The median shape ``(K, J, I)`` of the cases resampled to ``spacing`` (voxels, rounded half up, at least 1)."""
    sizes = np.median(fingerprint.shapes * fingerprint.spacings / np.asarray(spacing, dtype=np.float64), axis=0)
    return tuple(max(1, _round_half_up(float(size))) for size in sizes)  # type: ignore[return-value]


def transposition(spacing: Sequence[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(transpose_forward, transpose_backward)`` for a spacing: the coarsest axis first (rule 2)."""
    coarse = _coarsest_axis(spacing)
    forward = (coarse,) + tuple(axis for axis in range(3) if axis != coarse)
    return forward, _inverse(forward)  # type: ignore[return-value]


def _capped_patch(shape: Sequence[int], spacing: Sequence[float], max_voxels: int) -> tuple[int, int, int]:
    """``shape`` shrunk one voxel at a time along the axis of largest extent in mm to at most ``max_voxels``."""
    patch = [int(size) for size in shape]
    while math.prod(patch) > max_voxels:
        extents = [size * step for size, step in zip(patch, spacing)]
        patch[int(np.argmax(extents))] -= 1
    return tuple(patch)  # type: ignore[return-value]


def _pooling(
    patch_size: Sequence[int], spacing: Sequence[float]
) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]:
    """Strides and kernel sizes per stage for one patch size (rule 4), network order."""
    size = [float(value) for value in patch_size]
    current = [float(value) for value in spacing]
    strides = [(1, 1, 1)]
    kernel = [1, 1, 1]
    kernels = []
    while True:
        fine_limit = POOLING_SPACING_RATIO * min(current) * (1 + RELATIVE_SPACING_TOLERANCE)
        kernel = [3 if width == 3 or step <= fine_limit else 1 for width, step in zip(kernel, current)]
        kernels.append(tuple(kernel))
        poolable = [axis for axis in range(3) if size[axis] >= 2 * MIN_FEATURE_MAP_SIZE]
        if not poolable or len(strides) > MAX_POOLINGS:
            break
        finest_poolable = min(current[axis] for axis in poolable)
        limit = POOLING_SPACING_RATIO * finest_poolable * (1 + RELATIVE_SPACING_TOLERANCE)
        pooled = [axis for axis in poolable if current[axis] <= limit]
        strides.append(tuple(2 if axis in pooled else 1 for axis in range(3)))
        for axis in pooled:
            size[axis] /= 2
            current[axis] *= 2
    return tuple(strides), tuple(kernels)  # type: ignore[return-value]


def network_topology(patch_size: Sequence[int], spacing: Sequence[float]) -> Topology:
    """The U-Net topology and the closest valid patch size for an initial patch size (rules 4 and 5).

    Args:
        patch_size: initial patch size, network order, 3 positive integers.
        spacing: the spacing of the network input, network order, mm.

    Returns:
        strides and kernel sizes per stage (at most ``MAX_POOLINGS + 1`` stages) and the valid patch size:
        along each axis a multiple of the product of its strides, with at least :data:`MIN_FEATURE_MAP_SIZE`
        voxels at the last stage.

    Raises:
        SettingsError: a patch size or spacing that is not 3 positive numbers.
    """
    patch = _triple(patch_size, "patch_size", integer=True)
    spacing = _triple(spacing, "spacing", integer=False)
    for _ in range(_MAX_PATCH_ROUNDS):
        strides, kernels = _pooling(patch, spacing)
        valid = tuple(
            _round_half_up(size / multiple) * multiple for size, multiple in zip(patch, _stride_products(strides))
        )
        if valid == patch:
            break
        patch = valid
    return Topology(strides, kernels, valid)  # type: ignore[arg-type]


def _normalisation(
    fingerprint: DatasetFingerprint, modalities: Sequence[str] | None
) -> tuple[ChannelNormalisation, ...]:
    if modalities is None:
        modalities = ("",) * fingerprint.num_channels
    modalities = _values(modalities, "modalities")
    if len(modalities) != fingerprint.num_channels or not all(isinstance(m, str) for m in modalities):
        raise SettingsError(
            f"modalities must name each of the {fingerprint.num_channels} channel(s), got {list(modalities)}"
        )
    return tuple(
        ChannelNormalisation(
            "ct" if modality.strip().upper() == "CT" else "zscore",
            stats.mean,
            stats.std,
            stats.percentile_00_5,
            stats.percentile_99_5,
        )
        for modality, stats in zip(modalities, fingerprint.intensity)
    )


def plan_experiment(
    fingerprint: DatasetFingerprint,
    patch_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    batch_size: int | None = None,
    transpose_forward: Sequence[int] | None = None,
    transpose_backward: Sequence[int] | None = None,
    modalities: Sequence[str] | None = None,
    max_voxels_per_batch: int = DEFAULT_MAX_VOXELS_PER_BATCH,
    base_features: int = BASE_FEATURES,
    max_features: int = MAX_FEATURES,
) -> Plan:
    """Plans a segmentation experiment from a dataset fingerprint (the rules of the module docstring).

    Args:
        fingerprint: the dataset's fingerprint.
        patch_size: initial patch size, network order; moved to the closest valid size.
        spacing: target spacing ``(K, J, I)`` in mm instead of rule 1.
        batch_size: batch size instead of rule 6.
        transpose_forward: data axes in network order; only together with ``transpose_backward``.
        transpose_backward: the inverse of ``transpose_forward``.
        modalities: per channel its modality; ``"CT"`` (any case) selects the ``ct`` normalisation.
        max_voxels_per_batch: voxel budget of a batch (rules 3 and 6).
        base_features: features of the first stage (the network's width, not derived from the data).
        max_features: the most features of a stage.

    Returns:
        The plan.

    Raises:
        SettingsError: a patch size or spacing that is not 3 positive numbers, a batch size that is not a
            positive integer, one transpose without the other or transposes that are not inverse permutations,
            modalities not one per channel, a bad voxel budget or feature counts.
    """
    check_positive(max_voxels_per_batch, "max_voxels_per_batch", integer=True)
    check_positive(base_features, "base_features", integer=True)
    check_positive(max_features, "max_features", integer=True)
    if max_features < base_features:
        raise SettingsError(f"max_features {max_features} is below base_features {base_features}")
    if batch_size is not None:
        check_positive(batch_size, "batch_size", integer=True)
    if patch_size is not None:
        patch_size = _triple(patch_size, "patch_size", integer=True)
    if (transpose_forward is None) != (transpose_backward is None):
        raise SettingsError("transpose_forward and transpose_backward can only be overridden together")
    target = target_spacing(fingerprint) if spacing is None else _triple(spacing, "spacing", integer=False)
    if transpose_forward is None:
        forward, backward = transposition(target)
    else:
        forward, backward = _transposes(transpose_forward, transpose_backward)
    network_spacing = _transposed(target, forward)
    if patch_size is None:
        shape = _transposed(median_shape(fingerprint, target), forward)
        patch_size = _capped_patch(shape, network_spacing, max_voxels_per_batch // MIN_BATCH_SIZE)
    topology = network_topology(patch_size, network_spacing)
    if batch_size is None:
        patch_voxels = math.prod(topology.patch_size)
        dataset_voxels = float(np.sum(np.prod(fingerprint.shapes * fingerprint.spacings / np.asarray(target), axis=1)))
        dataset_cap = _round_half_up(MAX_DATASET_FRACTION_PER_BATCH * dataset_voxels / patch_voxels)
        batch_size = max(MIN_BATCH_SIZE, min(max_voxels_per_batch // patch_voxels, dataset_cap))
    stages = len(topology.strides)
    return Plan(
        foreground_labels=fingerprint.foreground_labels,
        patch_size=topology.patch_size,
        spacing=target,
        batch_size=int(batch_size),
        transpose_forward=forward,
        transpose_backward=backward,
        num_channels=fingerprint.num_channels,
        num_classes=len(fingerprint.foreground_labels) + 1,
        n_stages=stages,
        n_conv_per_stage=(CONVS_PER_STAGE,) * stages,
        n_conv_per_stage_decoder=(CONVS_PER_STAGE,) * (stages - 1),
        features_per_stage=tuple(min(base_features * 2**stage, max_features) for stage in range(stages)),
        strides=topology.strides,
        kernel_sizes=topology.kernel_sizes,
        normalisation=_normalisation(fingerprint, modalities),
    )
