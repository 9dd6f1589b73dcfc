"""What the dense (deformable) engines share: descriptors, the stage loss and Adam's per-loss ``eps``."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from RegSegLib.losses import descriptor_distance, make_loss
from RegSegLib.ops.mind import mind_ssc
from RegSegLib.registration.settings import DeformableSettings
from RegSegLib.runtime import Progress

ADAM_EPS: dict[str, float] = {"mind": 0.2, "mse": 0.2, "lncc": 0.3, "ncc": 0.3}
"""Adam's ``eps`` per loss, in per-cell gradient units (see :class:`~RegSegLib.registration.optim.Adam`).
Near the optimum, where gradients are far below ``eps``, Adam is gradient descent with step
``lr / eps``; with ``eps=0.05`` that step is unstable on sharp full-resolution MIND features and an
identical pair drifts by half a voxel, with ``0.2`` it stays put. The correlation losses need a little
more: their gradient is not zero on an aligned pair (the variance guard of local NCC rewards contrast
in flat regions)."""
ADAM_FLOOR: float = 0.05
"""Adam's step decays (cosine) to this fraction of the learning rate: it damps the oscillation around the optimum."""

Engine = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], DeformableSettings, Progress], torch.Tensor]
"""A deformable engine ``(fixed_image, moving_image, weight, settings, progress) -> field``.

``fixed_image`` and ``moving_image`` are ``[1, 1, K, J, I]`` on the working grid, scaled to [0, 1], the
moving one pre-warped by the affine stage; ``weight`` is the mask weight ``[1, 1, K, J, I]`` or ``None``;
``progress`` spans the whole engine. The result is the voxel displacement ``[1, 3, K, J, I]`` of the
working grid (the integrated velocity when ``settings.diffeomorphic``)."""

StageLoss = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
"""``loss(fixed, warped, weight)`` on ``[1, C, K, J, I]`` data (MIND descriptors for ``mind``)."""


def features(image: torch.Tensor, settings: DeformableSettings) -> torch.Tensor:
    """MIND-SSC descriptors ``[1, 12, K, J, I]`` of a working-grid image with the settings' radius and dilation."""
    return mind_ssc(image, radius=settings.mind_radius, dilation=settings.mind_dilation)


def stage_data(fixed: torch.Tensor, moving: torch.Tensor, settings: DeformableSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """What an optimisation stage compares: the images, or their MIND-SSC descriptors for ``mind``."""
    if settings.similarity == "mind":
        return features(fixed, settings), features(moving, settings)
    return fixed, moving


def stage_loss(similarity: str, window: int) -> StageLoss:
    """The loss of one stage (``window``: the local NCC window in that stage's voxels).

    ``mind`` and ``mse`` compare descriptors (or intensities) by their squared distance
    (:func:`~RegSegLib.losses.descriptor_distance`); ``lncc`` and ``ncc`` are the registry's losses.
    """
    if similarity in ("mind", "mse"):
        return descriptor_distance
    if similarity == "lncc":
        return make_loss("lncc", window=window)
    return make_loss(similarity)
