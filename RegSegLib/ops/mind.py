"""MIND-SSC: modality independent neighbourhood descriptor with self-similarity context.

Heinrich et al., "Towards realtime multimodal fusion for image-guided interventions using
self-similarities", MICCAI 2013. For every voxel ``x`` the descriptor compares small patches around
the six face neighbours ``x + dilation * n`` (``n`` in ``{+-e_i, +-e_j, +-e_k}``). The twelve pairs of
neighbours that are ``sqrt(2) * dilation`` apart (the edges of the octahedron they span) give twelve
patch distances ``D_p(x)`` (box-filtered squared differences over a ``(2 radius + 1)^3`` patch). With
the local variance estimate ``V(x)`` = mean of the distances (after subtracting their minimum, which
makes the descriptor invariant to a local intensity offset of the distances),
``MIND_p(x) = exp(-D_p(x) / V(x))``; the largest channel is 1 at every voxel.

This is the one implementation the affine and deformable engines and the losses share.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from RegSegLib.ops.filters import smooth_average

_NEIGHBOURS: tuple[tuple[int, int, int], ...] = (
    (1, 0, 0),
    (-1, 0, 0),
    (0, 1, 0),
    (0, -1, 0),
    (0, 0, 1),
    (0, 0, -1),
)
"""The six face neighbours as ``(k, j, i)`` offsets."""

MIND_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b)
    for a, b in itertools.combinations(range(6), 2)
    if sum((pa - pb) ** 2 for pa, pb in zip(_NEIGHBOURS[a], _NEIGHBOURS[b])) == 2
)
"""The twelve neighbour pairs (indices into the six neighbours) at squared distance 2."""


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor of a 3D image, twelve channels per input channel.

    Args:
        image: ``[B, C, K, J, I]`` float image; each channel gets its own descriptor channels.
        radius: patch radius in voxels (box filter of width ``2 radius + 1``).
        dilation: distance in voxels between the centre and the six neighbours.

    Returns:
        ``[B, 12 C, K, J, I]`` descriptor with values in ``(0, 1]``.

    Raises:
        ValueError: the input is not ``[B, C, K, J, I]``.
    """
    if image.ndim != 5:
        raise ValueError(f"mind_ssc expects a [B, C, K, J, I] image, got {tuple(image.shape)}")
    batch, channels, k, j, i = image.shape
    image = image.float().reshape(batch * channels, 1, k, j, i)
    pad = dilation
    padded = F.pad(image, [pad] * 6, mode="replicate")

    def shifted(index: int) -> torch.Tensor:
        dk, dj, di = (dilation * o + pad for o in _NEIGHBOURS[index])
        return padded[:, :, dk : dk + k, dj : dj + j, di : di + i]

    shifts = [shifted(n) for n in range(6)]
    distances = torch.cat([(shifts[a] - shifts[b]) ** 2 for a, b in MIND_PAIRS], dim=1)
    distances = smooth_average(distances, kernel=2 * radius + 1)
    distances = distances - distances.min(dim=1, keepdim=True).values
    variance = distances.mean(dim=1, keepdim=True)
    mean_variance = float(variance.mean())
    variance = variance.clamp(min=mean_variance * 1e-3 + 1e-12, max=mean_variance * 1e3 + 1e-12)
    features = torch.exp(-distances / variance)
    return features.reshape(batch, channels * len(MIND_PAIRS), k, j, i)
