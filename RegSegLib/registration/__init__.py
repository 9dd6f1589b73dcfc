"""Iterative registration: settings, the affine and deformable engines, and the pipeline that chains them.

Methods are siblings over the generic layers (:mod:`RegSegLib.transforms`, :mod:`RegSegLib.ops`,
:mod:`RegSegLib.losses`): :mod:`.affine`, :mod:`.deformable` with its engines :mod:`.convexadam` and
:mod:`.control_grid`, chained by :mod:`.pipeline`; :mod:`.settings` names, defaults and validates them
without importing torch.
"""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AffineSettings": "settings",
        "DeformableSettings": "settings",
        "RegistrationSettings": "settings",
        "SettingsError": "settings",
        "register_affine": "affine",
        "register_deformable": "deformable",
        "register": "pipeline",
        "RegistrationResult": "pipeline",
        "split_initial": "pipeline",
    },
)
