"""The optimisers of the iterative engines: Adam with a cosine schedule, and L-BFGS with a line search.

Adam is written out (rather than ``torch.optim.Adam``) because the deformable engine takes its
gradients per grid cell: :class:`Adam` can scale the gradient by the number of cells and use an
``eps`` well above the residual gradient of an aligned pair, which the textbook ``eps=1e-8`` would
turn into full ``lr`` steps. With ``grad_scale=1`` and ``eps=1e-8`` it is ``torch.optim.Adam``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch


class Adam:
    """Adam (Kingma and Ba, 2015) on one tensor, updated in place.

    Args:
        param: the tensor to optimise (``requires_grad``).
        lr: learning rate.
        betas: moment decay rates.
        eps: added to the root of the second moment.
        per_cell: scale gradients by the number of grid cells (``numel / shape[1]`` of a
            ``[B, 3, K, J, I]`` field), i.e. take the gradient of a voxel-summed loss.
    """

    def __init__(
        self,
        param: torch.Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        per_cell: bool = False,
    ) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.grad_scale = param.numel() / param.shape[1] if per_cell else 1.0
        self.first = torch.zeros_like(param)
        self.second = torch.zeros_like(param)
        self.count = 0

    def step(self, grad: torch.Tensor, lr_scale: float = 1.0) -> None:
        """One update with the gradient of the loss; ``lr_scale`` scales the learning rate (schedules)."""
        beta1, beta2 = self.betas
        self.count += 1
        grad = grad * self.grad_scale
        self.first.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        self.second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = (self.second / (1.0 - beta2**self.count)).sqrt_().add_(self.eps)
        with torch.no_grad():
            self.param.addcdiv_(self.first, denom, value=-self.lr * lr_scale / (1.0 - beta1**self.count))


def cosine(iteration: int, total: int, floor: float) -> float:
    """Cosine decay of a learning-rate factor from 1 (iteration 0) to ``floor`` (iteration ``total``)."""
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * iteration / max(total, 1)))


def run_adam(
    param: torch.Tensor,
    loss_of: Callable[[], torch.Tensor],
    iterations: int,
    lr: float,
    *,
    floor: float,
    eps: float = 1e-8,
    per_cell: bool = False,
    on_iteration: Callable[[int], None] | None = None,
) -> None:
    """``iterations`` Adam steps on ``param`` with the learning rate cosine-decayed to ``floor * lr``.

    Args:
        param: tensor with ``requires_grad``, updated in place.
        loss_of: computes the loss from the current ``param``.
        iterations: number of steps.
        lr: initial learning rate.
        floor: final learning rate as a fraction of ``lr``.
        eps: Adam's ``eps``.
        per_cell: see :class:`Adam`.
        on_iteration: called with the iteration index before each step (progress, cancellation).
    """
    optimiser = Adam(param, lr=lr, eps=eps, per_cell=per_cell)
    for iteration in range(iterations):
        if on_iteration is not None:
            on_iteration(iteration)
        grad = torch.autograd.grad(loss_of(), param)[0]
        optimiser.step(grad, cosine(iteration, iterations, floor))


def run_lbfgs(param: torch.Tensor, loss_of: Callable[[], torch.Tensor], evaluations: int, step: float) -> None:
    """L-BFGS with a strong Wolfe line search, at most ``evaluations`` loss evaluations.

    The loss is rescaled so that the first step is ``step`` long (L1 norm of the parameters), which makes
    the search independent of the measure's scale (MIND distances are small).
    """
    if evaluations <= 1:
        return
    grad = torch.autograd.grad(loss_of(), param)[0]
    norm = float(grad.abs().sum())
    if not np.isfinite(norm) or norm == 0.0:
        return
    scale = 1.0 / norm
    optimiser = torch.optim.LBFGS(
        [param],
        lr=step,
        max_iter=evaluations - 1,
        max_eval=evaluations - 1,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad(set_to_none=True)
        loss = loss_of() * scale
        loss.backward()
        return loss

    optimiser.step(closure)
