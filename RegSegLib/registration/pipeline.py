"""The registration pipeline behind ``regseg register``: affine stage, then an optional deformable stage.

As in ANTs and elastix, a deformable registration starts with an affine stage and refines it with a dense
displacement field; the result maps fixed points to moving points (``warped(x) = moving(T(x))``).

This module also holds the input checks the command line and the Slicer glue share: every problem is an
:class:`~RegSegLib.errors.InputError` naming the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Optional

import torch

from RegSegLib.errors import InputError
from RegSegLib.registration.common import Progress
from RegSegLib.transforms import (
    AffineTransform,
    CompositeTransform,
    DisplacementField,
    Transform,
    resample,
)
from RegSegLib.volume import Volume

METHODS = ("affine", "deformable")
FAMILIES = ("rigid", "similarity", "anisotropic", "affine")
AFFINE_SHARE_OF_DEFORMABLE = 0.25
"""Share of the progress bar given to the affine stage of a deformable registration."""
DEFORMABLE_SIMILARITY = {"mi": "mind"}
"""Metric of the deformable stage for a metric it does not have."""
GRID_TOLERANCE_MM = 1e-3
"""How far (mm) the geometry of a mask or label map may differ from its image's."""


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        transform: the whole fixed-to-moving mapping: an :class:`AffineTransform`, or a
            :class:`CompositeTransform` in ITK order (``[affine, field]``, preceded by the parts of an
            initial transform that held a displacement field).
        affine: the affine stage's result.
        field: the deformable stage's displacement field on the fixed grid, ``None`` for affine only.
        seconds: wall time per stage (``"affine"``, ``"deformable"``).
    """

    transform: Transform
    affine: AffineTransform
    field: Optional[DisplacementField]
    seconds: dict[str, float] = dataclass_field(default_factory=dict)


def split_initial(initial: Transform | None) -> tuple[AffineTransform | None, list]:
    """Splits an initial transform into an affine start and the parts that must be pre-composed.

    Args:
        initial: any fixed-to-moving transform, or ``None``.

    Returns:
        ``(affine_start, pre_parts)``: an affine (or purely affine composite) initial transform becomes
        ``(affine, [])``; one holding a displacement field becomes ``(None, parts)`` in ITK order.
    """
    if initial is None:
        return None, []
    simplified = initial.simplified() if isinstance(initial, CompositeTransform) else initial
    if isinstance(simplified, AffineTransform):
        return simplified, []
    parts = simplified.flattened() if isinstance(simplified, CompositeTransform) else [simplified]
    return None, parts


def register(
    fixed: Volume,
    moving: Volume,
    *,
    method: str = "affine",
    family: str = "affine",
    metric: str | None = None,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    initial: Transform | None = None,
    diffeomorphic: bool = False,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    affine_options: dict[str, Any] | None = None,
    deformable_options: dict[str, Any] | None = None,
) -> RegistrationResult:
    """Registers ``moving`` to ``fixed``.

    An affine ``initial`` transform (or a composite of affine parts) starts the affine stage. An initial
    transform holding a displacement field ``P`` is pre-composed: the moving image (and mask) is first
    resampled through ``P`` onto the fixed grid, that image is registered starting from identity, and the
    result is ``T = P o R`` (ITK order ``[*P, affine, field]``).

    Args:
        fixed: single-channel float image ``[1, K, J, I]`` (the reference grid of the result).
        moving: single-channel float image ``[1, K', J', I']``.
        method: ``"affine"`` or ``"deformable"`` (affine stage, then a dense displacement field).
        family: the affine stage's family: ``rigid``, ``similarity``, ``anisotropic`` or ``affine``.
        metric: similarity measure of both stages (``lncc``, ``ncc``, ``mse``, ``mi``, ``mind``); ``None`` uses
            each stage's default (``ncc`` affine, ``lncc`` deformable). The deformable stage has no mutual
            information; with ``mi`` it uses ``mind``, the other multi-modal measure.
        fixed_mask: optional ``[1, K, J, I]`` mask on the fixed grid.
        moving_mask: optional mask on the moving grid.
        initial: optional fixed-to-moving start transform.
        diffeomorphic: deformable stage as a stationary velocity field (scaling and squaring).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: progress reporter; the affine stage takes all of it for ``method="affine"`` and
            :data:`AFFINE_SHARE_OF_DEFORMABLE` of it otherwise.
        affine_options: further keywords of :func:`~RegSegLib.registration.affine.register_affine`
            (``levels``, ``iterations``, ...).
        deformable_options: further keywords of
            :func:`~RegSegLib.registration.deformable.register_deformable` (``preset``,
            ``regularisation``, ``spacing_mm``, ...).

    Returns:
        :class:`RegistrationResult`.

    Raises:
        ValueError: unknown method or family.
        RegSegError: device not available, job too large; ``Cancelled`` when the progress cancel event is set.
    """
    from RegSegLib.registration.affine import register_affine

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown transform family {family!r}; use one of {', '.join(FAMILIES)}")
    progress = progress or Progress()
    affine_start, pre_parts = split_initial(initial)
    if pre_parts:
        pre = CompositeTransform(pre_parts)
        moving = resample(moving, fixed, pre, mode="linear")
        if moving_mask is not None:
            moving_mask = resample(moving_mask, fixed, pre, mode="nearest")
    affine_share = 1.0 if method == "affine" else AFFINE_SHARE_OF_DEFORMABLE
    metric_options = {} if metric is None else {"metric": metric}
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    affine = register_affine(
        fixed,
        moving,
        family=family,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        initial=affine_start,
        device=device,
        progress=progress.sub(0.0, affine_share),
        **({"init": "identity"} if pre_parts else {}),
        **metric_options,
        **(affine_options or {}),
    )
    seconds["affine"] = time.perf_counter() - start

    displacement = None
    if method == "deformable":
        from RegSegLib.registration.deformable import register_deformable

        start = time.perf_counter()
        displacement = register_deformable(
            fixed,
            moving,
            initial=affine,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            diffeomorphic=diffeomorphic,
            device=device,
            progress=progress.sub(affine_share, 1.0 - affine_share),
            **({} if metric is None else {"similarity": DEFORMABLE_SIMILARITY.get(metric, metric)}),
            **(deformable_options or {}),
        )
        seconds["deformable"] = time.perf_counter() - start

    parts = [*pre_parts, affine] + ([displacement] if displacement is not None else [])
    transform: Transform = affine if len(parts) == 1 else CompositeTransform(parts)
    progress.update(1.0, "registration done")
    return RegistrationResult(transform=transform, affine=affine, field=displacement, seconds=seconds)


def select_channel(volume: Volume, path: str, channel: int | None, option: str) -> Volume:
    """Returns the single channel of a 3D image, or the chosen channel of a 4D one.

    Args:
        volume: as read, ``[C, K, J, I]``.
        path: the file it came from (for messages).
        channel: the channel asked for, or ``None``.
        option: the command-line option that picks a channel (for the message).

    Raises:
        InputError: a 4D image without a channel choice, or a channel out of range.
    """
    count = volume.num_channels
    if channel is None:
        if count != 1:
            raise InputError(path, f"is a 4D image with {count} channels; a 3D volume is needed (pick one with {option} N)")
        return volume
    if not 0 <= channel < count:
        raise InputError(path, f"has {count} channel(s); {option} {channel} is out of range 0..{count - 1}")
    return volume.channel(channel)


def _check_3d(volume: Volume, path: str) -> None:
    if volume.num_channels != 1:
        raise InputError(path, f"has {volume.num_channels} channels; a 3D single-channel volume is needed")
    if min(volume.shape) < 2:
        raise InputError(path, f"is a 2D image of shape {volume.shape[::-1]} (I, J, K); a 3D volume is needed")


def check_image(volume: Volume, path: str) -> Volume:
    """Checks an image for registration and returns it as float32.

    Raises:
        InputError: not single-channel 3D, NaN or infinite values, or constant.
    """
    _check_3d(volume, path)
    data = volume.data.float()
    if not bool(torch.isfinite(data).all()):
        raise InputError(path, "contains NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise InputError(path, f"is constant (every voxel is {low:g}); nothing to register")
    return volume.with_data(data)


def check_same_grid(volume: Volume, path: str, reference: Volume, reference_path: str, what: str) -> None:
    """Checks that a mask or label map lies on its image's grid (within :data:`GRID_TOLERANCE_MM`).

    Raises:
        InputError: the shapes or geometries differ.
    """
    if volume.shape != reference.shape:
        raise InputError(
            path,
            f"{what} grid {volume.shape[::-1]} (I, J, K) differs from its image {reference_path} {reference.shape[::-1]}",
        )
    if not volume.same_grid(reference, tol=GRID_TOLERANCE_MM):
        raise InputError(path, f"{what} geometry (origin, spacing or directions) differs from its image {reference_path}")


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
    return volume.with_data(data.to(torch.int64))


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
    return volume.with_data(inside.to(torch.uint8))
