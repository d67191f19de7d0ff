"""Singular set, modes, crossings and boundary distance (brenier.singular)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from brenier.datasets import toy
from brenier.ot import SemiDiscreteOT
from brenier.singular import SingularSet, cell_walk
from brenier.sources import UniformBall, UniformBox

warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")


@pytest.fixture(scope="module")
def square():
    d = toy("square", 300, seed=2)
    ot = SemiDiscreteOT(UniformBall(2), method="exact").fit(d.points)
    return d, ot, ot.singular_set()


def _cell_centroid(ot, i: int) -> np.ndarray:
    cell = ot.power_diagram().cells()[i]
    return np.asarray(cell.centroid.coords[0])


def test_ring8_modes_and_facets_match_ground_truth(ring):
    d, ot, S = ring
    assert isinstance(S, SingularSet) and ot.singular_set_ is S
    E = len(S.adjacency)
    assert S.adjacency.shape == (E, 2) and S.adjacency.dtype == np.int64
    assert S.angles.shape == (E,) and np.all((S.angles >= 0) & (S.angles < np.pi))
    assert S.modes.shape == (400,) and S.n_modes == 8
    # every facet between two Gaussians is singular; almost none inside one (each is convex)
    cross = d.labels[S.adjacency[:, 0]] != d.labels[S.adjacency[:, 1]]
    assert cross.any() and np.all(S.singular[cross])
    assert np.sum(S.singular & ~cross) <= 0.1 * cross.sum()
    assert S.facets.shape == (S.n_facets, 2) and S.n_facets == int(S.singular.sum())
    # modes are the true components up to relabelling
    table = np.zeros((8, 8), dtype=int)
    np.add.at(table, (S.modes, d.labels), 1)
    assert np.all((table > 0).sum(axis=1) == 1) and np.all((table > 0).sum(axis=0) == 1)
    np.testing.assert_array_equal(S.mode_of(d.points), S.modes)


def test_angles_are_those_of_the_supporting_planes(ring):
    _, _, S = ring
    i, j = S.adjacency[0]
    a, b = np.r_[S.targets[i], -1.0], np.r_[S.targets[j], -1.0]
    expect = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert S.angles[0] == pytest.approx(expect, abs=1e-12)


def test_one_convex_mode_has_empty_singular_set(square):
    _, ot, S = square
    assert S.n_modes == 1 and S.n_facets == 0 and S.facets.shape == (0, 2)
    assert np.all(np.isinf(ot.boundary_distance(np.zeros((3, 2)))))
    assert len(ot.crossings(np.array([[-0.9, 0.0], [0.9, 0.1]]))) == 0


def test_sampled_adjacency_agrees_with_exact(ring):
    d, ot, S = ring
    Ss = ot.singular_set(adjacency="sampled", n_samples=40_000, seed=3)
    assert not Ss.exact and Ss.n_modes == 8
    exact = {tuple(p) for p in S.adjacency.tolist()}
    found = np.array([tuple(p) in exact for p in Ss.adjacency.tolist()])
    assert found.mean() > 0.97            # near-tie pairs are true neighbours
    assert len(Ss.adjacency) > 0.8 * len(S.adjacency)
    ot.singular_set()                     # restore the exact one for the other tests


def test_monte_carlo_solver_gives_the_same_modes():
    d = toy("moons", 150, seed=4)
    ot = SemiDiscreteOT(UniformBall(2), method="newton", tol=0.08, seed=0).fit(d.points)
    S = ot.singular_set(adjacency="sampled")
    assert S.n_modes == 2
    table = np.zeros((2, 2), dtype=int)
    np.add.at(table, (S.modes, d.labels), 1)
    assert (table > 0).sum() == 2


def test_angle_criterion_by_hand(ring):
    _, ot, S = ring
    cut = float(np.quantile(S.angles, 0.5))
    Sa = ot.singular_set(threshold=cut, criterion="angle")
    np.testing.assert_array_equal(Sa.singular, Sa.angles > cut)
    ot.singular_set()


def test_crossings_between_modes_and_within_one(ring):
    d, ot, S = ring
    centres = np.array([[np.cos(t), np.sin(t)] for t in 2 * np.pi * np.arange(8) / 8])
    near = [int(np.argmin(np.linalg.norm(S.targets - c, axis=1))) for c in centres]
    a, b = _cell_centroid(ot, near[0]), _cell_centroid(ot, near[3])
    path = np.linspace(a, b, 40)
    k = ot.crossings(path)
    assert k.dtype == np.int64 and len(k) >= 1
    # within one mode: from the central cell of Gaussian 0 to the cell of its nearest target
    i = near[0]
    others = np.flatnonzero((S.modes == S.modes[i]) & (np.arange(len(S.modes)) != i))
    j = others[np.argmin(np.linalg.norm(S.targets[others] - S.targets[i], axis=1))]
    cells, _ = cell_walk(ot, torch.tensor(_cell_centroid(ot, i)), torch.tensor(_cell_centroid(ot, j)))
    assert all(S.modes[c] == S.modes[i] for c in cells)
    assert len(ot.crossings(np.linspace(_cell_centroid(ot, i), _cell_centroid(ot, j), 10))) == 0
    # torch in, torch out
    assert isinstance(ot.crossings(torch.tensor(path)), torch.Tensor)


def test_cell_walk_matches_dense_assignment(ring):
    _, ot, _ = ring
    a, b = torch.tensor([-0.7, -0.2], dtype=torch.float64), torch.tensor([0.6, 0.5], dtype=torch.float64)
    cells, entries = cell_walk(ot, a, b)
    t = np.linspace(0, 1, 4001)
    dense = ot.assign((a[None] + torch.tensor(t)[:, None] * (b - a)[None]).numpy())
    runs = dense[np.r_[True, dense[1:] != dense[:-1]]]
    assert set(runs.tolist()) <= set(cells) and len(cells) >= len(runs)
    assert entries[0] == 0.0 and all(0 < e < 1 for e in entries[1:])


def test_boundary_distance(ring):
    d, ot, S = ring
    dist = ot.boundary_distance(np.zeros((1, 2)))
    assert dist.shape == (1,) and dist[0] >= 0
    # a point on a singular power edge is at distance 0; points deep in a mode are farther
    pd = ot.power_diagram()
    sel = np.isin(pd.adjacency[:, 0] * len(S.modes) + pd.adjacency[:, 1], S.pair_keys(regular=False))
    seg = pd.facet_segments[sel][np.argmax(pd.facet_lengths[sel])]
    mid = seg.mean(axis=0)
    assert ot.boundary_distance(mid[None])[0] < 1e-9
    x = UniformBall(2).sample(2000, seed=0).double().numpy()
    exact = ot.boundary_distance(x)
    assert np.all(exact >= 0) and exact.max() > 0.05
    # the any-d estimate (distance to the hyperplane of a singular facet of x's own cell) mostly agrees
    from brenier.singular import boundary_distance

    Sg = dataclasses.replace(S, exact=False)
    approx = boundary_distance(ot, x, Sg)
    fin = np.isfinite(approx)
    assert fin.mean() > 0.1
    assert np.mean(np.isclose(approx[fin], exact[fin], rtol=1e-3, atol=1e-9)) > 0.7


def test_bad_input():
    ot = SemiDiscreteOT(UniformBox(2))
    with pytest.raises(ValueError, match="fit"):
        ot.singular_set()
    with pytest.raises(ValueError, match="fit"):
        ot.crossings(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="fit"):
        ot.boundary_distance(np.zeros((2, 2)))


@pytest.mark.parametrize("kw", [dict(threshold=0.5), dict(threshold=-1.0), dict(threshold="big"),
                                dict(threshold=float("nan")), dict(threshold=4.0, criterion="angle"),
                                dict(threshold="auto", criterion="angle"), dict(criterion="foo"),
                                dict(adjacency="bar")])
def test_bad_threshold(ring, kw):
    _, ot, _ = ring
    with pytest.raises(ValueError, match="threshold|criterion|adjacency"):
        ot.singular_set(**kw)


def test_bad_paths(ring):
    _, ot, _ = ring
    with pytest.raises(ValueError, match="path"):
        ot.crossings(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="path"):
        ot.crossings(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="path"):
        ot.crossings(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="path"):
        ot.crossings(np.array([[0.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match="x"):
        ot.boundary_distance(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="threshold"):
        ot.singular_set(threshold=[2.0])


def test_cli_figure(tmp_path):
    from typer.testing import CliRunner

    from brenier.cli import app

    out = tmp_path / "ring.png"
    r = CliRunner().invoke(app, ["figure", "toy", "ring8", "--out", str(out), "--n", "300", "--n-gen", "500"])
    assert r.exit_code == 0, r.output
    assert out.exists() and out.stat().st_size > 10_000 and "8 mode(s)" in r.output
    r = CliRunner().invoke(app, ["figure", "toy", "nope", "--out", str(out)])
    assert r.exit_code == 2 and "unknown toy set" in r.output


# ------------------------------------------------------------------ gaps bridged by the kNN graph
def _segments(n_per: int = 100, gap: float = 5.0, d: int = 4, seed: int = 0):
    """Three pieces of one curve in R^d, point spacing h = 0.01, separated by gaps of ``gap`` × h:
    narrower than the radius of a 16-NN graph, so its edges bridge them."""
    rng = np.random.default_rng(seed)
    h = 0.01
    t = np.concatenate([np.arange(n_per) * h + s * (n_per - 1 + gap) * h for s in range(3)])
    y = np.zeros((len(t), d))
    y[:, 0], y[:, 1] = t, 0.3 * np.sin(2 * t)
    y[:, 2:] = 0.002 * rng.normal(size=(len(t), d - 2))
    y -= y.mean(0)
    return y / (1.2 * np.linalg.norm(y, axis=1).max()), np.repeat(np.arange(3), n_per)


def test_gap_cut_known_answers():
    from brenier.singular import gap_cut

    assert gap_cut(np.array([])) == np.inf
    assert gap_cut(np.array([2.7, 2.2, 2.1, 1.9, 1.4])) == np.inf        # smooth decay: one piece
    assert gap_cut(np.array([5.0, 4.5, 1.5, 1.3])) == pytest.approx(np.sqrt(4.5 * 1.5))
    assert gap_cut(np.array([3.0])) == pytest.approx(np.sqrt(3.0))       # against the sentinel p = 1


def test_gap_pieces_cut_the_bridges_and_nothing_else():
    from scipy.sparse.csgraph import connected_components

    from brenier.singular import gap_pieces, hop_graph, knn_hop_graph

    y, lab = _segments()
    assert connected_components(knn_hop_graph(y), directed=False)[0] == 1   # the kNN graph bridges the gaps
    pieces, bridges = gap_pieces(y)
    table = np.zeros((3, 3), dtype=int)
    np.add.at(table, (lab, np.unique(pieces, return_inverse=True)[1]), 1)
    assert (table > 0).sum() == 3 and len(bridges) > 0
    assert np.all(lab[bridges[:, 0]] != lab[bridges[:, 1]])
    assert connected_components(hop_graph(y), directed=False)[0] == 3
    # one connected piece (a 2-D square, a spiral): no persistent gap, the graph is the kNN graph
    for name in ("square", "spiral"):
        p = toy(name, 600, seed=0).points.astype(np.float64)
        assert len(gap_pieces(p)[1]) == 0
        assert (hop_graph(p) != knn_hop_graph(p)).nnz == 0


def test_sampled_singular_set_separates_bridged_pieces_for_any_seed():
    y, lab = _segments(80)
    ot = SemiDiscreteOT(UniformBall(4), method="newton", tol=0.3, seed=0, device="cpu").fit(y)
    for seed in (0, 1):
        S = ot.singular_set(seed=seed)
        assert S.n_modes == 3 and S.trusted
        assert (np.bincount(S.modes * 3 + lab) > 0).sum() == 3


def test_trusted(ring, square):
    _, _, S = ring
    assert S.trusted
    assert not square[2].trusted                                  # one mode
    split = S.modes.copy()
    big = S.modes == 0
    split[big & (S.targets[:, 0] > np.median(S.targets[big, 0]))] = S.n_modes   # cut a connected piece
    T = SingularSet(adjacency=S.adjacency, angles=S.angles, detour=S.detour, singular=S.singular,
                    modes=split, targets=S.targets)
    assert T.n_modes == S.n_modes + 1 and not T.trusted


def test_a_change_of_mode_is_a_crossing_even_where_the_sampled_adjacency_missed_the_facet(ring):
    # a sampled adjacency can miss facets; the modes are the pieces of the regular pairs, so a
    # facet between two modes is singular whether or not it was sampled
    import dataclasses

    from brenier.singular import crossings

    d, ot, S = ring
    missed = dataclasses.replace(S, adjacency=S.adjacency[~S.singular], angles=S.angles[~S.singular],
                                 detour=S.detour[~S.singular], singular=np.zeros((~S.singular).sum(), bool))
    assert missed.n_facets == 0 and missed.n_modes == S.n_modes
    a, b = S.facets[:, 0], S.facets[:, 1]
    assert S.separates(a, b).all() and missed.separates(a, b)[S.modes[a] != S.modes[b]].all()
    i, j = S.adjacency[~S.singular].T
    assert not missed.separates(i, j).any()                      # regular pairs stay regular
    path = np.linspace([-0.8, 0.0], [0.8, 0.0], 40)
    np.testing.assert_array_equal(crossings(ot, path, missed), crossings(ot, path, S))


# ------------------------------------------------------------ the approximate path test (scale)
def _hairpin(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(y (n + 400, d), pairs (P, 2)): a thin hairpin (two parallel arms 1 apart, length 5, joined by
    a half circle) plus two Gaussian blobs far away, in R^d; the pairs join each point to a few of
    its 8th-20th nearest neighbours (detours near 1), the two arms across the hairpin's gap
    (detours from 1.6 to 11: path round the bend over the straight distance 1) and the blobs to
    each other and to the arms (no path)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 10 + np.pi * 0.5, n)                   # arc length along the hairpin
    xy = np.where((s < 5)[:, None], np.c_[5 - s, np.zeros(n)],
                  np.where((s < 5 + np.pi * 0.5)[:, None],
                           np.c_[-0.5 * np.sin((s - 5) / 0.5), 0.5 - 0.5 * np.cos((s - 5) / 0.5)],
                           np.c_[s - 5 - np.pi * 0.5, np.ones(n)]))
    y = np.zeros((n + 400, d))
    y[:n, :2] = xy
    y[:n] += 0.02 * rng.normal(size=(n, d))
    y[n:n + 200] = rng.normal(size=(200, d)) * 0.3 + 20.0
    y[n + 200:] = rng.normal(size=(200, d)) * 0.3 - 20.0
    _, nb = cKDTree(y).query(y, k=21)
    pick = nb[np.arange(len(y))[:, None], rng.integers(8, 21, size=(len(y), 3))]
    local = np.stack([np.repeat(np.arange(len(y)), 3), pick.reshape(-1)], axis=1)
    arm_a, arm_b = np.flatnonzero(s < 5), np.flatnonzero(s > 5 + np.pi * 0.5)
    a = rng.choice(arm_a, 150)
    b = arm_b[np.argmin(np.abs(y[arm_b, 0][None, :] - y[a, 0][:, None]), axis=1)]
    far = np.stack([rng.integers(n, n + 200, 20), rng.integers(n + 200, n + 400, 20)], axis=1)
    pairs = np.sort(np.r_[local, np.c_[a, b], far, np.c_[rng.integers(0, n, 20), rng.integers(n, n + 400, 20)]], axis=1)
    return y, np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_approximate_detours_agree_with_exact(seed):
    from brenier import singular as sg

    y, adj = _hairpin(1200, 4, seed)
    g = sg.hop_graph(y)
    exact = sg.detour_ratios(y, adj, sg.KAPPA_MAX, graph=g, method="exact")
    approx, searched = sg.detour_ratios(y, adj, sg.KAPPA_MAX, graph=g, method="approx", seed=seed, return_searched=True)
    local = exact <= sg.KAPPA_LOCAL
    assert local.mean() > 0.5 and (np.isfinite(exact) & ~local).sum() > 10   # both regimes are exercised
    np.testing.assert_allclose(approx[local], exact[local], rtol=1e-12)     # exact inside the local radius
    assert np.all(approx >= exact * (1 - 1e-12))                            # never below: a real path
    assert np.all(approx[~np.isfinite(exact)] == np.inf)                    # never a path where none is
    # refined at kappa, the ratios up to kappa are the exact ones, so the labels at kappa too
    for kappa in (3.0, 5.0):
        assert sg.refine_detours(y, adj, approx, searched, kappa, g) > 0
        np.testing.assert_array_equal(approx <= kappa, exact <= kappa)
        np.testing.assert_allclose(approx[exact <= kappa], exact[exact <= kappa], rtol=1e-12)
        assert np.all(approx >= exact * (1 - 1e-12))
        assert sg.refine_detours(y, adj, approx, searched, kappa, g) == 0  # nothing left to search
    # and the rule's modes at the exact test's kappa agree
    from sklearn.metrics import adjusted_rand_score

    ke = sg.auto_kappa(y, adj, exact)
    sg.refine_detours(y, adj, approx, searched, ke, g)
    me = sg._attach_isolated(y, adj, sg._components(len(y), adj[exact <= ke]))
    ma = sg._attach_isolated(y, adj, sg._components(len(y), adj[approx <= ke]))
    assert adjusted_rand_score(me, ma) == 1.0


def _two_arms(n: int, seed: int):
    """The hairpin's pairs less those near the bend and the cross-gap pairs outside x in [1, 3]:
    the two arms are then joined only by facets with detours 3.6-7.6 (path round the bend), so
    the mode count drops from 3 to 2 inside auto kappa's grid, above the local search's 2.5."""
    y, adj = _hairpin(n, 4, seed)
    arm = np.where(y[:, 1] > 0.5, 1, 0)
    arm[n:] = -1
    x = y[:, 0]
    bend = (np.arange(len(y)) < n) & (x < 0.3)
    keep = ~bend[adj[:, 0]] & ~bend[adj[:, 1]]
    cross = (arm[adj[:, 0]] >= 0) & (arm[adj[:, 1]] >= 0) & (arm[adj[:, 0]] != arm[adj[:, 1]])
    mid = (x[adj[:, 0]] > 1.0) & (x[adj[:, 1]] > 1.0) & (x[adj[:, 0]] < 3.0) & (x[adj[:, 1]] < 3.0)
    return y, adj[keep & (~cross | mid)]


@pytest.mark.parametrize("seed,pairs", [(0, "hairpin"), (1, "hairpin"), (0, "two arms"), (1, "two arms")])
def test_auto_kappa_from_partial_detours_is_the_exact_tests(seed, pairs, monkeypatch):
    # auto kappa needs exact mode counts over its whole grid; with detours known only up to 2.5
    # it searches just the pairs that bridge two components, and must land where the fully exact
    # detours land, with the same labels and modes, after searching fewer pairs than all of them
    from brenier import singular as sg
    from brenier.singular_classes import rethreshold

    y, adj = _hairpin(1200, 4, seed) if pairs == "hairpin" else _two_arms(1200, seed)
    g = sg.hop_graph(y)
    exact = sg.detour_ratios(y, adj, sg.KAPPA_MAX, graph=g, method="exact")
    ke = sg.auto_kappa(y, adj, exact)
    bridged = []
    refine = sg.refine_detours
    monkeypatch.setattr(sg, "refine_detours", lambda *a, **k: bridged.append(k.get("mask") is not None) or refine(*a, **k))
    det, searched, ka = sg._detours_at(y, adj, g, "auto", sg.DEFAULT_KAPPA, "approx", seed)
    monkeypatch.undo()
    assert ka == ke
    if pairs == "two arms":   # the counts above 2.5 needed the bridging facets searched
        assert ke > sg.KAPPA_LOCAL and any(bridged)
    np.testing.assert_array_equal(det > ka, exact > ke)
    np.testing.assert_array_equal(sg._attach_isolated(y, adj, sg._components(len(y), adj[det <= ka])),
                                  sg._attach_isolated(y, adj, sg._components(len(y), adj[exact <= ke])))
    known = det <= searched                          # the invariant: exact up to searched ...
    np.testing.assert_allclose(det[known], exact[known], rtol=1e-12)
    assert np.all(exact[~known] > searched[~known] * (1 - 1e-12)) and np.all(det >= exact * (1 - 1e-12))
    left = np.isfinite(exact) & (exact > sg.KAPPA_LOCAL)
    assert left.sum() > 10 and np.sum(searched[left] >= sg.KAPPA_MAX) < left.sum()   # ... and fewer searches
    # rethreshold searches what another kappa needs, on copies
    S = sg.SingularSet(adjacency=adj, angles=sg.facet_angles(y, adj), detour=det, singular=det > ka,
                       modes=sg._attach_isolated(y, adj, sg._components(len(y), adj[det <= ka])), targets=y,
                       threshold=ka, searched=searched, _graph=g)
    before = (det.copy(), searched.copy())
    for kappa in (3.0, 6.0):
        R = rethreshold(S, kappa)
        np.testing.assert_array_equal(R.singular, exact > kappa)
        me = sg._attach_isolated(y, adj, sg._components(len(y), adj[exact <= kappa]))
        np.testing.assert_array_equal(R.modes, me)
    np.testing.assert_array_equal(S.detour, before[0])
    np.testing.assert_array_equal(S.searched, before[1])


def test_landmark_bounds_bracket_the_distance():
    from scipy.sparse.csgraph import dijkstra

    from brenier.singular import hop_graph, landmark_bounds

    y, pairs = _hairpin(600, 3, 3)
    g = hop_graph(y)
    lo, hi = landmark_bounds(g, pairs, n_landmarks=16, seed=0)
    true = dijkstra(g, directed=False, indices=np.unique(pairs[:, 0]))
    row = np.searchsorted(np.unique(pairs[:, 0]), pairs[:, 0])
    d = true[row, pairs[:, 1]]
    fin = np.isfinite(d)
    assert np.all(lo[fin] <= d[fin] * (1 + 1e-12)) and np.all(hi[fin] >= d[fin] * (1 - 1e-12))
    assert np.all(hi[~fin] == np.inf)


def test_singular_set_method_argument(ring):
    d, ot, S = ring
    Sa = ot.singular_set(method="approx")
    np.testing.assert_array_equal(Sa.modes, S.modes)
    np.testing.assert_array_equal(Sa.singular, S.singular)
    with pytest.raises(ValueError, match="method"):
        ot.singular_set(method="fast")
    ot.singular_set()  # restore the cached set for the other tests


def test_no_n_by_n_array_in_the_graph_stages():
    # the k-NN graph, gap test, both path tests, auto kappa and the isolated targets: peak NumPy
    # memory far below one N x N float64 matrix (N = 6,000: 288 MB)
    import tracemalloc

    from brenier import singular as sg

    y, adj = _hairpin(5600, 3, 5)
    adj = adj[np.random.default_rng(0).permutation(len(adj))[:4000]]   # some targets keep no facet
    tracemalloc.start()
    try:
        g = sg.hop_graph(y)
        for method in ("approx", "exact"):
            det, searched = sg.detour_ratios(y, adj, sg.KAPPA_MAX, graph=g, method=method, return_searched=True)
        k = sg.auto_kappa(y, adj, det)
        sg.refine_detours(y, adj, det, searched, k, g)
        sg._attach_isolated(y, adj, sg._components(len(y), adj[det <= k]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * 6000**2 * 8, f"peak {peak / 2**20:.0f} MB"


def test_mode_of_uses_no_dense_block(ring, monkeypatch):
    _, _, S = ring

    def no_cdist(*a, **k):
        raise AssertionError("mode_of must not build an (M, N) distance block")

    monkeypatch.setattr(torch, "cdist", no_cdist)
    np.testing.assert_array_equal(S.mode_of(S.targets), S.modes)


def test_parallel_searches_equal_the_serial_ones(monkeypatch):
    # the local search spread over forked workers gives the same ratios, pair for pair
    from brenier import singular as sg

    y, adj = _hairpin(1200, 4, 2)
    g = sg.hop_graph(y)
    length = np.linalg.norm(y[adj[:, 0]] - y[adj[:, 1]], axis=1)
    monkeypatch.setattr(sg, "PARALLEL_SOURCES", 1)
    serial = sg._search_pairs(g, adj, length, 3.0, n_jobs=1)
    if not sg._can_fork():
        pytest.skip("no fork on this platform: the searches always run in one process")
    parallel = sg._search_pairs(g, adj, length, 3.0, n_jobs=2)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(serial[0]).sum() > 100
    monkeypatch.setenv("BRENIER_JOBS", "1")
    assert sg.detour_jobs() == 1
    monkeypatch.setenv("BRENIER_JOBS", "zero")
    with pytest.raises(ValueError, match="BRENIER_JOBS"):
        sg.detour_jobs()
