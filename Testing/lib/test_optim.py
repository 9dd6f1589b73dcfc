"""The L-BFGS of the affine engine (RegSegLib.registration.optim.run_lbfgs): convergence, budget, first step.

It replaces ``torch.optim.LBFGS``, whose optimisers import ``torch._dynamo`` (2 s) when built, so the
tests also check that the command's affine stage no longer pulls that module in.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from RegSegLib.registration.optim import run_lbfgs


class Counted:
    """A loss of ``param`` that records every point it is evaluated at."""

    def __init__(self, param: torch.Tensor, function) -> None:
        self.param, self.function, self.points = param, function, []

    def __call__(self) -> torch.Tensor:
        self.points.append(self.param.detach().clone())
        return self.function(self.param)


def rosenbrock(param: torch.Tensor) -> torch.Tensor:
    x = param[0]
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def start(values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("size", [2, 6, 12])
def test_rosenbrock_converges_within_the_budget(size):
    param = start([-1.2] * size)
    loss = Counted(param, rosenbrock)
    run_lbfgs(param, loss, 200, 0.1)
    assert len(loss.points) <= 200
    np.testing.assert_allclose(param.detach().numpy()[0], np.ones(size), atol=1e-4)


def test_an_ill_conditioned_quadratic_is_solved():
    """Curvatures spanning four decades, as the affine parameters' (rotation about a long axis, shear, shift)."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(12, 12, generator=generator, dtype=torch.float64))
    hessian = basis @ torch.diag(torch.logspace(-2, 2, 12, dtype=torch.float64)) @ basis.T
    target = torch.randn(12, generator=generator, dtype=torch.float64)
    param = start([0.0] * 12)
    loss = Counted(param, lambda p: 0.5 * (p[0] - target) @ hessian @ (p[0] - target))
    run_lbfgs(param, loss, 100, 0.5)
    assert float(torch.linalg.vector_norm(param.detach()[0] - target)) < 1e-4


@pytest.mark.parametrize("evaluations", [2, 3, 4, 5, 7, 10, 20])
def test_never_more_evaluations_than_allowed_and_never_worse(evaluations):
    param = start([-1.2, 1.0, 0.5])
    loss = Counted(param, rosenbrock)
    before = float(rosenbrock(param.detach()))
    run_lbfgs(param, loss, evaluations, 0.5)
    assert 2 <= len(loss.points) <= evaluations
    after = float(rosenbrock(param.detach()))
    assert after < before
    # the parameters end at the best point tried that the line search accepted, never at a failed trial
    assert after <= min(float(rosenbrock(p)) for p in loss.points) + 1e-12


@pytest.mark.parametrize("evaluations", [-1, 0, 1])
def test_a_budget_of_one_evaluation_or_less_does_nothing(evaluations):
    param = start([-1.2, 1.0])
    loss = Counted(param, rosenbrock)
    run_lbfgs(param, loss, evaluations, 0.5)
    assert loss.points == []
    assert param.detach().tolist() == [[-1.2, 1.0]]


def test_the_first_step_is_step_long_whatever_the_loss_scale():
    for factor in (1e-6, 1.0, 1e6):
        param = start([0.3, -0.2, 0.1])
        loss = Counted(param, lambda p, f=factor: f * (p**2 * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum())
        run_lbfgs(param, loss, 10, 0.25)
        first_move = (loss.points[1] - loss.points[0]).abs().sum()
        assert float(first_move) == pytest.approx(0.25, rel=1e-9)
        assert float(param.detach().abs().max()) < 1e-6


def test_a_flat_or_undefined_start_leaves_the_parameters_alone():
    param = start([0.0, 0.0])
    loss = Counted(param, lambda p: (p**2).sum())
    run_lbfgs(param, loss, 10, 0.5)
    assert len(loss.points) == 1 and param.detach().tolist() == [[0.0, 0.0]]
    param = start([1.0, 1.0])
    loss = Counted(param, lambda p: (p**2).sum() * math.nan)
    run_lbfgs(param, loss, 10, 0.5)
    assert len(loss.points) == 1 and param.detach().tolist() == [[1.0, 1.0]]


def test_trials_with_an_undefined_loss_are_stepped_back_from():
    """A loss that is infinite beyond a wall (images no longer overlap) is minimised inside it."""

    def walled(p: torch.Tensor) -> torch.Tensor:
        value = ((p - 0.8) ** 2).sum()
        return value if float(p.detach().abs().max()) < 1.0 else value + math.inf

    param = start([0.0, 0.0])
    loss = Counted(param, walled)
    run_lbfgs(param, loss, 30, 5.0)
    np.testing.assert_allclose(param.detach().numpy()[0], [0.8, 0.8], atol=1e-6)


def test_the_gradient_is_not_left_on_the_parameters():
    param = start([-1.2, 1.0])
    run_lbfgs(param, lambda: rosenbrock(param), 20, 0.5)
    assert param.grad is None and param.requires_grad


def test_the_affine_engine_does_not_import_torch_dynamo():
    """``torch.optim`` optimisers import ``torch._dynamo`` when built (about 2 s of the command's start-up)."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np, torch
        from RegSegLib.registration.affine import register_affine
        from RegSegLib.volume import Volume
        k, j, i = torch.meshgrid(*[torch.arange(20.0)] * 3, indexing="ij")
        blob = torch.exp(-((i - 9.0) ** 2 + (j - 10.0) ** 2 / 2 + (k - 11.0) ** 2 / 3) / 20.0)[None]
        moved = torch.exp(-((i - 10.0) ** 2 + (j - 10.0) ** 2 / 2 + (k - 11.0) ** 2 / 3) / 20.0)[None]
        matrix = np.diag([2.0, 2.0, 2.0, 1.0])
        register_affine(Volume(blob, matrix), Volume(moved, matrix), device="cpu", iterations=(5, 5, 5))
        print("torch._dynamo" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
