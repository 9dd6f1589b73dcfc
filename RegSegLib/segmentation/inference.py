"""Segmentation inference (nnU-Net's): a sliding window with Gaussian weighting (MONAI's inferer) over the
preprocessed image, optional mirroring test-time augmentation, class probabilities back on the image's
own grid in physical space, optional largest-connected-component post-processing per class.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np
import torch

from RegSegLib.segmentation.preprocessing import label_map, network_image
from RegSegLib.volume import Volume

OVERLAP = 0.5
"""Overlap of neighbouring windows (nnU-Net's step size 0.5)."""


def mirror_axes(count: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes ``(2, 3, 4)`` to flip, the identity first (8 with ``count=3``)."""
    axes = (2, 3, 4)[:count]
    return [combo for size in range(len(axes) + 1) for combo in itertools.combinations(axes, size)]


@torch.no_grad()
def predict_probabilities(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch_size: Sequence[int],
    mirror: bool = True,
    report: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Class probabilities ``[classes, D, H, W]`` of a preprocessed image ``[C, D, H, W]``.

    Args:
        network: the trained network in evaluation mode, ``[B, C, d, h, w] -> logits [B, classes, d, h, w]``.
        image: the network image (:func:`~RegSegLib.segmentation.preprocessing.network_image`).
        patch_size: the plan's patch size (the window).
        mirror: average the softmax over the 8 mirrorings of the axes.
        report: called with the fraction done after each mirroring.
    """
    from monai.inferers import sliding_window_inference

    flips = mirror_axes(3) if mirror else [()]
    total = None
    batch = image[None]
    for index, axes in enumerate(flips):
        flipped = batch.flip(axes) if axes else batch
        logits = sliding_window_inference(flipped, list(patch_size), 2, network, overlap=OVERLAP, mode="gaussian")
        probabilities = torch.softmax(logits.float(), dim=1)
        probabilities = probabilities.flip(axes) if axes else probabilities
        total = probabilities if total is None else total + probabilities
        if report is not None:
            report((index + 1) / len(flips))
    return (total / len(flips))[0]


def keep_largest_component(labels: Volume, foreground_labels: Sequence[int]) -> Volume:
    """Each foreground label reduced to its largest 26-connected component (nnU-Net's post-processing)."""
    from scipy import ndimage

    data = labels.data[0].numpy().copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for label in foreground_labels:
        components, count = ndimage.label(data == int(label), structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            data[(components > 0) & (components != int(np.argmax(sizes)) + 1)] = 0
    return labels.with_data(torch.from_numpy(data)[None])


def segment(
    network: Callable[[torch.Tensor], torch.Tensor],
    plan: dict[str, Any],
    images: Sequence[Volume],
    mirror: bool = True,
    largest_component: bool = False,
    device: torch.device | str = "cpu",
    report: Callable[[float], None] | None = None,
) -> Volume:
    """The label map of one case on its first image's grid.

    Args:
        network: the network (on ``device``, evaluation mode).
        plan: the model's plan (spacing, transposes, normalisation, patch size, foreground labels).
        images: one volume per channel; the others are resampled onto the first in physical space.
        mirror: mirroring test-time augmentation.
        largest_component: keep each label's largest connected component.
        device: where the network runs.
        report: progress (fraction done).
    """
    image, grid = network_image(images, plan["spacing"], plan["transpose_forward"], plan["normalisation"])
    probabilities = predict_probabilities(network, image.to(device), plan["patch_size"], mirror, report).cpu()
    labels = label_map(probabilities, grid, images[0], plan["transpose_backward"], plan["foreground_labels"])
    return keep_largest_component(labels, plan["foreground_labels"]) if largest_component else labels
