"""SemiDiscreteOT: the energy's gradient, mass balance, monotonicity, exact vs Monte Carlo,
persistence, checkpoints, interruption, and every bad input named in the OT core issue."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from brenier import BrenierPotential, NotFittedError, SemiDiscreteOT
from brenier.ot import montecarlo
from brenier.ot.power_diagram import power_diagram
from brenier.sources import Gaussian, Polygon, UniformBall, UniformBox


def _targets(n=60, d=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) * 0.6


@pytest.fixture(scope="module")
def exact_box():
    """Exact solution on the square [-1, 1]^2: the oracle for the Monte Carlo checks."""
    y = _targets(60, 2, seed=1)
    return y, SemiDiscreteOT(UniformBox(2), method="exact", tol=1e-10).fit(y)


@pytest.fixture(scope="module")
def newton_box():
    y = _targets(60, 2, seed=1)
    return y, SemiDiscreteOT(UniformBox(2), method="newton", tol=0.01, seed=3, device="cpu").fit(y)


# ------------------------------------------------------------------ the mathematics
def test_energy_gradient_matches_finite_differences(exact_box):
    """dE/dh_i = mu(W_i) - nu_i: a central difference of the sampled energy against exact masses."""
    y, _ = exact_box
    rng = np.random.default_rng(5)
    h = rng.normal(scale=0.2, size=len(y))
    pd = power_diagram(y, h, UniformBox(2).as_polygon())
    x = UniformBox(2).sample(400_000, seed=11, quasi=True).double()
    yt, ht = torch.from_numpy(y), torch.from_numpy(h)

    def energy(hh):  # ∫ u_h dmu - sum nu_i h_i with nu uniform, on a fixed sample
        return float((x @ yt.T + hh).max(dim=1).values.mean() - hh.mean())

    step = 1e-3
    for i in (0, 7, 33):
        e = torch.zeros(len(y), dtype=torch.float64)
        e[i] = step
        fd = (energy(ht + e) - energy(ht - e)) / (2 * step)
        assert fd == pytest.approx(pd.masses[i] - 1 / len(y), abs=3e-3)


def test_masses_sum_to_one_and_match_weights(exact_box):
    y, ot = exact_box
    m = ot.cell_masses()
    assert m.shape == (len(y),)
    assert m.sum() == pytest.approx(1.0, abs=1e-12)
    assert ot.max_rel_error_ <= 1e-9 and ot.converged_
    np.testing.assert_allclose(m, 1 / len(y), rtol=1e-8)


def test_monte_carlo_masses_sum_to_one():
    y = _targets(40, 3)
    ot = SemiDiscreteOT(UniformBall(3), tol=0.05, seed=0, device="cpu").fit(y)
    m = ot.cell_masses(n_samples=50_000)
    assert m.sum() == pytest.approx(1.0, abs=1e-12)
    assert (m >= 0).all()


def test_map_is_monotone(newton_box):
    """The gradient of a convex function is monotone: <T(x) - T(x'), x - x'> >= 0."""
    _, ot = newton_box
    x = UniformBox(2).sample(4000, seed=2, quasi=False).numpy()
    xp = UniformBox(2).sample(4000, seed=3, quasi=False).numpy()
    inner = ((ot.transport(x) - ot.transport(xp)) * (x - xp)).sum(1)
    assert inner.min() >= -1e-6


def test_potential_is_max_of_affine_pieces(newton_box):
    y, ot = newton_box
    x = np.random.default_rng(0).uniform(-1, 1, size=(500, 2))
    direct = (x @ y.T + ot.heights_).max(1)
    np.testing.assert_allclose(ot.potential(x), direct, atol=1e-5)
    idx = ot.assign(x)
    assert idx.dtype == np.int64
    np.testing.assert_allclose(ot.transport(x), y[idx])


def test_exact_and_monte_carlo_agree_in_2d(exact_box, newton_box):
    """The Monte Carlo heights, measured exactly on the power diagram, meet the tolerance."""
    y, exact = exact_box
    _, mc = newton_box
    assert mc.converged_
    pd = power_diagram(y, mc.heights_, UniformBox(2).as_polygon())
    tv = 0.5 * np.abs(pd.masses - 1 / len(y)).sum()
    assert tv <= 0.02  # solver tol 0.01 plus its estimate's own noise
    # and the heights agree with the exact ones up to the additive constant
    dh = (mc.heights_ - mc.heights_.mean()) - (exact.heights_ - exact.heights_.mean())
    assert np.abs(dh).max() < 0.05 * np.ptp(exact.heights_)


def test_auto_method_is_exact_for_polygons_and_newton_elsewhere():
    y = _targets(30, 2)
    square = Polygon([(-1, -1), (1, -1), (1, 1), (-1, 1)])
    assert SemiDiscreteOT(square).fit(y).method_ == "exact"
    assert SemiDiscreteOT(UniformBall(3), tol=0.1).fit(_targets(30, 3)).method_ == "newton"


def test_exact_cell_masses_on_a_disk():
    y = _targets(50, 2, seed=4)
    ot = SemiDiscreteOT(UniformBall(2), method="exact", tol=1e-9).fit(y)
    assert ot.max_rel_error_ <= 1e-9
    pd = ot.power_diagram()
    assert pd.masses.sum() == pytest.approx(1.0, abs=1e-9)
    assert len(pd.adjacency) > 0


def test_adam_baseline_reduces_the_gap():
    y = _targets(50, 3, seed=2)
    ot = SemiDiscreteOT(UniformBall(3), method="adam", tol=0.01, seed=0, max_iter=60, device="cpu").fit(y)
    first = ot.history_[0]["tv_debiased"]
    assert ot.method_ == "adam" and ot.n_evaluations_ > 0
    assert ot.tv_error_ < 0.5 * first


def test_gaussian_source_in_higher_dimension():
    y = _targets(80, 5, seed=3)
    ot = SemiDiscreteOT(Gaussian(5), tol=0.05, seed=0, device="cpu").fit(y)
    assert ot.converged_ and ot.tv_error_ <= 0.05
    m = ot.cell_masses(n_samples=200_000, seed=99)
    assert 0.5 * np.abs(m - 1 / 80).sum() <= 0.08  # tol + the check's own noise (≈0.4 sqrt(N/M))


# ------------------------------------------------------------------ kinds, seeds, chunks
def test_torch_in_torch_out_and_numpy_in_numpy_out():
    y = _targets(40, 2)
    ot = SemiDiscreteOT(UniformBox(2), method="newton", tol=0.05, seed=0, device="cpu").fit(torch.from_numpy(y))
    assert isinstance(ot.heights_, torch.Tensor) and ot.heights_.shape == (40,)
    x = torch.rand(10, 2) * 2 - 1
    assert isinstance(ot.assign(x), torch.Tensor) and ot.assign(x).dtype == torch.int64
    assert isinstance(ot.transport(x), torch.Tensor) and ot.transport(x).shape == (10, 2)
    assert isinstance(ot.potential(x.numpy()), np.ndarray)


def test_same_seed_same_heights():
    y = _targets(50, 3)
    a = SemiDiscreteOT(UniformBall(3), tol=0.05, seed=7, device="cpu").fit(y)
    b = SemiDiscreteOT(UniformBall(3), tol=0.05, seed=7, device="cpu").fit(y)
    np.testing.assert_array_equal(a.heights_, b.heights_)


def test_memory_budget_chunks_scores_without_changing_results():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(300, 4, generator=g)
    h = torch.randn(300, generator=g, dtype=torch.float64) * 0.1
    x = torch.randn(1000, 4, generator=g)
    tiny = BrenierPotential(y, h, memory_budget=300 * 4 * 16)  # 16 rows per block
    assert tiny.block_rows == 16
    blocks = list(tiny.score_blocks(x))
    assert len(blocks) == math.ceil(1000 / 16) and max(s.shape[0] for _, s in blocks) == 16
    tiny.reset_count()
    v, i = tiny.argmax(x)
    dense = (x @ y.T + h.float()).max(dim=1)
    torch.testing.assert_close(v, dense.values)
    assert torch.equal(i, dense.indices)
    assert tiny.evaluations == 1000 * 300  # every score counted once


def test_noise_floor_formula():
    nu = torch.full((100,), 0.01, dtype=torch.float64)
    # E|Bin/M - p| ≈ sqrt(2/pi) sqrt(p(1-p)/M), summed and halved: ≈ 0.4 sqrt(N/M) for uniform nu
    assert montecarlo.noise_floor(nu, 10_000) == pytest.approx(0.4 * math.sqrt(100 / 10_000), rel=0.01)


# ------------------------------------------------------------------ persistence, resume, Ctrl-C
def test_save_load_round_trip(tmp_path, newton_box):
    y, ot = newton_box
    ot.save(tmp_path / "run")
    back = SemiDiscreteOT.load(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(back.heights_, ot.heights_)
    x = np.random.default_rng(1).uniform(-1, 1, size=(300, 2))
    np.testing.assert_array_equal(back.assign(x), ot.assign(x))
    assert back.tv_error_ == ot.tv_error_ and back.method_ == "newton"
    with pytest.raises(FileNotFoundError, match="path"):
        SemiDiscreteOT.load(tmp_path / "nowhere")


def test_checkpoint_resumes(tmp_path):
    y = _targets(60, 3, seed=5)
    ck = tmp_path / "fit.ckpt"
    first = SemiDiscreteOT(UniformBall(3), tol=0.01, seed=0, max_iter=2, device="cpu").fit(y, checkpoint=ck)
    assert ck.exists() and first.n_iter_ == 2
    second = SemiDiscreteOT(UniformBall(3), tol=0.01, seed=0, max_iter=4, device="cpu").fit(y, checkpoint=ck)
    assert second.n_iter_ == 4 and len(second.history_) == 4
    assert second.history_[:2] == first.history_[:2]
    with pytest.raises(ValueError, match="checkpoint"):
        SemiDiscreteOT(UniformBall(3), tol=0.01, seed=1, max_iter=1, device="cpu").fit(y, checkpoint=ck)


def test_ctrl_c_keeps_best_heights():
    y = _targets(60, 3, seed=6)
    seen = []

    def interrupt(rec):
        seen.append(rec["tv_debiased"])
        if rec["iteration"] == 3:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted"):
        ot = SemiDiscreteOT(UniformBall(3), tol=1e-3, seed=0, device="cpu").fit(y, callback=interrupt)
    assert ot.interrupted_ and not ot.converged_
    assert ot.tv_error_ == pytest.approx(min(seen))
    assert np.isfinite(ot.heights_).all()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "targets, weights, match",
    [
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 0.0]]), None, "targets.*NaN"),
        (np.array([[0.0, np.inf], [1.0, 1.0], [2.0, 0.0]]), None, "targets.*infinite"),
        (np.zeros((1, 2)), None, "targets.*at least 2"),
        (np.zeros(5), None, "targets.*2-D"),
        (_targets(3), np.array([0.5, 0.6, -0.1]), "weights.*negative"),
        (_targets(3), np.array([0.2, 0.2, 0.2]), "weights.*sum to 0.6"),
        (_targets(3), np.array([0.5, 0.5]), "weights.*length 3"),
        (_targets(3), np.array([0.5, np.nan, 0.5]), "weights"),
        (_targets(3, 3), None, "source.*dimension 2.*3"),
        (np.ones((4, 2)), None, "targets.*identical"),
    ],
)
def test_bad_inputs_name_the_argument(targets, weights, match):
    with pytest.raises(ValueError, match=match):
        SemiDiscreteOT(UniformBox(2), method="newton", device="cpu").fit(targets, weights)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"method": "sinkhorn"}, "method"), ({"tol": -1.0}, "tol"), ({"tol": 2.0, "method": "newton"}, "tol"),
     ({"seed": -3}, "seed"), ({"method": "exact", "source": Gaussian(2)}, "method.*exact")],
)
def test_bad_parameters(kwargs, match):
    kwargs = {"source": UniformBox(2), **kwargs}
    with pytest.raises(ValueError, match=match):
        SemiDiscreteOT(**kwargs).fit(_targets(10))


def test_bad_device_and_source_type():
    with pytest.raises(ValueError, match="device"):
        SemiDiscreteOT(UniformBox(2), device="tpu").fit(_targets(10))
    with pytest.raises(TypeError, match="source"):
        SemiDiscreteOT("ball").fit(_targets(10))


def test_duplicates_are_merged_with_a_warning():
    y = _targets(20, 2)
    yd = np.vstack([y, y[:3]])
    with pytest.warns(UserWarning, match="3 duplicate"):
        ot = SemiDiscreteOT(UniformBox(2), method="exact").fit(yd)
    assert ot.heights_.shape == (23,)
    np.testing.assert_array_equal(ot.heights_[20:], ot.heights_[:3])
    m = ot.cell_masses()
    assert m.sum() == pytest.approx(1.0)
    # a duplicated target carries twice the weight, shared between its copies
    np.testing.assert_allclose(m[0] + m[20], 2 / 23, rtol=1e-6)


def test_calls_before_fit_raise_not_fitted():
    ot = SemiDiscreteOT(UniformBox(2))
    for call in (lambda: ot.assign(np.zeros((1, 2))), lambda: ot.transport(np.zeros((1, 2))),
                 lambda: ot.potential(np.zeros((1, 2))), lambda: ot.cell_masses(), lambda: ot.heights_,
                 lambda: ot.save("/tmp/never")):
        with pytest.raises(NotFittedError, match="fit"):
            call()


def test_query_points_are_validated(newton_box):
    _, ot = newton_box
    with pytest.raises(ValueError, match="x.*dimension 2"):
        ot.assign(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="x.*NaN"):
        ot.transport(np.array([[0.0, np.nan]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ot.assign(np.zeros(2)).shape == (1,)  # a single point (d,) is one row


# ------------------------------------------------------------------ low-dimensional Newton start
def _blobs(n, seed=0):
    """Four tight, unequal blobs in 2-D: from the contracted-Voronoi start their cells are far off."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.2, 1.0]])
    lab = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
    return centres[lab] + 0.08 * rng.normal(size=(n, 2))


def test_multiscale_start_beats_the_voronoi_start_in_2d():
    from brenier.ot.potential import voronoi_heights

    y = _blobs(400)
    nu = torch.full((400,), 1 / 400, dtype=torch.float64)
    src = UniformBall(2)
    h_ms, evals = montecarlo.multiscale_heights(torch.from_numpy(y), nu, src, tol=0.05, seed=0)
    h_vor = voronoi_heights(torch.from_numpy(y), *src.inscribed_ball())
    poly = src.as_polygon()
    tv = {k: 0.5 * np.abs(power_diagram(y, h.numpy(), poly).masses - 1 / 400).sum()
          for k, h in (("ms", h_ms), ("vor", h_vor))}
    assert evals > 0 and h_ms.shape == (400,) and abs(float(h_ms.mean())) < 1e-12
    # measured: 0.439 (global diagonal floor in the coarse solve) and 0.443 (local floor, the
    # default since benchmarks/newton_floor.py) against 0.880 for the Voronoi start
    assert tv["ms"] < 0.55 * tv["vor"], tv


def test_multiscale_start_is_used_only_in_low_dimension(monkeypatch):
    calls = []
    real = montecarlo.multiscale_heights
    monkeypatch.setattr(montecarlo, "multiscale_heights", lambda *a, **k: calls.append(1) or real(*a, **k))
    SemiDiscreteOT(UniformBall(4), method="newton", tol=0.1, seed=0, device="cpu", max_iter=2).fit(_targets(100, 4))
    assert calls == []  # d >= 4: the plain start, unchanged
    SemiDiscreteOT(UniformBall(2), method="newton", tol=0.1, seed=0, device="cpu", max_iter=2).fit(_blobs(100))
    assert calls  # d = 2, N > 64: the coarse-to-fine start


def test_local_floor_keeps_a_tight_cluster_from_trading_empty_cells():
    # a sheet of targets and a far tighter cluster beside it (the situation of the lying glass's
    # codes): with the diagonal floored at the global scale the cluster's empty cells overshoot
    # each step; floored at their neighbours' scale they settle (benchmarks/newton_floor.py)
    from brenier.ot.montecarlo import _nearest_targets

    rng = np.random.default_rng(0)
    y = np.vstack([rng.uniform(-1, 1, (150, 3)) * [1, 1, 0.02], [0.0, 1.5, 0.3] + rng.uniform(0, 1, (50, 3)) * [0.02, 0.01, 1e-4]])
    nb = _nearest_targets(torch.from_numpy(y))
    assert nb.shape == (200, 8) and not (nb == torch.arange(200)[:, None]).any()
    assert (nb[150:] >= 150).all()                                 # the cluster's neighbours are the cluster
    res = {}
    for lf, ls in ((False, False), (True, False), (False, True)):
        ot = SemiDiscreteOT(UniformBall(3), method="newton", tol=0.02, device="cpu", seed=0,
                            solver_options={"local_floor": lf, "max_iter": 25, "line_search": ls}).fit(y)
        res[lf, ls] = 0.5 * float(np.abs(np.asarray(ot.cell_masses(n_samples=400_000, seed=7)) - 1 / 200).sum())
    # without the energy line search: measured 0.015 (11 steps) vs 0.31 (36 cells empty)
    assert res[True, False] < 0.04 < res[False, False], res
    # the line search alone also stops the overshoot (measured 0.016 with the global floor)
    assert res[False, True] < 0.04, res


def test_energy_line_search_halves_an_overlong_step_and_keeps_a_good_one():
    # the Newton direction scaled 8x too long: the energy along it falls as the step is halved,
    # back to about the right length; the right length itself is kept (no halving)
    from brenier.ot.montecarlo import _energy_line_search, batch_stats, _laplacian_solve

    y = torch.from_numpy(_targets(300, 6))
    nu = torch.full((300,), 1 / 300, dtype=torch.float64)
    src = UniformBall(6)
    h = torch.from_numpy(np.random.default_rng(3).normal(0, 0.05, 300))
    pot = BrenierPotential(y, h)
    st = batch_stats(pot, src, 200_000, seed=0, pairs=True)
    g = st.counts.double() / st.n_samples - nu
    delta = _laplacian_solve(st, g, 300)
    t_long, halvings = _energy_line_search(pot, src, h, 8 * delta, nu, 1.0, seed=5, quasi=True, n_samples=1 << 15)
    assert halvings >= 2 and t_long <= 0.25
    assert torch.equal(pot.heights.double().cpu(), h)  # the potential is left at h

    def tv_at(hh):
        pot.set_heights(hh)
        c = batch_stats(pot, src, 400_000, seed=9).counts.double() / 400_000
        return float(0.5 * (c - nu).abs().sum())

    tv0, tv_ls, tv_full = tv_at(h), tv_at(h - t_long * 8 * delta), tv_at(h - 8 * delta)
    assert tv_ls < tv0 and tv_ls < tv_full, (tv0, tv_ls, tv_full)
    t_one, h1 = _energy_line_search(pot, src, h, delta * 0.01, nu, 1.0, seed=5, quasi=True, n_samples=1 << 15)
    assert (t_one, h1) == (1.0, 0)  # a short step along a descent direction: the energy still falls at full length


def test_line_search_is_validated_and_can_be_switched_off():
    y = _targets(200, 8)
    with pytest.raises(ValueError, match="line_search"):
        SemiDiscreteOT(UniformBall(8), method="newton", tol=0.1, device="cpu", solver_options={"line_search": 1}).fit(y)
    hist = {}
    for ls in (True, False):
        ot = SemiDiscreteOT(UniformBall(8), method="newton", tol=0.05, device="cpu", seed=0,
                            solver_options={"line_search": ls}).fit(y)
        assert ot.converged_
        hist[ls] = ot.n_iter_
    assert hist[True] <= hist[False] + 1, hist
