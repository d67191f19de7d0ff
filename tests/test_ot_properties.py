"""Property-based tests (Hypothesis) of the OT invariants on random and adversarial targets:
cell masses sum to 1, the map is monotone, translating or scaling the targets moves the map
with them (the same cells), and exact and Monte Carlo masses agree within the noise floor."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brenier import ConvergenceWarning, SemiDiscreteOT
from brenier.ot import montecarlo
from brenier.ot.power_diagram import power_diagram
from brenier.sources import UniformBall, UniformBox

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def target_sets(draw, d: int = 2, n_min: int = 3, n_max: int = 40):
    """(N, d) distinct targets: plain Gaussian, a far offset, a huge or tiny scale, two clusters of
    very different widths, points on a line, or one outlier."""
    n = draw(st.integers(n_min, n_max))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["plain", "offset", "scale", "clusters", "line", "outlier"]))
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, d))
    if kind == "offset":
        y += draw(st.sampled_from([1e3, -1e5, 1e6]))
    elif kind == "scale":
        y *= draw(st.sampled_from([1e-4, 1e4]))
    elif kind == "clusters":
        k = max(1, n // 2)
        y[:k] = 3 + 1e-2 * y[:k]
    elif kind == "line":
        y = np.outer(rng.normal(size=n), rng.normal(size=d)) + 1e-9 * rng.normal(size=(n, d))
    elif kind == "outlier":
        y[0] = 1e3
    y = np.unique(y, axis=0)
    if len(y) < 2:
        y = np.r_[y, y[:1] + 1.0]
    return y


def _fit(source, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SemiDiscreteOT(source, device="cpu", **kw).fit(y)


@FAST
@given(y=target_sets(), seed=st.integers(0, 1000))
def test_exact_cell_masses_sum_to_one_for_any_heights(y, seed):
    """The power cells partition the source: their masses sum to 1, whatever the heights."""
    h = np.random.default_rng(seed).normal(size=len(y)) * float(np.abs(y).max())
    pd = power_diagram(y, h, UniformBox(2).as_polygon())
    assert (pd.masses >= 0).all()
    assert pd.masses.sum() == pytest.approx(1.0, abs=1e-9)


@FAST
@given(y=target_sets(d=3), seed=st.integers(0, 1000))
def test_monte_carlo_masses_sum_to_one(y, seed):
    ot = _fit(UniformBall(3), y, method="newton", max_iter=1, seed=seed)
    m = ot.cell_masses(n_samples=5000, seed=seed)
    assert (m >= 0).all() and m.sum() == pytest.approx(1.0, abs=1e-12)


@FAST
@given(y=target_sets(), seed=st.integers(0, 1000))
def test_the_map_is_monotone(y, seed):
    """T = grad u_h with u_h convex: <T(x) - T(x'), x - x'> >= 0 for every pair."""
    ot = _fit(UniformBox(2), y, method="exact", max_iter=3)
    rng = np.random.default_rng(seed)
    x, x2 = rng.uniform(-1, 1, size=(2, 500, 2))
    t, t2 = ot.transport(x), ot.transport(x2)
    inner = ((t - t2) * (x - x2)).sum(axis=1)
    scale = np.abs(t - t2).sum(axis=1) * np.abs(x - x2).sum(axis=1)
    assert (inner >= -1e-9 * scale).all()


def _same_cells(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@FAST
@given(y=target_sets(n_max=25, n_min=4), c=st.tuples(st.sampled_from([-1e5, -3.0, 0.5, 1e4]), st.floats(-1e3, 1e3)),
       s=st.sampled_from([1e-3, 0.5, 7.0, 1e3]))
def test_translating_or_scaling_the_targets_moves_the_map_with_them(y, c, s):
    """T for y + c is T + c and for s y (s > 0) it is s T: the same cells, heights equal up to a
    constant (translation) or scaled by s (scaling)."""
    base = _fit(UniformBox(2), y, method="exact")
    x = UniformBox(2).sample(3000, seed=5).double().numpy()
    cell = base.assign(x)
    c = np.asarray(c)
    moved = _fit(UniformBox(2), y + c, method="exact")
    scaled = _fit(UniformBox(2), s * y, method="exact")
    # the conditioned problems are the same up to the rounding of y + c and s y: a point whose
    # top-2 gap is below that rounding may change cells, nothing else
    assert _same_cells(moved.assign(x), cell) > 0.995
    assert _same_cells(scaled.assign(x), cell) > 0.995
    same = moved.assign(x) == cell
    np.testing.assert_allclose(moved.transport(x)[same], base.transport(x)[same] + c, rtol=1e-9, atol=1e-9 * np.abs(c).max())
    same = scaled.assign(x) == cell
    np.testing.assert_allclose(scaled.transport(x)[same], s * base.transport(x)[same], rtol=1e-12)
    if base.converged_ and moved.converged_ and scaled.converged_:
        # heights: the same up to a constant (translation), times s (scaling); tolerance set by the
        # solver's tolerance on the masses times the typical score scale
        tol = 1e-6 * max(1.0, float(np.abs(base.heights_).max()))
        dh = moved.heights_ - base.heights_
        assert np.ptp(dh) <= tol * max(1.0, float(np.abs(c).max()))
        ds = scaled.heights_ - s * base.heights_
        assert np.ptp(ds) <= s * tol


@FAST
@given(y=target_sets(n_min=5, n_max=30), seed=st.integers(0, 1000))
def test_exact_and_monte_carlo_masses_agree_within_the_noise_floor(y, seed):
    """Masses of the exactly solved cells, estimated from M i.i.d. samples: their TV from nu stays
    within a few noise floors 0.4 sqrt(N / M)."""
    ot = _fit(UniformBox(2), y, method="exact")
    if not ot.converged_:
        return  # an adversarial case the exact solver did not finish is covered elsewhere
    n_samples = 40_000
    m = montecarlo.estimate_masses(ot._potential, UniformBox(2), n_samples, seed=seed, quasi=False).cpu()
    nu = torch.as_tensor(ot._unique_weights)
    tv = 0.5 * float((m - nu).abs().sum())
    floor = montecarlo.noise_floor(nu, n_samples)
    assert tv <= 3 * floor + 1e-12


@settings(max_examples=300, deadline=None)
@given(batch=st.integers(1 << 14, 1 << 26), e=st.floats(1e-4, 1.0), f=st.floats(1e-4, 0.5), tol=st.floats(0.005, 0.1),
       trusted=st.booleans())
def test_planned_batch_is_bounded_and_aims_at_the_tolerance(batch, e, f, tol, trusted):
    """The late-phase batch plan of the fresh-sample Newton fit: at most doubling (4x once a step
    landed as predicted); where the step is predicted to land within the tolerance, the verdict
    batch certifies it (floor CERTIFY × tol, unless capped); else the next step is planned to land
    within LAND × tol."""
    nxt = montecarlo.plan_batch(batch, e, f, tol, trusted=trusted)
    predicted = montecarlo.predicted_landing(e, f)
    cap = (4 if trusted else 2) * batch
    assert predicted == pytest.approx(math.sqrt(montecarlo.STEP_MODEL / (1 / e**2 + 1 / f**2)))
    floor_next = f * math.sqrt(batch / nxt)  # the floor scales like 1 / sqrt(M)
    if predicted <= montecarlo.LAND * tol:  # the next evaluation is the verdict
        assert batch // 2 <= nxt <= 2 * batch
        ideal = f * f * batch / (montecarlo.CERTIFY * tol) ** 2
        if batch / 2 < ideal < 2 * batch:
            assert montecarlo.CERTIFY * tol * (1 - 1e-3) <= floor_next <= montecarlo.CERTIFY * tol * (1 + 1e-9)
    else:
        assert batch <= nxt <= cap
        after = montecarlo.predicted_landing(predicted, floor_next)
        if nxt < cap:  # not capped: the next step lands within LAND × tol
            assert after <= montecarlo.LAND * tol * (1 + 1e-6)


def test_planned_batches_on_the_measured_60k_path():
    """The 60,000-code MNIST fit (tolerance 0.028) doubled 3.8e6 (e 0.065) -> 7.7e6 (0.0435) ->
    1.5e7 (0.0298, over) -> 1.5e7. Once a step has landed as predicted, the plan jumps to the
    batch that lands the next step within the tolerance, then certifies it."""
    nxt = montecarlo.plan_batch(3_840_000, 0.0653, 0.0483, 0.028, trusted=True)
    assert 1.2e7 < nxt < 1.4e7
    floor = 0.0483 * math.sqrt(3_840_000 / nxt)
    # the step from 3.8e6 lands near its prediction; the step from the planned batch within the tolerance
    landed = montecarlo.predicted_landing(montecarlo.predicted_landing(0.0653, 0.0483), floor)
    assert landed <= montecarlo.LAND * 0.028 * (1 + 1e-6)
    verdict = montecarlo.plan_batch(nxt, landed, floor, 0.028)
    assert 1.2e7 < verdict < 1.4e7
    # untrusted (early), the same state only doubles
    assert montecarlo.plan_batch(3_840_000, 0.0653, 0.0483, 0.028) == 7_680_000
    # far from the tolerance the plan is the plain doubling, trusted or not
    assert montecarlo.plan_batch(960_000, 0.434, 0.0814, 0.028) == 1_920_000
    # a degenerate floor falls back to doubling
    assert montecarlo.plan_batch(1000, 0.1, 0.0, 0.03) == 2000
    assert math.isnan(montecarlo.predicted_landing(0.1, math.nan))
