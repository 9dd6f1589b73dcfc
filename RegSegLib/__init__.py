"""RegSegLib: the PyTorch engine of RegSeg (registration and segmentation of medical images).

Importing this package is cheap: it does not import torch. The geometry convention every module
follows is documented in :mod:`RegSegLib.geometry`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
