"""Generic image operations below the methods: filters, intensity scaling, pyramids, MIND-SSC features."""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "box_mean": "filters",
        "smooth_average": "filters",
        "gaussian_smooth": "filters",
        "antialias_sigmas": "filters",
        "pool_cells": "filters",
        "robust_range": "intensity",
        "robust_scale": "intensity",
        "antialiased": "pyramid",
        "downsample": "pyramid",
        "build_pyramid": "pyramid",
        "resize_image": "pyramid",
        "level_shape": "pyramid",
        "mind_ssc": "mind",
    },
)
