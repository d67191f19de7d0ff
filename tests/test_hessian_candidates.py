"""The sampled Hessian from candidate neighbours (large N): exact cells and runner-ups, a top-k
over each cell's likely neighbours instead of all N targets, exact fallback where it misses."""

from __future__ import annotations

import warnings

import pytest
import torch

from brenier import ConvergenceWarning, SemiDiscreteOT
from brenier.ot import montecarlo
from brenier.ot.potential import BrenierPotential
from brenier.sources import UniformBall


def _pot(n=400, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.randn(3000, d, generator=g).float()
    return BrenierPotential(y, h), x


def test_candidate_table_lists_heaviest_neighbours_first():
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2], [2, 3]])
    w = torch.tensor([1.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    t = montecarlo.candidate_table(pairs, w, 5, width=2)
    assert t.tolist() == [[2, 1], [2, 0], [0, 1], [2, -1], [-1, -1]]


def test_with_every_target_a_candidate_it_is_the_exact_top_k():
    pot, x = _pot()
    n = pot.n_targets
    everyone = torch.arange(n).expand(n, n).clone()
    everyone[torch.arange(n), torch.arange(n)] = -1  # a cell is not its own neighbour
    misses = [0]
    v, i = montecarlo._near_tie_topk(pot, x, 4, everyone, misses)
    ev, ei = pot.topk(x, 4)
    assert torch.equal(i, ei) and misses == [0]
    torch.testing.assert_close(v, ev, rtol=1e-5, atol=1e-5)


def test_wrong_candidates_keep_the_cell_and_runner_up_exact():
    """Candidates from an unrelated table: every row whose runner-up is not among them takes
    the exact top-k, so (best, runner-up) always equals the exact one."""
    pot, x = _pot(seed=1)
    n = pot.n_targets
    g = torch.Generator().manual_seed(2)
    wrong = torch.randint(0, n, (n, 6), generator=g)
    misses = [0]
    v, i = montecarlo._near_tie_topk(pot, x, 4, wrong, misses)
    ev, ei = pot.topk(x, 4)
    assert torch.equal(i[:, 0], ei[:, 0])
    torch.testing.assert_close(v[:, :2], ev[:, :2], rtol=1e-5, atol=1e-5)
    # the runner-up's index too, except at float-level ties for second place
    clear = (ev[:, 1] - ev[:, 2]).double() > 1e-4
    assert torch.equal(i[clear, 1], ei[clear, 1]) and clear.float().mean() > 0.9
    assert 0 < misses[0] <= x.shape[0]
    # padded tables (-1) and cells without candidates fall back too
    empty = torch.full((n, 3), -1)
    misses = [0]
    _, i2 = montecarlo._near_tie_topk(pot, x, 3, empty, misses)
    assert torch.equal(i2, pot.topk(x, 3)[1]) and misses[0] == x.shape[0]


@pytest.fixture
def candidates_everywhere(monkeypatch):
    monkeypatch.setattr(montecarlo, "CANDIDATES_MIN_TARGETS", 1)



def test_newton_with_candidate_hessians_converges_like_the_full_top_k(candidates_everywhere):
    y = torch.randn(1500, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with_c = SemiDiscreteOT(UniformBall(6), tol=0.05, seed=3, device="cpu").fit(y)
    without = SemiDiscreteOT(UniformBall(6), tol=0.05, seed=3, device="cpu",
                             solver_options={"hessian_candidates": False}).fit(y)
    assert with_c.converged_ and without.converged_
    assert with_c.n_iter_ <= without.n_iter_ + 1
    rates = [r["hessian_candidate_misses"] for r in with_c.history_ if "hessian_candidate_misses" in r]
    assert rates and len(rates) == with_c.n_iter_ - 1  # the first Hessian has no candidates yet
    assert max(rates[1:] or rates) < 0.5  # most runner-ups are among the last Hessian's neighbours
    assert all("hessian_candidate_misses" not in r for r in without.history_)


def test_candidate_table_survives_a_checkpoint(candidates_everywhere, tmp_path):
    y = torch.randn(800, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ck = tmp_path / "fit.ckpt"
    kw = {"tol": 1e-3, "seed": 3, "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        SemiDiscreteOT(UniformBall(6), max_iter=2, **kw).fit(y, checkpoint=ck)
        resumed = SemiDiscreteOT(UniformBall(6), max_iter=4, **kw).fit(y, checkpoint=ck)
        straight = SemiDiscreteOT(UniformBall(6), max_iter=4, **kw).fit(y)
    assert resumed.history_[-1]["tv_estimate"] == straight.history_[-1]["tv_estimate"]
    torch.testing.assert_close(torch.as_tensor(resumed.heights_), torch.as_tensor(straight.heights_), rtol=0, atol=0)


def test_bad_option_is_refused():
    with pytest.raises(ValueError, match="hessian_candidates"):
        SemiDiscreteOT(UniformBall(2), method="newton", solver_options={"hessian_candidates": "yes"}).fit(torch.randn(20, 2))
