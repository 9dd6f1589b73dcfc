"""What a segmentation network sees, and how its output returns to the image: one implementation for
training and inference.

Forward: every channel is resampled in physical space onto one grid, the first channel's grid at the
plan's spacing (same directions and extent; a second sequence with another field of view or orientation is
read where it lies in the patient, never resized voxel-wise); each channel is normalised (per-image
z-score, or CT's global clipping and z-score); the axes are transposed so the coarsest comes first.
Backward: class probabilities are transposed back, resampled in physical space onto the first image's own
grid and turned into a label map.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from RegSegLib.geometry import Grid
from RegSegLib.transforms import resample
from RegSegLib.volume import Volume


def working_grid(reference: Grid, spacing_kji: Sequence[float]) -> Grid:
    """The grid of the first image at the plan's spacing (K, J, I order; same extent and directions)."""
    return reference.resampled([float(s) for s in spacing_kji][::-1])


def normalise(image: torch.Tensor, scheme: dict[str, Any]) -> torch.Tensor:
    """One channel ``[D, H, W]`` normalised by a plan's scheme: ``{"scheme": "zscore"}`` (the image's own
    mean and standard deviation) or ``{"scheme": "ct", "low", "high", "mean", "std"}`` (clipped to the
    dataset's foreground percentiles, then the dataset's foreground mean and deviation)."""
    image = image.float()
    if scheme["scheme"] == "ct":
        clipped = image.clamp(float(scheme["low"]), float(scheme["high"]))
        return (clipped - float(scheme["mean"])) / max(float(scheme["std"]), 1e-8)
    return (image - image.mean()) / image.std().clamp(min=1e-8)


def network_image(images: Sequence[Volume], spacing_kji: Sequence[float], transpose_forward: Sequence[int], schemes: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, Grid]:
    """The network's input of one case.

    Args:
        images: one volume per channel (the first defines the grid; its first channel is used).
        spacing_kji: the plan's spacing.
        transpose_forward: the plan's axis order.
        schemes: one normalisation scheme per channel (:func:`normalise`).

    Returns:
        ``([C, D, H, W]`` float32 in the transposed order, the working grid before the transpose).
    """
    if len(images) != len(schemes):
        raise ValueError(f"the model takes {len(schemes)} image channel(s), {len(images)} given")
    grid = working_grid(images[0].grid, spacing_kji)
    channels = []
    for volume, scheme in zip(images, schemes):
        first = Volume(volume.data[:1].float(), volume.ijk_to_ras)
        channels.append(normalise(resample(first, grid, mode="linear").data[0], scheme))
    data = torch.stack(channels)
    return data.permute(0, *(1 + int(axis) for axis in transpose_forward)).contiguous(), grid


def network_labels(labels: Volume, grid: Grid, transpose_forward: Sequence[int], foreground_labels: Sequence[int]) -> torch.Tensor:
    """A label map as class indices on the working grid ``[1, D, H, W]`` int64 (transposed): label
    ``foreground_labels[c]`` becomes class ``c + 1``, anything else background."""
    values = resample(labels, grid, mode="nearest").data[:1].long()
    classes = torch.zeros_like(values)
    for index, label in enumerate(foreground_labels):
        classes[values == int(label)] = index + 1
    return classes.permute(0, *(1 + int(axis) for axis in transpose_forward)).contiguous()


def label_map(probabilities: torch.Tensor, grid: Grid, reference: Volume, transpose_backward: Sequence[int], foreground_labels: Sequence[int]) -> Volume:
    """The label map of class probabilities on the first image's own grid.

    Args:
        probabilities: ``[classes, D, H, W]`` in the transposed order, on the working ``grid``.
        grid: the working grid (:func:`network_image`).
        reference: the first input image (its grid is the output's).
        transpose_backward: the plan's inverse axis order.
        foreground_labels: label value of each foreground class.

    Returns:
        An integer label map (``uint8``, or ``int16`` for labels above 255) on ``reference``'s grid.
    """
    restored = probabilities.permute(0, *(1 + int(axis) for axis in transpose_backward)).float()
    on_image = resample(Volume(restored, grid.ijk_to_ras), reference, mode="linear").data
    classes = on_image.argmax(dim=0, keepdim=True)
    values = torch.tensor([0, *[int(label) for label in foreground_labels]])
    dtype = torch.uint8 if int(values.max()) <= 255 else torch.int16
    return Volume(values[classes].to(dtype), reference.ijk_to_ras.copy(), kind="labels")
