"""Smoothness penalties of voxel displacement fields ``[B, 3, K, J, I]`` (grid voxel units)."""

from __future__ import annotations

import torch

PENALTIES: tuple[str, ...] = ("diffusion", "bending")


_AXES = (2, 3, 4)
"""The spatial axes ``K, J, I`` of a ``[B, 3, K, J, I]`` field."""


class _Diffusion(torch.autograd.Function):
    """``sum_axes mean((u[x+1] - u[x])^2)`` over the last three axes with a hand-written gradient.

    The gradient of one axis' term is ``2 / n (d[x-1] - d[x])`` with ``d`` the forward differences (zero
    beyond the ends), added in place into one buffer: autograd's version of ``diff`` and ``pow`` fills and
    copies a full-size tensor per axis, four times the cost on a CPU.
    """

    @staticmethod
    def forward(ctx, disp: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(disp)
        total = disp.new_zeros(())
        for dim in _AXES:
            size = disp.shape[dim]
            if size > 1:
                step = disp.narrow(dim, 1, size - 1) - disp.narrow(dim, 0, size - 1)
                total += step.pow_(2).sum() / step.numel()
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (disp,) = ctx.saved_tensors
        grad = torch.zeros_like(disp)
        for dim in _AXES:
            size = disp.shape[dim]
            if size > 1:
                step = disp.narrow(dim, 1, size - 1) - disp.narrow(dim, 0, size - 1)
                step.mul_(2.0 / step.numel())
                grad.narrow(dim, 1, size - 1).add_(step)
                grad.narrow(dim, 0, size - 1).sub_(step)
        return grad.mul_(grad_output)


def diffusion(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of ``[B, 3, K, J, I]`` along the three axes (sum of axes)."""
    return _Diffusion.apply(disp)


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
