"""Tests for the exact 2-D power-diagram solver: brenier.ot.power_diagram and brenier.ot.exact."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely

from brenier.ot.exact import initial_heights, solve_exact
from brenier.ot.power_diagram import PowerDiagram, power_diagram, power_diagrams


def _disk(k: int = 256, radius: float = 1.0, centre=(0.0, 0.0)) -> shapely.Polygon:
    t = 2 * np.pi * np.arange(k) / k
    return shapely.Polygon(np.c_[centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t)])


SQUARE = shapely.box(-1.0, -1.0, 1.0, 1.0)
DISK = _disk(256)
L_SHAPE = shapely.Polygon([(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)])
# A C (a square with a slot cut in from the right): cells can be split into two pieces.
C_SHAPE = shapely.Polygon([(0, 0), (3, 0), (3, 1), (1, 1), (1, 2), (3, 2), (3, 3), (0, 3)])
DOMAINS = {"square": SQUARE, "disk": DISK, "L": L_SHAPE, "C": C_SHAPE}


def _sites(n: int, domain: shapely.Polygon, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Random targets around the domain and heights making cells of varied sizes inside it."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = domain.bounds
    y = rng.uniform([x0, y0], [x1, y1], size=(n, 2))
    h = -0.5 * (y**2).sum(axis=1) + spread * rng.uniform(size=n)
    return y, h


def _sample(domain: shapely.Polygon, m: int, seed: int) -> np.ndarray:
    """(~m, 2) uniform points in the domain, by rejection from its bounding box."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = domain.bounds
    p = rng.uniform([x0, y0], [x1, y1], size=(int(m * (x1 - x0) * (y1 - y0) / domain.area), 2))
    return p[shapely.contains_xy(domain, p[:, 0], p[:, 1])]


def _half_plane(a: np.ndarray, b: float, big: float) -> shapely.Polygon:
    """{x : <x, a> + b >= 0} as a big square on its side of the line."""
    n = a / np.linalg.norm(a)
    p0 = -b * a / (a @ a)
    t = np.array([-n[1], n[0]])
    return shapely.Polygon([p0 + big * t, p0 + big * t + 2 * big * n, p0 - big * t + 2 * big * n, p0 - big * t])


def _region(y, h, domain, i: int, skip: tuple[int, ...]) -> shapely.Geometry:
    """D cut by the half-planes where site i beats each site k not in ``skip`` (no hull involved)."""
    x0, y0, x1, y1 = domain.bounds
    big = 10 * max(x1 - x0, y1 - y0, np.abs(domain.bounds).max()) + 10
    region = domain
    for k in range(len(y)):
        if k not in skip:
            region = region.intersection(_half_plane(y[i] - y[k], h[i] - h[k], big))
    return region


def _brute_cells(y: np.ndarray, h: np.ndarray, domain: shapely.Polygon) -> list[shapely.Geometry]:
    """W_i ∩ D by brute force."""
    return [_region(y, h, domain, i, (i,)) for i in range(len(y))]


def _brute_facet(y: np.ndarray, h: np.ndarray, domain: shapely.Polygon, i: int, j: int) -> float:
    """len(W_i ∩ W_j ∩ D): on the line where i and j tie, the region where i beats all the others."""
    a, b = y[i] - y[j], h[i] - h[j]
    p0, t = -b * a / (a @ a), np.array([-a[1], a[0]]) / np.linalg.norm(a)
    line = shapely.LineString([p0 - 1e3 * t, p0 + 1e3 * t])
    return float(line.intersection(_region(y, h, domain, i, (i, j))).length)


def _energy(pd: PowerDiagram, nu: np.ndarray) -> float:
    """E(h) = ∫_D u_h dmu - <nu, h>, exactly: u_h is affine on each cell."""
    cells = pd.cells()
    area = np.array([c.area for c in cells])
    cent = np.array([[c.centroid.x, c.centroid.y] if c.area > 0 else [0.0, 0.0] for c in cells])
    integral = area * ((cent * pd.targets).sum(axis=1) + pd.heights)
    return float(integral.sum() / pd.domain.area - nu @ pd.heights)


# ---------------------------------------------------------------------------------------------
# power_diagram


@pytest.mark.parametrize("name", list(DOMAINS))
def test_areas_sum_to_domain_area(name):
    domain = DOMAINS[name]
    y, h = _sites(300, domain, seed=1)
    pd = power_diagram(y, h, domain)
    assert pd.areas.shape == (300,)
    assert np.all(pd.areas >= 0)
    assert abs(pd.areas.sum() - domain.area) <= 1e-12 * domain.area
    assert abs(pd.masses.sum() - 1) <= 1e-12
    # The lazily built geometries agree with the areas.
    np.testing.assert_allclose(shapely.area(np.array(pd.cells(), dtype=object)), pd.areas, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", ["disk", "C"])
def test_areas_match_monte_carlo(name):
    domain = DOMAINS[name]
    y, h = _sites(25, domain, seed=2)
    pd = power_diagram(y, h, domain)
    x = _sample(domain, 200_000, seed=3)
    counts = np.bincount(np.argmax(x @ y.T + h, axis=1), minlength=len(y)) / len(x)
    sigma = np.sqrt(pd.masses * (1 - pd.masses) / len(x))
    assert np.all(np.abs(counts - pd.masses) <= 5 * sigma + 1e-12)


@pytest.mark.parametrize("name", ["square", "C"])
def test_cells_and_facets_match_brute_force(name):
    domain = DOMAINS[name]
    y, h = _sites(12, domain, seed=4)
    pd = power_diagram(y, h, domain)
    brute = _brute_cells(y, h, domain)
    np.testing.assert_allclose(pd.areas, [c.area for c in brute], rtol=1e-10, atol=1e-14)
    expected = {}
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            length = _brute_facet(y, h, domain, i, j)
            if length > 1e-12:
                expected[(i, j)] = length
    got = {(int(i), int(j)): float(length) for (i, j), length in zip(pd.adjacency, pd.facet_lengths)}
    assert set(got) == set(expected)
    for pair, length in expected.items():
        assert got[pair] == pytest.approx(length, rel=1e-9)


def test_facet_segments_lie_on_power_edges():
    y, h = _sites(200, DISK, seed=5)
    pd = power_diagram(y, h, DISK)
    assert pd.adjacency.dtype == np.int64 and np.all(pd.adjacency[:, 0] < pd.adjacency[:, 1])
    assert pd.facet_segments.shape == (len(pd.adjacency), 2, 2)
    i, j = pd.adjacency.T
    for end in (0, 1):
        p = pd.facet_segments[:, end]
        si = (p * y[i]).sum(axis=1) + h[i]
        sj = (p * y[j]).sum(axis=1) + h[j]
        np.testing.assert_allclose(si, sj, atol=1e-10)
        # ... and no other site beats them there.
        best = np.max(p @ y.T + h, axis=1)
        assert np.all(si >= best - 1e-10)
    seg_len = np.linalg.norm(pd.facet_segments[:, 1] - pd.facet_segments[:, 0], axis=1)
    assert np.all(pd.facet_lengths <= seg_len * (1 + 1e-12))


def test_empty_cells_get_zero_area():
    y, h = _sites(50, SQUARE, seed=6)
    h[3] -= 100.0  # dominated everywhere
    y[7] = [5.0, 5.0]  # a cell far outside D
    h[7] = -60.0
    pd = power_diagram(y, h, SQUARE)
    assert pd.areas[3] == 0 and pd.areas[7] == 0
    assert not np.isin([3, 7], pd.adjacency).any()
    assert pd.cells()[3].is_empty and pd.cells()[7].is_empty
    assert abs(pd.areas.sum() - SQUARE.area) <= 1e-12 * SQUARE.area


def test_single_site_and_translated_domain():
    far = shapely.box(100.0, 200.0, 101.0, 203.0)
    pd = power_diagram([[1.0, 2.0]], [0.5], far)
    assert pd.areas[0] == pytest.approx(3.0, rel=1e-14)
    assert len(pd.adjacency) == 0 and pd.hessian().shape == (1, 1)
    # Far from the origin the centred computation keeps the small cells precise.
    y, h = _sites(100, far, seed=7)
    pd = power_diagram(y, h, far)
    assert abs(pd.areas.sum() - far.area) <= 1e-11 * far.area


def test_degenerate_sites():
    """Co-circular sites (a grid with Voronoi heights), coplanar lifts (h = 0), repeated sites."""
    g = np.linspace(-0.9, 0.9, 10)
    y = np.array([[a, b] for a in g for b in g])
    h = -0.5 * (y**2).sum(axis=1)
    pd = power_diagram(y, h, SQUARE)
    np.testing.assert_allclose(pd.areas, 0.04, rtol=1e-12)
    assert len(pd.adjacency) == 2 * 9 * 10  # only the grid edges: no zero-length diagonals
    np.testing.assert_allclose(pd.facet_lengths, 0.2, rtol=1e-12)
    flat = power_diagram(y, np.zeros(100), SQUARE)  # u = max <x, y_i>: only the 4 corners win
    assert (flat.areas > 0).sum() == 4 and flat.areas.sum() == pytest.approx(4.0, rel=1e-14)
    twice = power_diagram(np.r_[y, y[:3]], np.r_[h, h[:3]], SQUARE)
    assert twice.areas.sum() == pytest.approx(4.0, rel=1e-14)
    np.testing.assert_allclose(twice.areas[:3] + twice.areas[100:], 0.04, rtol=1e-12)


def test_power_diagrams_share_one_hull():
    y, h = _sites(150, C_SHAPE, seed=17)
    hull = C_SHAPE.convex_hull
    on_c, on_hull = power_diagrams(y, h, [C_SHAPE, hull])
    alone = power_diagram(y, h, hull)
    np.testing.assert_allclose(on_hull.areas, alone.areas, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(on_hull.adjacency, alone.adjacency)
    np.testing.assert_allclose(on_c.areas, power_diagram(y, h, C_SHAPE).areas, rtol=1e-12, atol=1e-15)
    assert np.all(on_c.areas <= on_hull.areas + 1e-15)


@pytest.mark.parametrize("name", ["disk", "L"])
def test_gradient_matches_finite_differences(name):
    domain = DOMAINS[name]
    y, h = _sites(40, domain, seed=8)
    nu = np.random.default_rng(9).uniform(0.5, 1.5, len(y))
    nu /= nu.sum()
    pd = power_diagram(y, h, domain)
    grad = pd.masses - nu
    eps = 1e-5
    for i in np.flatnonzero(pd.areas > 0)[:12]:
        e = np.zeros(len(y))
        e[i] = eps
        fd = (_energy(power_diagram(y, h + e, domain), nu) - _energy(power_diagram(y, h - e, domain), nu)) / (2 * eps)
        assert fd == pytest.approx(grad[i], abs=1e-8)


@pytest.mark.parametrize("name", ["disk", "C"])
def test_hessian_matches_finite_differences(name):
    domain = DOMAINS[name]
    y, h = _sites(60, domain, seed=10)
    pd = power_diagram(y, h, domain)
    hess = pd.hessian()
    assert hess.shape == (60, 60)
    assert abs(hess - hess.T).max() == 0
    np.testing.assert_allclose(np.asarray(hess.sum(axis=1)).ravel(), 0, atol=1e-12)
    dense = hess.toarray()
    eps = 1e-7
    cells = np.array(pd.cells(), dtype=object)
    touching = shapely.intersects(cells, domain.boundary)
    boundary = np.flatnonzero(touching)
    interior = np.flatnonzero(~touching & (pd.areas > 0))
    for j in np.r_[boundary[:6], interior[:6]]:
        e = np.zeros(60)
        e[j] = eps
        fd = (power_diagram(y, h + e, domain).masses - power_diagram(y, h - e, domain).masses) / (2 * eps)
        np.testing.assert_allclose(fd, dense[:, j], atol=1e-6 * np.abs(dense[:, j]).max())


def test_bad_inputs():
    with pytest.raises(ValueError, match="targets"):
        power_diagram(np.zeros((3, 3)), np.zeros(3), SQUARE)
    with pytest.raises(ValueError, match="heights"):
        power_diagram(np.zeros((3, 2)), np.zeros(4), SQUARE)
    with pytest.raises(ValueError, match="domain"):
        power_diagram(np.eye(2), np.zeros(2), shapely.LineString([(0, 0), (1, 1)]))
    y = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    with pytest.raises(ValueError, match="weights"):
        solve_exact(y, np.ones(4) / 4, SQUARE)
    with pytest.raises(ValueError, match="weights"):
        solve_exact(y, np.array([1, 1, 1, 1, -1.0]), SQUARE)
    with pytest.raises(ValueError, match="repeated"):
        solve_exact(np.r_[y, y[:1]], np.ones(6) / 6, SQUARE)
    with pytest.raises(ValueError, match="heights"):
        solve_exact(y, np.ones(5) / 5, SQUARE, heights=np.zeros(3))
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    with pytest.raises(ValueError, match="domain"):
        solve_exact(y, np.ones(5) / 5, bowtie)


# ---------------------------------------------------------------------------------------------
# solve_exact


def _disk_targets(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, a = np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n)
    return np.c_[r * np.cos(a), r * np.sin(a)]


@pytest.mark.parametrize("name", ["disk", "C"])
def test_initial_heights_give_non_empty_cells(name):
    domain = DOMAINS[name]
    y = _disk_targets(400, seed=11) * 5 + 20  # far from D and much larger: contraction needed
    pd = power_diagram(y, initial_heights(y, domain), domain)
    assert pd.masses.min() > 0


def test_newton_converges_on_disk():
    y = _disk_targets(500, seed=12)
    nu = np.full(500, 1 / 500)
    seen = []
    h, info = solve_exact(y, nu, DISK, tol=1e-9, callback=lambda k, hk, err: seen.append((k, err)))
    assert info["converged"] and info["max_rel_error"] <= 1e-9
    assert info["n_iter"] <= 20 and len(info["history"]) == info["n_iter"] + 1
    assert [k for k, _ in seen] == list(range(info["n_iter"] + 1))
    mu = power_diagram(y, h, DISK).masses
    assert np.max(np.abs(mu - nu) / nu) == pytest.approx(info["max_rel_error"], rel=1e-6, abs=1e-15)
    assert info["tv_error"] <= 0.5 * info["max_rel_error"]
    # Warm start from the solution: nothing to do.
    _, again = solve_exact(y, nu, DISK, heights=h, tol=1e-9)
    assert again["n_iter"] == 0 and again["n_diagrams"] == 1


def test_newton_converges_on_non_convex_domain():
    rng = np.random.default_rng(13)
    y = rng.normal(size=(300, 2))
    nu = rng.uniform(0.2, 1.0, 300)
    h, info = solve_exact(y, nu, C_SHAPE, tol=1e-9)
    assert info["converged"] and info["max_rel_error"] <= 1e-9
    # Plain damped Newton crawls on the C from the contracted start: the homotopy took over.
    assert info["homotopy_stages"][0] == 0.0
    assert len(info["history"]) == info["n_iter"] + 1
    mu = power_diagram(y, h, C_SHAPE).masses
    np.testing.assert_allclose(mu, nu / nu.sum(), rtol=1e-9)


@pytest.mark.parametrize("homotopy", [True, False])
def test_newton_on_l_shape_with_and_without_homotopy(homotopy):
    y = _disk_targets(400, seed=15) + [1.0, 1.0]
    nu = np.full(400, 1 / 400)
    _, info = solve_exact(y, nu, L_SHAPE, tol=1e-9, homotopy=homotopy)
    assert info["converged"] and info["max_rel_error"] <= 1e-9
    assert bool(info["homotopy_stages"]) == homotopy


def test_newton_on_translated_domain():
    """Far from the origin the heights are large: the centred computation keeps the precision."""
    far = shapely.box(100.0, 200.0, 102.0, 201.0)
    y = _disk_targets(300, seed=16)
    _, info = solve_exact(y, np.full(300, 1 / 300), far, tol=1e-9)
    assert info["converged"]


def test_newton_restarts_from_empty_cells():
    y = _disk_targets(50, seed=14)
    h0 = np.zeros(50)
    h0[0] = -100.0
    with pytest.warns(RuntimeWarning, match="empty"):
        _, info = solve_exact(y, np.full(50, 0.02), DISK, heights=h0, tol=1e-9)
    assert info["converged"]


@pytest.mark.slow
def test_newton_bar_10k_uniform_disk():
    """The bar: N = 10,000 uniform targets in the unit disk (1024-gon), nu uniform."""
    n = 10_000
    y = _disk_targets(n, seed=0)
    t0 = time.perf_counter()
    _, info = solve_exact(y, np.full(n, 1 / n), _disk(1024), tol=1e-8, max_iter=30)
    elapsed = time.perf_counter() - t0
    print(f"N={n}: {info['n_iter']} Newton steps, {info['n_diagrams']} diagrams, {elapsed:.2f} s, max rel error {info['max_rel_error']:.3g}")
    assert info["max_rel_error"] <= 1e-8
    assert info["n_iter"] <= 30
    assert elapsed <= 60
