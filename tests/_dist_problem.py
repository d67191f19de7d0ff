"""The small problems shared by tests/test_distributed.py and the ranks it launches (_dist_worker.py)."""

from __future__ import annotations

import torch

from brenier.sources import UniformBall


def problem(n: int = 500, d: int = 4):
    """targets (n, d) and the SemiDiscreteOT keywords of the test fit: tol far below reach, so
    every run makes exactly max_iter iterations; batches of 3 chunks per half-sample, so two
    ranks split them unevenly (3 + 3 chunks) and the chunks hold several score blocks (small
    memory budget)."""
    g = torch.Generator().manual_seed(11)
    y = 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return y, {"source": UniformBall(d), "method": "newton", "tol": 1e-3, "device": "cpu", "seed": 5,
               "memory_budget": 1 << 20, "solver_options": {"batch0": 70_000}}


def tie_problem():
    """Targets (60, 4), heights (60,) and points (300, 4) on an integer grid: many scores tie exactly."""
    g = torch.Generator().manual_seed(3)
    y = torch.unique(torch.randint(-2, 3, (80, 4), generator=g), dim=0)[:60].double()
    h = torch.randint(-1, 2, (y.shape[0],), generator=g).double()
    x = torch.randint(-1, 2, (300, 4), generator=g).float()
    return y, h, x


def query_points(d: int, m: int = 1001) -> torch.Tensor:
    """(m, d) fixed points of the source ball for ``assign`` checks (m odd: unequal row slices)."""
    x = torch.rand(m, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2 - 1
    return x / x.norm(dim=1, keepdim=True).clamp_min(1.0)
