"""The names every layer shares, torch-free: transform families, similarity metrics, devices.

Lower layers (transforms, losses) and the settings of the methods read them from here, so that the
command line, the Slicer request and the batch scripts offer exactly what the engines accept.
"""

from __future__ import annotations

FAMILIES: dict[str, int] = {"rigid": 6, "similarity": 7, "anisotropic": 9, "affine": 12}
"""Affine transform family -> number of parameters (layout in :mod:`RegSegLib.transforms.affine_params`)."""

METRICS: dict[str, tuple[str, bool]] = {
    "lncc": ("LNCC", True),
    "ncc": ("NCC", True),
    "mse": ("MSE", False),
    "mi": ("MI", True),
    "mind": ("MIND distance", False),
    "dice": ("Dice", True),
}
"""Similarity metric -> (report name, whether a larger reported value is better)."""

IMAGE_METRICS: tuple[str, ...] = tuple(name for name in METRICS if name != "dice")
"""The metrics that compare intensity images (``dice`` compares label maps)."""

MULTI_MODAL_METRICS: tuple[str, ...] = ("mi", "mind")
"""Metrics for images whose intensities need not correspond (different modalities or contrasts)."""

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Device choices: ``auto`` is CUDA when available, else CPU."""


AFFINE_ARCHITECTURES: tuple[str, ...] = ("affine_params", "affine_matrix")
"""Affine network architectures (the training configs' model group): parameter regression, keypoint matrix
estimation."""
SEGMENTATION_ARCHITECTURES: tuple[str, ...] = ("plain_conv_unet",)
"""Segmentation network architectures (the model group): nnU-Net's PlainConvUNet."""
