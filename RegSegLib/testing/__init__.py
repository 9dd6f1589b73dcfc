"""Known transforms and phantoms for the tests and the benchmarks (not used by the methods)."""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "random_affine": "known_transforms",
        "foreground_points": "known_transforms",
        "synthetic_affine_pair": "known_transforms",
    },
)
