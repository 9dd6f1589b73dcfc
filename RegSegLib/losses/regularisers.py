"""Smoothness penalties of voxel displacement fields ``[B, 3, K, J, I]`` (grid voxel units)."""

from __future__ import annotations

import torch

PENALTIES: tuple[str, ...] = ("diffusion", "bending")


def diffusion(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of ``[B, 3, K, J, I]`` along the three axes (sum of axes)."""
    total = disp.new_zeros(())
    for dim in (2, 3, 4):
        if disp.shape[dim] > 1:
            total = total + torch.diff(disp, dim=dim).pow(2).mean()
    return total


def bending(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared second derivatives (pure and mixed) of ``[B, 3, K, J, I]``."""
    total = disp.new_zeros(())
    dims = [d for d in (2, 3, 4) if disp.shape[d] > 2]
    for a in dims:
        total = total + torch.diff(disp, n=2, dim=a).pow(2).mean()
        for b in dims:
            if b > a:
                total = total + 2 * torch.diff(torch.diff(disp, dim=a), dim=b).pow(2).mean()
    return total


def penalty(name: str):
    """The penalty function of a name in :data:`PENALTIES`."""
    functions = {"diffusion": diffusion, "bending": bending}
    if name not in functions:
        raise ValueError(f"unknown smoothness penalty {name!r}; choose one of {', '.join(PENALTIES)}")
    return functions[name]
