"""Training data of the registration networks: the registration layout, patient-level splits, and
synthetic pairs made on the fly.

Layout (seed 000), one folder per cohort::

    ROOT/images/NAME.nii.gz         (or .nrrd, .mha, .nii)
    ROOT/masks/seg_NAME.nii.gz      (optional label map of the image)

A *synthetic pair* is made from one volume: two independent strong intensity augmentations (or, with
probability ``label_synthesis``, two images synthesised from its label map with random intensities per
label), and a random transform ``T`` of the family whose inverse makes the moving image, so that the
network must predict ``T`` (the fixed-to-moving mapping of the convention). Every random draw comes from a
generator seeded by ``(seed, epoch, pair index)``: an epoch is the same whatever the worker count, and a
continued run sees the same pairs as an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from RegSegLib.geometry import axis_angle_rotation
from RegSegLib.networks.affine import half_span
from RegSegLib.networks.inputs import network_grid, network_input, network_spacing, prepared_for
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.training.config import BaseConfig, DataConfig, TrainingError
from RegSegLib.transforms import AffineTransform, resample
from RegSegLib.volume import Volume

IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Sample:
    """One volume of a cohort: its patient, image file and optional label map."""

    cohort: str
    patient: str
    image: Path
    labels: Optional[Path]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def cohort_roots(data: DataConfig) -> list[tuple[str, Path]]:
    """(cohort name, folder) of every dataset folder: ``data.roots`` and the rows of ``data.cohorts_tsv``."""
    roots = [(Path(root).name, Path(root)) for root in data.roots]
    if data.cohorts_tsv:
        tsv = Path(data.cohorts_tsv)
        with tsv.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or {"cohort", "path"} - set(rows[0]):
            raise ValueError(f"{tsv}: a cohort list needs the columns 'cohort' and 'path'")
        roots += [(row["cohort"], (tsv.parent / row["path"]).resolve()) for row in rows]
    return roots


def find_samples(data: DataConfig) -> list[Sample]:
    """Every image of the dataset folders with its patient (``data.patient_pattern``) and label map.

    Raises:
        ValueError: a folder without ``images/``, an image name the pattern does not match, or no images.
    """
    pattern = re.compile(data.patient_pattern)
    samples = []
    for cohort, root in cohort_roots(data):
        folder = root / "images"
        if not folder.is_dir():
            raise ValueError(f"{root}: not a dataset folder in the registration layout (no images/ folder)")
        for image in sorted(path for path in folder.iterdir() if path.name.endswith(IMAGE_SUFFIXES)):
            stem = _stem(image)
            match = pattern.search(stem)
            if match is None:
                raise ValueError(f"{image}: the patient pattern {data.patient_pattern!r} does not match the file name")
            patient = f"{cohort}/{match.group(1) if match.groups() else match.group(0)}"
            labels = [root / "masks" / f"seg_{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
            samples.append(Sample(cohort, patient, image, next((p for p in labels if p.exists()), None)))
    if not samples:
        raise ValueError(f"no images in {', '.join(str(root) for _, root in cohort_roots(data))}")
    return samples


def split_patients(patients: Sequence[str], data: DataConfig, seed: int) -> dict[str, list[str]]:
    """Patient-level split: ``test`` (``test_fraction``, never trained on), then ``n_folds`` folds of the
    rest of which fold ``fold`` validates. With one fold, training and validation share the patients (the
    validation pairs are still drawn separately).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, sorted.
    """
    order = sorted(set(patients))
    random.Random(seed).shuffle(order)
    n_test = int(round(data.test_fraction * len(order)))
    test, rest = order[:n_test], order[n_test:]
    if not rest:
        raise ValueError(f"no patients left for training after holding out {n_test} of {len(order)} for the test split")
    if data.n_folds == 1:
        return {"train": sorted(rest), "validation": sorted(rest), "test": sorted(test)}
    if data.n_folds > len(rest):
        raise ValueError(f"{data.n_folds} folds need at least {data.n_folds} patients; {len(rest)} are left after the test split")
    folds = [rest[index :: data.n_folds] for index in range(data.n_folds)]
    validation = folds[data.fold]
    train = [patient for patient in rest if patient not in validation]
    return {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}


def resolve_split(config: BaseConfig, patients: Sequence[str]) -> BaseConfig:
    """``config`` with the split of the data's ``patients`` (one entry per sample or case) filled in, kept
    when already given (e.g. by a continued run)."""
    known = set(patients)
    data = config.data
    if data.train_patients:
        missing = sorted(set(data.train_patients + data.validation_patients + data.test_patients) - known)
        if missing:
            raise TrainingError(f"the stored split names patients that are not in the data: {', '.join(missing[:5])}")
        return config
    split = split_patients(sorted(known), data, config.seed)
    data.train_patients, data.validation_patients, data.test_patients = split["train"], split["validation"], split["test"]
    return config


def epoch_batches(pairs: int, batch_size: int, rank: int, world_size: int) -> int:
    """Batches of one epoch on process ``rank`` of ``world_size``; raises :class:`TrainingError` when an
    epoch would make no weight update there."""
    batches = -(-len(range(rank, pairs, world_size)) // batch_size)
    if batches == 0:
        raise TrainingError(
            f"an epoch would make no update: {pairs} pairs per epoch shared by {world_size} processes leave none "
            f"for process {rank}; raise data.pairs_per_epoch"
        )
    return batches


def random_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """A random rotation ``[3, 3]``: uniform over the whole sphere at 180 degrees (a uniform unit quaternion),
    else a uniform axis and an angle uniform in ``[0, max_angle_deg]``."""
    if max_angle_deg >= 180.0:
        quaternion = rng.normal(size=4)
        w, x, y, z = quaternion / np.linalg.norm(quaternion)
        return np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])
    return axis_angle_rotation(rng.normal(size=3), math.radians(rng.uniform(0.0, max_angle_deg)))


@dataclass(frozen=True)
class TransformTarget:
    """A sampled transform ``T(p) = t + R S H p`` in the network frame (mm, relative to the grid centre)."""

    rotation: np.ndarray
    translation_mm: np.ndarray
    scale: np.ndarray
    shear: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """``[4, 4]`` network-frame matrix in mm."""
        out = np.eye(4)
        out[:3, :3] = self.rotation @ np.diag(self.scale) @ self.shear
        out[:3, 3] = self.translation_mm
        return out

    def in_voxels(self, spacing_mm: float) -> np.ndarray:
        """``[4, 4]`` network-frame matrix in network voxels of ``spacing_mm``."""
        out = self.matrix
        out[:3, 3] /= spacing_mm
        return out


def largest_angle(data: DataConfig, epoch: int) -> float:
    """The largest rotation angle (degrees) of an epoch's pairs: ``max_rotation_deg``, or during the
    rotation curriculum the linear ramp from ``curriculum_start_deg``."""
    if data.rotation_curriculum_epochs == 0 or epoch >= data.rotation_curriculum_epochs:
        return data.max_rotation_deg
    start = min(data.curriculum_start_deg, data.max_rotation_deg)
    return start + (data.max_rotation_deg - start) * epoch / data.rotation_curriculum_epochs


def random_transform(
    rng: np.random.Generator, family: str, data: DataConfig, half_span_mm: np.ndarray, epoch: int | None = None
) -> TransformTarget:
    """A random transform of ``family`` within the ranges of ``data`` (translations as fractions of the
    grid's half span ``half_span_mm`` ``[3]``; rotations up to :func:`largest_angle` of ``epoch``, or
    ``max_rotation_deg`` when it is ``None``)."""
    rotation = random_rotation(rng, data.max_rotation_deg if epoch is None else largest_angle(data, epoch))
    translation = rng.uniform(-data.max_translation, data.max_translation, size=3) * np.asarray(half_span_mm)
    log_range = math.log1p(data.max_scale)
    if family == "rigid":
        scale = np.ones(3)
    elif family == "similarity":
        scale = np.full(3, math.exp(rng.uniform(-log_range, log_range)))
    else:
        scale = np.exp(rng.uniform(-log_range, log_range, size=3))
    shear = np.eye(3)
    if family == "affine":
        shear[0, 1], shear[0, 2], shear[1, 2] = rng.uniform(-data.max_shear, data.max_shear, size=3)
    return TransformTarget(rotation, translation, scale, shear)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int) -> torch.Tensor:
    """Smooth random field ``[1, 1, D, H, W]``: normal values on a ``cells``^3 lattice, upsampled."""
    coarse = torch.from_numpy(rng.normal(size=(1, 1, cells, cells, cells))).float()
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)


def augment_intensity(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A strong intensity augmentation of a [0, 1] image ``[1, D, H, W]``: gamma, multiplicative bias
    field, contrast inversion (one in five), Gaussian noise, rescaled to [0, 1]; zero stays zero."""
    inside = image > 0
    out = image.clamp(0, 1) ** math.exp(rng.uniform(-0.5, 0.5))
    out = out * torch.exp(0.3 * _smooth_noise(rng, image.shape[1:], 4)[0])
    if rng.uniform() < 0.2:
        out = torch.where(inside, out.max() - out, out)
    out = out + float(rng.uniform(0.0, 0.05)) * torch.from_numpy(rng.normal(size=tuple(image.shape))).float()
    out = torch.where(inside, out, torch.zeros_like(out))
    return robust_scale(out[None])[0]


def crop_field_of_view(image: torch.Tensor, rng: np.random.Generator, probability: float) -> torch.Tensor:
    """With ``probability``, blanks a slab of 10-40 % of the image from one side along one axis
    (``[1, D, H, W]``): a narrower field of view, as when one scan covers less of the body than the other."""
    if rng.uniform() >= probability:
        return image
    axis = int(rng.integers(3))
    size = image.shape[1 + axis]
    width = int(round(rng.uniform(0.1, 0.4) * size))
    index = [slice(None)] * 4
    index[1 + axis] = slice(0, width) if rng.uniform() < 0.5 else slice(size - width, size)
    out = image.clone()
    out[tuple(index)] = 0.0
    return out


def synthesise_from_labels(labels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """An image from a label map ``[1, D, H, W]`` (SynthMorph style): a random mean and spread per label,
    the background (0) dark, a light blur; [0, 1]."""
    values = labels.long()
    count = int(values.max()) + 1
    means = torch.from_numpy(rng.uniform(0.0, 1.0, size=count)).float()
    spreads = torch.from_numpy(rng.uniform(0.0, 0.1, size=count)).float()
    means[0], spreads[0] = 0.0, 0.0
    noise = torch.from_numpy(rng.normal(size=tuple(values.shape))).float()
    image = means[values] + spreads[values] * noise
    kernel = torch.tensor([0.25, 0.5, 0.25])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 3
        padding = [0, 0, 0]
        padding[axis] = 1
        image = F.conv3d(image[None], kernel.reshape(shape), padding=tuple(padding))[0]
    return robust_scale(image[None])[0]


class PairSampler(Sampler[int]):
    """Keys ``epoch x size + index`` of one epoch's pairs, this process's share under DDP.

    Lightning calls :meth:`set_epoch` at every epoch (and on resume), so the keys, and with them the pairs,
    depend only on the epoch. :meth:`resume` makes the next pass over the epoch skip the keys already used.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, fixed_epoch: int | None = None) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size
        self.epoch = 0 if fixed_epoch is None else fixed_epoch
        self.fixed = fixed_epoch is not None
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed and epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def resume(self, epoch: int, used: int) -> None:
        """The next pass yields epoch ``epoch`` without its first ``used`` keys (of this process)."""
        self.epoch, self.skip = epoch, used

    def __iter__(self) -> Iterator[int]:
        keys = range(self.epoch * self.size + self.rank, (self.epoch + 1) * self.size, self.world_size)[self.skip :]
        self.skip = 0
        return iter(keys)

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class ResumableLoader(DataLoader):
    """A data loader over a :class:`PairSampler` that Lightning can resume in the middle of an epoch.

    Its state (saved in every checkpoint) is the epoch and the batches training has completed in it
    (:attr:`completed`, kept up to date by :class:`~RegSegLib.training.callbacks.LoaderPosition`); loading
    it makes the next pass start at the first batch not yet trained on, so a continued run sees the
    same batches as an uninterrupted one.
    """

    completed = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "completed": self.completed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.completed = state["completed"]
        self.sampler.resume(state["epoch"], state["completed"] * self.batch_size)


class SyntheticPairs(Dataset):
    """Synthetic pairs of a set of volumes: item ``key`` (from :class:`PairSampler`) is a dict with
    ``moving`` and ``fixed`` ``[1, D, H, W]``, the target ``matrix`` ``[4, 4]`` (network frame, network
    voxels), ``rotation`` ``[3, 3]``, ``translation`` ``[3]`` (fraction of the half span), ``scale`` ``[3]``,
    ``shear`` ``[3, 3]``, and the network ``spacing`` in mm (scalar).

    Args:
        samples: the volumes.
        data: sizes and ranges.
        family: transform family of the targets.
        seed: the run's seed; ``(seed, key)`` seeds each pair.
        preload: read every volume now (else on first use, in each worker).
    """

    def __init__(self, samples: Sequence[Sample], data: DataConfig, family: str, seed: int, preload: bool = False) -> None:
        self.samples, self.data, self.family, self.seed = list(samples), data, family, seed
        self.span = half_span(data.shape).float()
        self._cache: dict[int, tuple[Volume, Optional[Volume]]] = {}
        if preload:
            for index in range(len(self.samples)):
                self._volume(index)

    def __len__(self) -> int:
        return self.data.pairs_per_epoch

    def _volume(self, index: int) -> tuple[Volume, Optional[Volume]]:
        """The image (:func:`~RegSegLib.networks.inputs.prepared_for` the network spacing) and label map of
        sample ``index``, cached."""
        if index not in self._cache:
            from RegSegLib.io.checks import read_image, read_labels

            sample = self.samples[index]
            image = read_image(str(sample.image))
            image = prepared_for(image, network_spacing([image.grid], self.data.shape, self.data.spacing_mm))
            labels = read_labels(str(sample.labels)) if sample.labels is not None else None
            self._cache[index] = (image, labels)
        return self._cache[index]

    def _draw(self, rng: np.random.Generator) -> int:
        """A volume index: a cohort drawn uniformly, then one of its volumes (``data.balance_cohorts``), or
        any volume uniformly."""
        if not self.data.balance_cohorts:
            return int(rng.integers(len(self.samples)))
        cohorts = sorted({sample.cohort for sample in self.samples})
        cohort = cohorts[int(rng.integers(len(cohorts)))]
        members = [index for index, sample in enumerate(self.samples) if sample.cohort == cohort]
        return members[int(rng.integers(len(members)))]

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(key)])
        image, labels = self._volume(self._draw(rng))
        spacing = network_spacing([image.grid], self.data.shape, self.data.spacing_mm)
        target = random_transform(rng, self.family, self.data, spacing * self.span.double().numpy(), int(key) // len(self))
        centre = image.grid.centre_ras
        grid = network_grid(centre, self.data.shape, spacing)
        to_volume = np.eye(4)
        to_volume[:3, 3] = centre
        from_volume = np.linalg.inv(to_volume)
        inverse = AffineTransform(to_volume @ np.linalg.inv(target.matrix) @ from_volume)
        if labels is not None and rng.uniform() < self.data.label_synthesis:
            fixed_labels = resample(labels, grid, None, mode="nearest").data[:1]
            moving_labels = resample(labels, grid, inverse, mode="nearest").data[:1]
            fixed = synthesise_from_labels(fixed_labels, rng)
            moving = synthesise_from_labels(moving_labels, rng)
        else:
            fixed = augment_intensity(network_input(image, grid), rng)
            moving = augment_intensity(network_input(image, grid, inverse), rng)
        return {
            "moving": crop_field_of_view(moving, rng, self.data.crop_probability),
            "fixed": crop_field_of_view(fixed, rng, self.data.crop_probability),
            "matrix": torch.from_numpy(target.in_voxels(spacing)).float(),
            "rotation": torch.from_numpy(target.rotation).float(),
            "translation": torch.from_numpy(target.translation_mm / spacing).float() / self.span,
            "scale": torch.from_numpy(target.scale).float(),
            "shear": torch.from_numpy(target.shear).float(),
            "spacing": torch.tensor(spacing, dtype=torch.float32),
        }
