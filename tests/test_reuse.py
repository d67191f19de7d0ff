"""Certified reuse of assignments (brenier.ot.reuse) and the reusing Newton solver.

The cache must never change an answer: every query equals a fresh pass of the potential, and a
fit gives the same heights with the cache as without it (only the work differs)."""

from __future__ import annotations

import math

import pytest
import torch

from brenier.ot import montecarlo as mc
from brenier.ot.potential import BrenierPotential
from brenier.ot.reuse import AssignmentCache
from brenier.sources import UniformBall


def _problem(n, d, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.randn(2000, d, generator=g)
    if ties:  # a coarse lattice: many exactly equal scores
        y, x, h = torch.round(y * 2) / 2, torch.round(x * 2) / 2, torch.zeros(n, dtype=torch.float64)
    return y, h, x


@pytest.mark.parametrize("n", [1, 2, 300, 5000])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("search", ["tiled", "brute", "pruned", "auto"])
def test_runner_up_is_the_second_score(n, ties, search):
    y, h, x = _problem(n, 5, seed=n, ties=ties)
    ref_v, ref_i = BrenierPotential(y, h, search="brute").topk(x, min(2, n))
    v, i, second = BrenierPotential(y, h, search=search).runner_up(x)
    assert torch.equal(i, ref_i[:, 0])  # same cell, same tie rule (lowest index)
    torch.testing.assert_close(v, ref_v[:, 0])
    expected = ref_v[:, 1] if n > 1 else torch.full_like(v, -math.inf)
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 8])
def test_cache_answers_equal_fresh_passes(k):
    y, h, x = _problem(3000, 6, seed=1)
    pot = BrenierPotential(y, h)
    cache = AssignmentCache(pot)
    g = torch.Generator().manual_seed(2)
    for step, scale in enumerate([0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1e-5]):
        h = h + scale * torch.randn(h.shape, generator=g, dtype=torch.float64)
        pot.set_heights(h)
        cache.set_heights(h)
        v, i = cache.query("chunk", x, k)
        ref_v, ref_i = pot.topk(x, k) if k > 1 else (lambda r: (r[0][:, None], r[1][:, None]))(pot.argmax(x))
        assert torch.equal(i, ref_i), f"step {step}"
        torch.testing.assert_close(v, ref_v.double(), atol=1e-5, rtol=0)
    # small changes are certified: most rows never went back to the N targets
    assert cache.hits > 0.5 * x.shape[0]


def test_cache_grows_a_chunk_and_restarts_on_a_new_question():
    y, h, x = _problem(500, 4, seed=3)
    pot = BrenierPotential(y, h)
    cache = AssignmentCache(pot)
    cache.set_heights(h)
    cache.query(("a", 0), x[:700], 1)
    _, i = cache.query(("a", 0), x, 1)  # 1300 more rows: computed and appended
    assert torch.equal(i[:, 0], pot.argmax(x)[1])
    assert cache.hits == 700 and len(cache) == x.shape[0]
    _, i8 = cache.query(("a", 0), x, 8)  # another k: recomputed, not mixed up
    assert torch.equal(i8, pot.topk(x, 8)[1])
    with pytest.raises(RuntimeError, match="set_heights"):
        AssignmentCache(pot).query("b", x, 1)


def test_batch_stats_are_the_same_with_the_cache():
    y, h, _ = _problem(800, 5, seed=4)
    y = 0.3 * y
    pot, ref = BrenierPotential(y, h), BrenierPotential(y, h)
    cache = AssignmentCache(pot)
    g = torch.Generator().manual_seed(5)
    for it in range(3):
        h = h + 1e-3 * torch.randn(h.shape, generator=g, dtype=torch.float64)
        pot.set_heights(h)
        ref.set_heights(h)
        cache.set_heights(h)
        kw = dict(seed=7, pairs=True, hessian_samples=1 << 15, fitted_rows=(20_000 * it, 20_000 * it))
        a = mc.batch_stats(pot, UniformBall(5), 40_000 * (it + 1), cache=cache, **kw)
        b = mc.batch_stats(ref, UniformBall(5), 40_000 * (it + 1), **kw)
        assert torch.equal(a.counts, b.counts) and torch.equal(a.fresh_halves, b.fresh_halves)
        assert torch.equal(a.pairs, b.pairs)
        assert torch.equal(a.pair_weights, b.pair_weights)
        assert a.fresh_sizes == (20_000, 20_000)
    assert cache.hits > 0


def _fit(monkeypatch=None, **kw):
    g = torch.Generator().manual_seed(11)
    n, d = 400, 5
    y = 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)
    nu = torch.full((n,), 1.0 / n, dtype=torch.float64)
    pot = BrenierPotential(y, torch.zeros(n, dtype=torch.float64))
    st = mc.SolverState(heights=torch.zeros(n, dtype=torch.float64), best_heights=torch.zeros(n, dtype=torch.float64))
    return mc.solve_newton(pot, UniformBall(d), nu, st, tol=0.05, seed=3, reuse=True, **kw), nu


def test_reusing_fit_converges_on_fresh_rows_only():
    st, _ = _fit()
    assert st.converged
    last = st.history[-1]
    # the verdict came from rows no earlier step had used, with their own noise floor
    assert last["fresh_samples"] > 0 and last["tv_fresh_debiased"] <= 0.05 and last["noise_floor_fresh"] <= 0.05
    # steps on the fixed sample in between carry no verdict
    assert any("tv_fresh" not in r for r in st.history)
    assert any(r.get("hessian") == "kept" for r in st.history) or len(st.history) <= 3


def test_reusing_fit_is_the_same_without_the_cache(monkeypatch):
    a, _ = _fit()
    monkeypatch.setattr(mc, "AssignmentCache", lambda pot: None)
    b, _ = _fit()
    assert torch.equal(a.heights, b.heights)
    assert a.iteration == b.iteration
    assert b.evaluations > a.evaluations  # the cache only saved work


def test_reusing_fit_resumes_bit_exact():
    full, _ = _fit(max_iter=6)
    part, nu = _fit(max_iter=3)
    g = torch.Generator().manual_seed(11)
    n, d = 400, 5
    y = 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)
    pot = BrenierPotential(y, part.heights.clone())
    rest = mc.solve_newton(pot, UniformBall(d), nu, part, tol=0.05, seed=3, max_iter=6, reuse=True)
    assert torch.equal(rest.heights, full.heights)
    assert [r["tv_estimate"] for r in rest.history] == [r["tv_estimate"] for r in full.history]


def test_reuse_argument_is_checked():
    with pytest.raises(ValueError, match="reuse"):
        _fit(reuse_bad=None) if False else mc.solve_newton(
            BrenierPotential(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)), UniformBall(2),
            torch.full((3,), 1 / 3, dtype=torch.float64),
            mc.SolverState(heights=torch.zeros(3, dtype=torch.float64), best_heights=torch.zeros(3, dtype=torch.float64)),
            reuse="yes")


def test_damaged_reuse_records_are_not_trusted():
    st, nu = _fit(max_iter=3)
    st.extra["fitted_rows"] = torch.tensor([-5, 10**12])
    st.extra["hess_pairs"] = torch.tensor([[0, 10**9]])
    st.extra["hess_weights"] = torch.tensor([1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    y = 0.4 * torch.randn(400, 5, generator=g, dtype=torch.float64)
    pot = BrenierPotential(y, st.heights.clone())
    out = mc.solve_newton(pot, UniformBall(5), nu, st, tol=0.05, seed=3, max_iter=4, reuse=True)
    rec = out.history[3]
    assert rec["fresh_samples"] == rec["samples"] and rec["hessian"] == "new"  # every row counted fresh
