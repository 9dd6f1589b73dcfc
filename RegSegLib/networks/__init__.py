"""Networks built from MONAI blocks: affine registration (:mod:`~RegSegLib.networks.affine`).

Importing this package does not import torch or MONAI; its modules do.
"""
