"""The optimisers of the iterative engines: Adam with a cosine schedule, and L-BFGS with a line search.

Adam is written out (rather than ``torch.optim.Adam``) because the deformable engine takes its
gradients per grid cell: :class:`Adam` can scale the gradient by the number of cells and use an
``eps`` well above the residual gradient of an aligned pair, which the textbook ``eps=1e-8`` would
turn into full ``lr`` steps. With ``grad_scale=1`` and ``eps=1e-8`` it is ``torch.optim.Adam``.

L-BFGS is written out as well: building any ``torch.optim`` optimiser imports ``torch._dynamo``, which
costs the command about 2 s of start-up.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

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


LBFGS_HISTORY = 20
"""Curvature pairs kept by :func:`run_lbfgs`: more than the 12 parameters of the affine family, so a round
forgets no curvature it has measured (with 10 an ill-conditioned 12-parameter quadratic takes several times
as many evaluations)."""
WOLFE_DECREASE = 1e-4
"""Sufficient-decrease constant ``c1`` of the strong Wolfe conditions (Nocedal and Wright, eq. 3.7)."""
WOLFE_CURVATURE = 0.9
"""Curvature constant ``c2`` of the strong Wolfe conditions (the usual value for quasi-Newton steps)."""
LBFGS_TOLERANCE = 1e-14
"""L-BFGS stops when a step moves no parameter or changes the scaled loss by less than this."""


@dataclass
class _Trial:
    """One evaluated point of a line search: ``x + step * direction``."""

    step: float
    loss: float
    slope: float
    """Directional derivative ``grad . direction`` at the point."""
    grad: torch.Tensor
    """Gradient ``[N]`` (flattened like the parameters)."""


class _Budget:
    """Counts loss evaluations against a fixed allowance."""

    def __init__(self, allowed: int) -> None:
        self.allowed, self.used = allowed, 0

    @property
    def left(self) -> int:
        """Evaluations still allowed."""
        return self.allowed - self.used


def _cubic_minimiser(a: _Trial, b: _Trial) -> float | None:
    """Step of the minimum of the cubic through two trials' losses and slopes (N&W eq. 3.59), or ``None``."""
    if a.step == b.step:
        return None
    d1 = a.slope + b.slope - 3.0 * (a.loss - b.loss) / (a.step - b.step)
    radicand = d1 * d1 - a.slope * b.slope
    if not math.isfinite(radicand) or radicand < 0.0:
        return None
    d2 = math.copysign(math.sqrt(radicand), b.step - a.step)
    denominator = b.slope - a.slope + 2.0 * d2
    if denominator == 0.0:
        return None
    step = b.step - (b.step - a.step) * (b.slope + d2 - d1) / denominator
    return step if math.isfinite(step) else None


def _zoom(
    evaluate: Callable[[float], _Trial], start: _Trial, low: _Trial, high: _Trial, budget: _Budget, step_floor: float
) -> _Trial:
    """N&W Algorithm 3.6: shrinks ``[low, high]`` (``low`` the lower loss) onto a strong Wolfe point.

    Returns the strong Wolfe point, or ``low`` (the best point with sufficient decrease found; ``start``
    itself if none) when the budget runs out or the interval collapses.
    """
    while budget.left > 0 and abs(high.step - low.step) > step_floor:
        left, right = sorted((low.step, high.step))
        margin = 0.1 * (right - left)
        step = _cubic_minimiser(low, high)
        if step is None or not left + margin <= step <= right - margin:
            step = 0.5 * (left + right)
        trial = evaluate(step)
        decreased = trial.loss <= start.loss + WOLFE_DECREASE * step * start.slope
        if not math.isfinite(trial.loss) or not decreased or trial.loss >= low.loss:
            high = trial
            continue
        if abs(trial.slope) <= -WOLFE_CURVATURE * start.slope:
            return trial
        if trial.slope * (high.step - low.step) >= 0.0:
            high = low
        low = trial
    return low


def _strong_wolfe(evaluate: Callable[[float], _Trial], start: _Trial, first_step: float, budget: _Budget, step_floor: float) -> _Trial:
    """N&W Algorithm 3.5: a step along a descent direction meeting the strong Wolfe conditions.

    Args:
        evaluate: loss, slope and gradient at a step length (one loss evaluation).
        start: the trial at step 0 (``start.slope < 0``).
        first_step: the first step length tried.
        budget: loss evaluations left; the search stops when it is spent.
        step_floor: step lengths closer than this are the same step.

    Returns:
        A strong Wolfe point, or else the lowest point with sufficient decrease evaluated (``start`` when
        there is none, i.e. no move).
    """
    previous, step = start, first_step
    while budget.left > 0:
        trial = evaluate(step)
        decreased = trial.loss <= start.loss + WOLFE_DECREASE * step * start.slope
        if not math.isfinite(trial.loss) or not decreased or (previous is not start and trial.loss >= previous.loss):
            return _zoom(evaluate, start, previous, trial, budget, step_floor)
        if abs(trial.slope) <= -WOLFE_CURVATURE * start.slope:
            return trial
        if trial.slope >= 0.0:
            return _zoom(evaluate, start, trial, previous, budget, step_floor)
        extrapolated = _cubic_minimiser(previous, trial)
        previous = trial
        step = min(max(extrapolated if extrapolated is not None else 0.0, 2.0 * step), 10.0 * step)
    return previous


def _two_loop(grad: torch.Tensor, history: deque[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """The L-BFGS direction ``-H grad`` by the two-loop recursion (N&W Algorithm 7.4).

    Args:
        grad: gradient ``[N]``.
        history: curvature pairs ``(s [N], y [N], 1 / (y . s))``, oldest first.

    Returns:
        The search direction ``[N]``; ``-grad`` without history.
    """
    q = grad.clone()
    alphas = []
    for s, y, rho in reversed(history):
        alpha = rho * float(torch.dot(s, q))
        q.sub_(y, alpha=alpha)
        alphas.append(alpha)
    if history:
        s, y, _ = history[-1]
        q.mul_(float(torch.dot(s, y)) / float(torch.dot(y, y)))
    for (s, y, rho), alpha in zip(history, reversed(alphas)):
        beta = rho * float(torch.dot(y, q))
        q.add_(s, alpha=alpha - beta)
    return q.neg_()


def run_lbfgs(param: torch.Tensor, loss_of: Callable[[], torch.Tensor], evaluations: int, step: float) -> None:
    """L-BFGS with a strong Wolfe line search, at most ``evaluations`` loss evaluations.

    The textbook method (Nocedal and Wright, *Numerical Optimization*, 2nd ed., Algorithms 7.4 and 7.5
    with the line search of Algorithms 3.5 and 3.6): :data:`LBFGS_HISTORY` curvature pairs, the initial
    inverse Hessian scaled by ``s.y / y.y`` of the latest pair, trial step 1 along quasi-Newton
    directions. The loss is rescaled so that its first gradient has L1 norm 1 and the first step
    (along the steepest descent) is tried ``step`` long (L1 norm of the parameter change), which makes
    the search independent of the measure's scale (MIND distances are small). The parameters end at
    the last accepted point, never above the starting loss.

    Args:
        param: tensor with ``requires_grad`` (any shape, e.g. ``[1, P]``), updated in place.
        loss_of: computes the (scalar) loss from the current ``param``; called at most ``evaluations`` times.
        evaluations: loss evaluations allowed, the first (at the starting point) included.
        step: L1 length of the first trial step.
    """
    if evaluations <= 1:
        return
    budget = _Budget(evaluations)
    x = param.detach().reshape(-1).clone()
    scale = 1.0

    def evaluate_at(point: torch.Tensor) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            param.copy_(point.reshape(param.shape))
        loss = loss_of()
        budget.used += 1
        grad = torch.autograd.grad(loss, param)[0].reshape(-1)
        return float(loss.detach()) * scale, grad * scale

    loss, grad = evaluate_at(x)
    norm = float(grad.abs().sum())
    if not math.isfinite(loss) or not math.isfinite(norm) or norm == 0.0:
        return
    scale = 1.0 / norm
    loss, grad = loss * scale, grad * scale
    history: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=LBFGS_HISTORY)
    direction = -grad

    def along(length: float) -> _Trial:
        """The trial ``length`` along the current ``direction`` from the current ``x``."""
        value, gradient = evaluate_at(x + length * direction)
        return _Trial(length, value, float(torch.dot(gradient, direction)), gradient)

    while budget.left > 0:
        direction = _two_loop(grad, history)
        slope = float(torch.dot(grad, direction))
        if not slope < 0.0:
            history.clear()
            direction, slope = -grad, -float(torch.dot(grad, grad))
        first_step = 1.0 if history else step / float(grad.abs().sum())
        step_floor = LBFGS_TOLERANCE / max(float(direction.abs().max()), LBFGS_TOLERANCE)
        accepted = _strong_wolfe(along, _Trial(0.0, loss, slope, grad), first_step, budget, step_floor)
        if accepted.step == 0.0:
            break
        change = accepted.step * direction
        difference = accepted.grad - grad
        curvature = float(torch.dot(change, difference))
        if curvature > 1e-10 * float(torch.linalg.vector_norm(change) * torch.linalg.vector_norm(difference)):
            history.append((change, difference, 1.0 / curvature))
        x = x + change
        converged = abs(loss - accepted.loss) < LBFGS_TOLERANCE or float(change.abs().max()) < LBFGS_TOLERANCE
        loss, grad = accepted.loss, accepted.grad
        if converged or float(grad.abs().max()) <= LBFGS_TOLERANCE:
            break
    with torch.no_grad():
        param.copy_(x.reshape(param.shape))
