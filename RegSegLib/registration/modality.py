"""``--metric auto``: the similarity measure chosen for a pair of images.

The measure has to work whether or not the two images share a modality, and nothing in a NIfTI or
NRRD header says which modality an image is. Intensity statistics do not tell either: on the data in
``../shared/data`` the distance between the robustly scaled intensity distributions of two T1 brains
or two prostate MRs is as large as that of a prostate MR and its ultrasound. So ``auto`` uses MIND-SSC
(a modality-independent descriptor, the measure of ConvexAdam and of the Learn2Reg winners) for both
stages; the benchmark (bench/results, suites 1-5) shows it costs same-modality pairs nothing.
"""

from __future__ import annotations

from RegSegLib.volume import Volume

AUTO_CHOICE = "mind"
"""The measure ``auto`` chooses."""


def choose_metric(fixed: Volume, moving: Volume) -> tuple[str, str]:
    """The similarity measure for registering ``moving`` to ``fixed``.

    Args:
        fixed: the fixed image.
        moving: the moving image.

    Returns:
        ``(metric, reason)``: a metric of :data:`~RegSegLib.registration.settings.METRICS` and a short
        sentence for ``metrics.json`` saying why.
    """
    del fixed, moving
    return AUTO_CHOICE, "auto: MIND-SSC works within and across modalities"
