"""Segmentation (nnU-Net style): dataset layouts, the dataset fingerprint and the experiment plan."""
