"""Spatial transforms, all in RAS millimetres, all fixed-to-moving (``warped(x) = moving(T(x))``).

* :mod:`~RegSegLib.transforms.records`: the transform kinds (affine, displacement field, composite).
* :mod:`~RegSegLib.transforms.affine_params`: the four affine families and their parameters.
* :mod:`~RegSegLib.transforms.fields`: warping, composition, SVF integration, resizing and the
  Jacobian of voxel displacement fields (one implementation each).
* :mod:`~RegSegLib.transforms.resampling`: volumes through transforms onto reference grids.
"""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AffineTransform": "records",
        "DisplacementField": "records",
        "CompositeTransform": "records",
        "Transform": "records",
        "compose": "records",
        "integrate_velocity": "records",
        "jacobian_determinant": "records",
        "resample": "resampling",
        "field_from_transform": "resampling",
        "moving_grid_coordinates": "resampling",
        "sample_at_points": "fields",
    },
)
