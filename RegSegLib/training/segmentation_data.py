"""Training data of the segmentation networks: preprocessed cases, random patches and their augmentation.

Each case is preprocessed once (:mod:`RegSegLib.segmentation.preprocessing`: the plan's spacing, the
normalisation, the transpose) and kept in memory. A training item is one patch of the plan's size: with
probability ``foreground_oversampling`` around a random foreground voxel (nnU-Net's oversampling),
else anywhere, the patch kept inside the volume where it fits; read through a random rotation (up to 15 degrees about each axis, the first axis only when
the data are anisotropic) and scaling (0.85-1.25) in one resampling, mirrored along each axis with
probability 1/2, then brightness, contrast, gamma, noise and blur changed. Every draw comes from a
generator seeded by ``(seed, key)``, as for the registration pairs: a continued run sees the same patches.
Validation items are whole cases.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from RegSegLib.segmentation.pathfinders import Case
from RegSegLib.segmentation.preprocessing import network_image, network_labels
from RegSegLib.geometry import axis_angle_rotation
from RegSegLib.ops.filters import gaussian_smooth

MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.85, 1.25)


def preprocess_case(case: Case, plan: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A case's network image ``[C, D, H, W]`` and class indices ``[1, D, H, W]`` (transposed)."""
    from RegSegLib.io.checks import read_image, read_labels

    images = [read_image(str(path)) for path in case.images]
    image, grid = network_image(images, plan["spacing"], plan["transpose_forward"], plan["normalisation"])
    labels = read_labels(str(case.label), images[0], str(case.images[0]))
    return image, network_labels(labels, grid, plan["transpose_forward"], plan["foreground_labels"])


def _rotation(rng: np.random.Generator, anisotropic: bool) -> np.ndarray:
    """A random rotation ``[3, 3]`` of the patch axes (about the first axis only for anisotropic data): rotations
    about the three axes by angles uniform in +-:data:`MAX_ROTATION_DEG`, composed in axis order. The second angle
    turns the other way round (the draws the shipped models were trained with; the range is symmetric)."""
    limit = math.radians(MAX_ROTATION_DEG)
    angles = rng.uniform(-limit, limit, 3)
    if anisotropic:
        angles[1:] = 0.0
    matrix = np.eye(3)
    for axis, (angle, turn) in enumerate(zip(angles, (1.0, -1.0, 1.0))):
        matrix = matrix @ axis_angle_rotation(np.eye(3)[axis], turn * float(angle))
    return matrix


def inside_centre(centre: np.ndarray, shape: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """A patch centre moved so that the patch lies inside the volume along every axis where it fits (the
    volume's centre along an axis shorter than the patch), as nnU-Net's sampling keeps patches in the image."""
    moved = np.asarray(centre, dtype=np.float64).copy()
    for axis, (size, length) in enumerate(zip(shape, patch)):
        low, high = (length - 1) / 2.0, size - 1 - (length - 1) / 2.0
        moved[axis] = (size - 1) / 2.0 if high < low else min(max(moved[axis], low), high)
    return moved


def patch_grid(centre: np.ndarray, shape: Sequence[int], patch: Sequence[int], linear: np.ndarray) -> torch.Tensor:
    """``grid_sample`` coordinates ``[1, d, h, w, 3]`` that read a patch of size ``patch`` around voxel
    ``centre`` (D, H, W) of a volume of size ``shape`` through ``linear`` ``[3, 3]`` (patch axes to volume
    axes, in voxels)."""
    axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0 for n in patch]
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    points = offsets @ torch.from_numpy(linear).T + torch.from_numpy(np.asarray(centre, dtype=np.float64))
    size = torch.tensor([float(n) for n in shape], dtype=torch.float64)
    normalised = 2.0 * points / (size - 1).clamp(min=1) - 1.0
    return normalised.flip(-1)[None].float()


def augment_intensity(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """nnU-Net's intensity augmentations of a normalised patch ``[C, D, H, W]``: Gaussian noise (p 0.1),
    blur (p 0.2), brightness (x 0.75-1.25, p 0.15), contrast (p 0.15) and gamma (0.7-1.5, p 0.3)."""
    if rng.uniform() < 0.1:
        image = image + torch.from_numpy(rng.normal(0.0, math.sqrt(rng.uniform(0.0, 0.1)), image.shape)).float()
    if rng.uniform() < 0.2:
        image = gaussian_smooth(image[None], float(rng.uniform(0.5, 1.0)))[0]
    if rng.uniform() < 0.15:
        image = image * float(rng.uniform(0.75, 1.25))
    if rng.uniform() < 0.15:
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        image = (image - mean) * float(rng.uniform(0.75, 1.25)) + mean
    if rng.uniform() < 0.3:
        low = image.amin(dim=(1, 2, 3), keepdim=True)
        span = (image.amax(dim=(1, 2, 3), keepdim=True) - low).clamp(min=1e-8)
        image = ((image - low) / span).pow(float(rng.uniform(0.7, 1.5))) * span + low
    return image


class SegmentationPatches(Dataset):
    """Random training patches of preprocessed cases: item ``key`` is ``{"image": [C, d, h, w], "labels":
    [1, d, h, w]}`` of the plan's patch size.

    Args:
        cases: preprocessed ``(image, classes)`` of each training case.
        plan: the plan (``patch_size``, ``spacing``, ``transpose_forward``).
        patches: patches per epoch.
        foreground_oversampling: share of patches centred on foreground.
        augment: spatial and intensity augmentation.
        seed: the run's seed.
    """

    def __init__(self, cases: Sequence[tuple[torch.Tensor, torch.Tensor]], plan: dict[str, Any], patches: int, foreground_oversampling: float, augment: bool, seed: int) -> None:
        self.cases, self.plan, self.patches = list(cases), plan, patches
        self.oversampling, self.augment, self.seed = foreground_oversampling, augment, seed
        self.foreground = [torch.nonzero(classes[0] > 0).numpy() for _, classes in self.cases]
        spacing = np.asarray(plan["spacing"], dtype=np.float64)[list(plan["transpose_forward"])]
        self.anisotropic = bool(spacing.max() > 3.0 * spacing.min())

    def __len__(self) -> int:
        return self.patches

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(key)])
        index = int(rng.integers(len(self.cases)))
        image, classes = self.cases[index]
        foreground = self.foreground[index]
        shape = image.shape[1:]
        patch = [int(n) for n in self.plan["patch_size"]]
        if len(foreground) and rng.uniform() < self.oversampling:
            centre = foreground[int(rng.integers(len(foreground)))].astype(np.float64)
        else:
            centre = np.array([rng.uniform(0, n - 1) for n in shape])
        centre = inside_centre(centre, shape, patch)
        linear = np.eye(3)
        if self.augment:
            linear = _rotation(rng, self.anisotropic) * rng.uniform(*SCALE_RANGE)
        grid = patch_grid(centre, shape, patch, linear)
        read = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        labels = F.grid_sample(classes[None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)[0].long()
        if self.augment:
            for axis in range(3):
                if rng.uniform() < 0.5:
                    read, labels = read.flip(axis + 1), labels.flip(axis + 1)
            read = augment_intensity(read, rng)
        return {"image": read.contiguous(), "labels": labels.contiguous()}


class WholeCases(Dataset):
    """Validation items: whole preprocessed cases ``{"image": [C, D, H, W], "labels": [1, D, H, W]}``."""

    def __init__(self, cases: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        image, classes = self.cases[int(key) % len(self.cases)]
        return {"image": image, "labels": classes}
