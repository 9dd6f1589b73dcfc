"""Checks of images, masks and label maps as read from files: each problem is an
:class:`~RegSegLib.errors.InputError` naming the file, shared by the command line and the Slicer glue.
"""

from __future__ import annotations

import torch

from RegSegLib.errors import InputError
from RegSegLib.volume import Volume

MIN_VOXELS_PER_AXIS = 4
"""The fewest voxels along any axis of an image to register: the deformable engine average-pools the
image into 2-voxel cells and then pools those cells again for its coarse search, which needs at least
two cells (4 voxels) per axis; 3 voxels fail inside the engine."""

def select_channel(volume: Volume, path: str, channel: int | None, chooser: str) -> Volume:
    """Returns the single channel of a 3D image, or the chosen channel of a 4D one.

    Args:
        volume: as read, ``[C, K, J, I]``.
        path: the file it came from (for messages).
        channel: the channel asked for, or ``None``.
        chooser: how the caller lets a user pick a channel (e.g. an option name), named in messages.

    Raises:
        InputError: a 4D image without a channel choice, or a channel out of range.
    """
    count = volume.num_channels
    if channel is None:
        if count != 1:
            raise InputError(path, f"is a 4D image with {count} channels; a 3D volume is needed (pick one with {chooser} N)")
        return volume
    if not 0 <= channel < count:
        raise InputError(path, f"has {count} channel(s); {chooser} {channel} is out of range 0..{count - 1}")
    return volume.channel(channel)


def _check_3d(volume: Volume, path: str) -> None:
    if volume.num_channels != 1:
        raise InputError(path, f"has {volume.num_channels} channels; a 3D single-channel volume is needed")
    if min(volume.shape) < 2:
        raise InputError(path, f"is a 2D image of shape {volume.shape[::-1]} (I, J, K); a 3D volume is needed")


def _shape_text(shape_kji: tuple[int, int, int]) -> str:
    return " x ".join(str(n) for n in shape_kji[::-1])


def check_image(volume: Volume, path: str) -> Volume:
    """Checks an image for registration and returns it as float32.

    Raises:
        InputError: not single-channel 3D, fewer than :data:`MIN_VOXELS_PER_AXIS` voxels along an
            axis, NaN or infinite values, or constant.
    """
    _check_3d(volume, path)
    if min(volume.shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(
            path,
            f"is too small to register ({_shape_text(volume.shape)} voxels); RegSeg needs at least "
            f"{MIN_VOXELS_PER_AXIS} voxels along each axis",
        )
    data = volume.data.float()
    if not bool(torch.isfinite(data).all()):
        raise InputError(path, "contains NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise InputError(path, f"is constant (every voxel is {low:g}); nothing to register")
    return volume.with_data(data)


def check_same_grid(volume: Volume, path: str, reference: Volume, reference_path: str, what: str) -> None:
    """Checks that a mask or label map lies on its image's grid (:meth:`RegSegLib.volume.Volume.same_grid`).

    Raises:
        InputError: the shapes or geometries differ.
    """
    if volume.shape != reference.shape:
        raise InputError(
            path,
            f"{what} grid {volume.shape[::-1]} (I, J, K) differs from its image {reference_path} {reference.shape[::-1]}",
        )
    if not volume.same_grid(reference):
        distance = volume.grid.corner_distance_mm(reference.grid)
        raise InputError(
            path,
            f"{what} geometry (origin, spacing or directions) differs from its image {reference_path} "
            f"(corners {distance:.3g} mm apart)",
        )


def as_label_map(volume: Volume, path: str) -> Volume:
    """Checks a label map and returns it as ``int64`` ``[1, K, J, I]``.

    Raises:
        InputError: not 3D, NaN or infinite values, or float values that are not integers.
    """
    _check_3d(volume, path)
    data = volume.data
    if data.is_floating_point():
        if not bool(torch.isfinite(data).all()):
            raise InputError(path, "label map contains NaN or infinite values")
        if not bool((data == torch.round(data)).all()):
            raise InputError(path, "label map contains non-integer values; a label map needs integer labels")
    return volume.with_data(data.to(torch.int64), kind="labels")


def as_mask(volume: Volume, path: str) -> Volume:
    """Checks a mask (nonzero = inside) and returns it as ``uint8`` ``[1, K, J, I]``.

    Raises:
        InputError: not 3D, NaN values, or empty.
    """
    _check_3d(volume, path)
    data = volume.data
    if data.is_floating_point() and bool(torch.isnan(data).any()):
        raise InputError(path, "mask contains NaN values")
    inside = data != 0
    if not bool(inside.any()):
        raise InputError(path, "mask is empty (no nonzero voxel)")
    return volume.with_data(inside.to(torch.uint8), kind="mask")


def read_image(path: str, channel: int | None = None, chooser: str = "a channel") -> Volume:
    """Reads an image for registration: one channel of it (:func:`select_channel`), checked (:func:`check_image`)."""
    from RegSegLib.io.volumes import read_volume

    return check_image(select_channel(read_volume(path), path, channel, chooser), path)


def read_mask(path: str, image: Volume, image_path: str) -> Volume:
    """Reads a mask (:func:`as_mask`) that must lie on its image's grid."""
    from RegSegLib.io.volumes import read_volume

    mask = as_mask(read_volume(path), path)
    check_same_grid(mask, path, image, image_path, "mask")
    return mask


def read_labels(path: str, image: Volume | None = None, image_path: str | None = None) -> Volume:
    """Reads a label map (:func:`as_label_map`); with ``image`` it must lie on that image's grid."""
    from RegSegLib.io.volumes import read_volume

    labels = as_label_map(read_volume(path), path)
    if image is not None:
        check_same_grid(labels, path, image, image_path or "", "label map")
    return labels
