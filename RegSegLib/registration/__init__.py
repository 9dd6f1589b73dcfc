"""Registration methods. The iterative engine lives in :mod:`RegSegLib.registration.affine` and
:mod:`RegSegLib.registration.deformable`; they speak :class:`~RegSegLib.volume.Volume` and transforms."""
