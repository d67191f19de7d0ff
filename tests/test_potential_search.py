"""The exact searches behind BrenierPotential (tiled, pruned, auto) against the brute-force reference.

Scores are float32; MKL rounds a pair's score differently depending on its place in a block (column
alignment), so where two scores are within float32 rounding of each other the paths may legitimately
pick different targets. The random-data tests therefore require identical indices except at such
near-ties (checked in float64), and identical values up to rounding; the tie tests use small integers,
for which every path's arithmetic is exact, and require bitwise identity.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import brenier.ot.potential as potential
from brenier.ot import fused
from brenier.ot.potential import BrenierPotential, voronoi_heights

needs_fused = pytest.mark.skipif(not fused.available(), reason=f"fused kernel unavailable: {fused.unavailable_reason()}")
FUSED = pytest.param("fused", marks=needs_fused)


def _ball(m, d, seed, radius=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g)
    return radius * x / x.norm(dim=1, keepdim=True) * torch.rand(m, 1, generator=g) ** (1 / d)


def _targets(kind, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        y = torch.randn(n, d, generator=g)
    elif kind == "clustered":
        centers = 4 * torch.randn(12, d, generator=g)
        y = centers[torch.randint(0, 12, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    elif kind == "far":  # every target far from the source ball, in one direction
        y = torch.randn(n, d, generator=g) + 40.0
    else:
        raise AssertionError(kind)
    return y / y.norm(dim=1).max()


def _heights(kind, y, seed):
    if kind == "voronoi":
        return voronoi_heights(y, torch.zeros(y.shape[1]), 1.0)
    g = torch.Generator().manual_seed(seed)
    return 0.05 * torch.randn(y.shape[0], generator=g, dtype=torch.float64)


def _assert_same_argmax(pot, ref, x):
    """Indices identical except at float32 near-ties (both targets' float64 scores within rounding)."""
    v, i = pot.argmax(x)
    rv, ri = ref.argmax(x)
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    bad = (i != ri).nonzero().squeeze(1)
    if bad.numel():
        y, h = ref.targets.double(), ref.heights
        xb = x[bad].double()
        s1 = (xb * y[i[bad]]).sum(1) + h[i[bad]]
        s2 = (xb * y[ri[bad]]).sum(1) + h[ri[bad]]
        assert bool(((s1 - s2).abs() <= 1e-5).all()), f"{bad.numel()} rows differ beyond rounding"
    assert bad.numel() <= max(1, x.shape[0] // 1000)
    return i


@pytest.mark.parametrize("search", ["tiled", "pruned", FUSED])
@pytest.mark.parametrize("kind", ["gaussian", "clustered", "far"])
@pytest.mark.parametrize("hkind", ["voronoi", "random"])
def test_argmax_and_topk_match_brute_force(search, kind, hkind):
    d = 5 if kind == "gaussian" else 8
    y = _targets(kind, 1500, d, seed=1)
    h = _heights(hkind, y, seed=2)
    x = _ball(600, d, seed=3)
    ref = BrenierPotential(y, h, search="brute")
    pot = BrenierPotential(y, h, search=search, seed=0)
    _assert_same_argmax(pot, ref, x)
    v, i = pot.topk(x, 3)
    rv, ri = ref.topk(x, 3)
    torch.testing.assert_close(v, rv, rtol=1e-6, atol=1e-6)
    # indices equal except at float32 near-ties: there the float64 scores of both picks agree
    bad = i != ri
    s64 = x.double() @ y.double().T + h.double()
    gap = (s64.gather(1, i) - s64.gather(1, ri)).abs()
    assert bool((gap[bad] <= 1e-5).all()) and bad.float().mean() < 0.002


def test_pruned_skips_work_on_clustered_targets_and_counts_it():
    y = _targets("clustered", 4000, 4, seed=5)
    h = voronoi_heights(y, torch.zeros(4), 1.0)
    x = _ball(2000, 4, seed=6)
    pot = BrenierPotential(y, h, search="pruned", n_groups=64)
    _assert_same_argmax(pot, BrenierPotential(y, h, search="brute"), x)
    groups = pot._index.n_groups
    assert pot.bound_evaluations == 2000 * groups  # one bound per sample and group
    pairs = pot.evaluations - pot.bound_evaluations
    assert 0 < pairs < 0.5 * 2000 * 4000  # at least the best group per sample, far fewer than all
    pot.reset_count()
    assert pot.evaluations == pot.bound_evaluations == 0


def test_brute_and_tiled_count_every_pair():
    y = _targets("gaussian", 500, 3, seed=0)
    for search in ("brute", "tiled") + (("fused",) if fused.available() else ()):
        pot = BrenierPotential(y, torch.zeros(500), search=search)
        pot.argmax(_ball(70, 3, seed=1))
        pot.topk(_ball(30, 3, seed=2), 2)
        assert pot.evaluations == 100 * 500


def test_heights_changed_after_the_index_is_built():
    y = _targets("clustered", 3000, 6, seed=7)
    x = _ball(1000, 6, seed=8)
    pot = BrenierPotential(y, voronoi_heights(y, torch.zeros(6), 1.0), search="pruned")
    pot.argmax(x)
    index = pot._index
    for seed in (9, 10):
        g = torch.Generator().manual_seed(seed)
        h = voronoi_heights(y, torch.zeros(6), 1.0) + 0.3 * torch.randn(3000, generator=g, dtype=torch.float64)
        pot.set_heights(h)
        assert pot._index is index  # the grouping stays; the height envelopes were refreshed
        _assert_same_argmax(pot, BrenierPotential(y, h, search="brute"), x)
        tv, ti = pot.topk(x, 4)
        rv, ri = BrenierPotential(y, h, search="brute").topk(x, 4)
        torch.testing.assert_close(tv, rv, rtol=1e-6, atol=1e-6)


def _lexi_topk(s: np.ndarray, k: int):
    """Reference: value descending, index ascending among equal values."""
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("search", ["brute", "tiled", "pruned", FUSED])
def test_exact_ties_go_to_the_lowest_index(search):
    # small integers: every score is exact in float32, ties are real; duplicated targets tie everywhere
    g = torch.Generator().manual_seed(11)
    base = torch.randint(-3, 4, (400, 3), generator=g).float()
    # (4500, 3): every row many times over, so ties straddle tiles (2048 columns), strips and groups
    y = base[torch.randint(0, 400, (4500,), generator=g)]
    h = torch.randint(-2, 3, (4500,), generator=g).double()
    x = torch.randint(-2, 3, (150, 3), generator=g).float()
    s = (x.double() @ y.double().T + h).numpy()
    pot = BrenierPotential(y, h, search=search, n_groups=17)
    v, i = pot.argmax(x)
    assert np.array_equal(i.numpy(), s.argmax(1))  # numpy: first occurrence of the maximum
    assert np.array_equal(v.double().numpy(), s.max(1))
    for k in (1, 2, 5):
        v, i = pot.topk(x, k)
        rv, ri = _lexi_topk(s, k)
        assert np.array_equal(i.numpy(), ri)
        assert np.array_equal(v.double().numpy(), rv)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(1, 12), st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_pruned_equals_brute_on_small_integer_problems(n, d, n_groups, seed, k):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(-4, 5, (n, d), generator=g).float()
    h = torch.randint(-3, 4, (n,), generator=g).double()
    x = torch.randint(-3, 4, (40, d), generator=g).float()
    pot = BrenierPotential(y, h, search="pruned", n_groups=min(n_groups, n), seed=seed)
    ref = BrenierPotential(y, h, search="brute")
    assert torch.equal(pot.argmax(x)[1], ref.argmax(x)[1])
    pv, pi = pot.topk(x, k)
    rv, ri = ref.topk(x, k)
    assert torch.equal(pi, ri) and torch.equal(pv, rv)


def test_auto_probes_and_stays_exact(monkeypatch):
    monkeypatch.setattr(potential, "AUTO_MIN_TARGETS", 100)
    monkeypatch.setattr(potential, "PROBE_ROWS", 256)
    y = _targets("clustered", 2000, 4, seed=12)
    h = voronoi_heights(y, torch.zeros(4), 1.0)
    pot = BrenierPotential(y, h)  # search="auto"
    x = _ball(1000, 4, seed=13)
    _assert_same_argmax(pot, BrenierPotential(y, h, search="brute"), x)
    assert pot.last_probe is not None and pot.last_probe["choice"] in ("pruned", "tiled", "fused")
    assert pot.last_probe["rows"] == 256 and 0 < pot.last_probe["work_share"] < 1.5
    pot.set_heights(h + 0.01)
    assert pot._choice is None  # new heights: probe again at the next large query
    small = BrenierPotential(y[:50], h[:50])
    small.argmax(x)
    assert small.evaluations == 1000 * 50 and small._index is None  # small N: tiled, no index


def test_blocks_budget_and_empty_input():
    y = _targets("clustered", 1500, 3, seed=14)
    h = voronoi_heights(y, torch.zeros(3), 1.0)
    x = _ball(700, 3, seed=15)
    ref_i = BrenierPotential(y, h, search="brute").argmax(x)[1]
    for search in ("tiled", "pruned") + (("fused",) if fused.available() else ()):
        pot = BrenierPotential(y, h, search=search, memory_budget=2**15)  # tiny tiles and chunks
        i = _assert_same_argmax(pot, BrenierPotential(y, h, search="brute"), x)
        assert (i == ref_i).all()
        _, i2 = pot.argmax(iter(x.split(123)))
        assert torch.equal(i2, i)
        v, i3 = pot.topk(x[:0], 2)
        assert v.shape == (0, 2) and i3.shape == (0, 2)
        assert pot.argmax(x[:0])[1].shape == (0,)
    for search in ("pruned",) + (("fused",) if fused.available() else ()):  # k capped at N (fused: k > MAX_K runs tiled)
        v, i = BrenierPotential(y[:100], h[:100], search=search).topk(x, 5000)
        assert v.shape == (700, 100) and torch.equal(i, BrenierPotential(y[:100], h[:100], search="brute").topk(x, 100)[1])


def test_bad_input():
    y = torch.randn(50, 3)
    h = torch.zeros(50)
    with pytest.raises(ValueError, match="search"):
        BrenierPotential(y, h, search="fast")
    with pytest.raises(ValueError, match="n_groups"):
        BrenierPotential(y, h, n_groups=0)
    with pytest.raises(ValueError, match="heights"):
        BrenierPotential(y, torch.full((50,), float("nan")))
    with pytest.raises(TypeError, match="targets"):
        BrenierPotential(y.numpy(), h)
    pot = BrenierPotential(y, h)
    with pytest.raises(ValueError, match="heights"):
        pot.set_heights(torch.zeros(49))
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        pot.argmax(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="finite"):
        pot.argmax(torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="k"):
        pot.topk(torch.zeros(4, 3), 0)
    with pytest.raises(TypeError, match="k"):
        pot.topk(torch.zeros(4, 3), 1.5)
