"""Tests for brenier.datasets.toy: 2-D toy distributions with exact ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from brenier.datasets import TOY_NAMES, ToyData, seahorse_polygon, toy

N_BIG = 20_000
EXPECTED_COMPONENTS = {
    "ring8": 8, "grid25": 25, "moons": 2, "circles": 2, "spiral": 1, "seahorse": 1, "square": 1,
}


@pytest.fixture(scope="module")
def big():
    return {name: toy(name, n=N_BIG, seed=3) for name in TOY_NAMES}


def _support_polygon(d: ToyData) -> shapely.Geometry:
    """The support rebuilt from the outline rings (XOR handles nested rings such as annuli)."""
    geom = shapely.Polygon()
    for ring in d.outline():
        geom = shapely.symmetric_difference(geom, shapely.Polygon(ring))
    return geom


def _ring_normals(ring: np.ndarray) -> np.ndarray:
    """Unit normals at the vertices of a closed ring (first row == last row)."""
    pts = ring[:-1]
    tangent = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    return normal / np.linalg.norm(normal, axis=1, keepdims=True)


def test_names_and_exports():
    assert TOY_NAMES == ("ring8", "grid25", "moons", "circles", "spiral", "seahorse", "square")
    assert set(EXPECTED_COMPONENTS) == set(TOY_NAMES)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_shapes_and_dtypes(name):
    d = toy(name, n=500, seed=1)
    assert isinstance(d, ToyData) and d.name == name
    assert d.points.shape == (500, 2) and d.points.dtype == np.float64
    assert d.labels.shape == (500,) and d.labels.dtype == np.int64
    assert np.isfinite(d.points).all()
    assert d.n_components == EXPECTED_COMPONENTS[name]
    assert d.component_weights.shape == (d.n_components,)
    assert np.all(d.component_weights > 0) and math.isclose(d.component_weights.sum(), 1.0)
    assert d.labels.min() >= 0 and d.labels.max() < d.n_components
    assert np.isfinite(d.scale) and 0.3 < d.scale < 2.0
    assert np.abs(d.points).max() < 1.6
    for ring in d.outline():
        assert ring.ndim == 2 and ring.shape[1] == 2 and len(ring) >= 4
        np.testing.assert_array_equal(ring[0], ring[-1])
    assert toy(name, n=1).points.shape == (1, 2)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_deterministic(name):
    a, b = toy(name, n=300, seed=7), toy(name, n=300, seed=7)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = toy(name, n=300, seed=8)
    assert not np.array_equal(a.points, c.points)
    assert toy(name, n=300, seed=np.int64(7)).points.tobytes() == a.points.tobytes()


@pytest.mark.parametrize("name", TOY_NAMES)
def test_samples_lie_in_their_own_component(big, name):
    d = big[name]
    assert d.contains(d.points).all()
    np.testing.assert_array_equal(d.component(d.points), d.labels)
    assert np.all(d.support_distance(d.points) == 0.0)
    # every component is actually populated
    assert np.bincount(d.labels, minlength=d.n_components).min() > 0


@pytest.mark.parametrize("name", TOY_NAMES)
def test_component_frequencies(big, name):
    d = big[name]
    freq = np.bincount(d.labels, minlength=d.n_components) / len(d.labels)
    sd = np.sqrt(d.component_weights * (1 - d.component_weights) / len(d.labels))
    assert np.all(np.abs(freq - d.component_weights) <= np.maximum(5 * sd, 1e-12))
    assert np.abs(freq - d.component_weights).max() < 0.02


@pytest.mark.parametrize("name", TOY_NAMES)
def test_scale_is_rms_radius(big, name):
    d = big[name]
    rms = np.sqrt(np.mean(np.sum((d.points - d.points.mean(0)) ** 2, axis=1)))
    assert abs(rms - d.scale) < 0.02 * d.scale
    assert toy(name, n=10, seed=5).scale == d.scale  # independent of n and seed


@pytest.mark.parametrize("name", TOY_NAMES)
def test_just_outside_the_boundary(name):
    """Offsetting outline vertices by 1e-3*scale along the normal: one side in, the other out."""
    d = toy(name, n=10)
    delta = 1e-3 * d.scale
    for ring in d.outline():
        v, nrm = ring[:-1], _ring_normals(ring)
        plus, minus = v + delta * nrm, v - delta * nrm
        in_plus, in_minus = d.contains(plus), d.contains(minus)
        assert np.all(in_plus != in_minus)
        outside = np.where(in_plus[:, None], minus, plus)
        inside = np.where(in_plus[:, None], plus, minus)
        dist = d.support_distance(outside)
        assert np.all(dist > 0)
        assert np.all(dist <= delta * (1 + 1e-6)) and np.all(dist > 0.5 * delta)
        assert np.all(d.component(outside) == -1)
        assert np.all(d.support_distance(inside) == 0)
        # vertices of the drawn boundary are on (or within rounding of) the support
        assert d.support_distance(v).max() < 1e-4 * d.scale


@pytest.mark.parametrize("name", TOY_NAMES)
def test_agrees_with_outline_geometry(name):
    """contains / support_distance agree with the polygon rebuilt from the outline."""
    d = toy(name, n=10)
    poly = _support_polygon(d)
    assert poly.is_valid
    n_pieces = len(poly.geoms) if hasattr(poly, "geoms") else 1
    assert n_pieces == d.n_components
    rng = np.random.default_rng(0)
    q = rng.uniform(-1.8, 1.8, size=(4000, 2))
    ref_dist = shapely.distance(shapely.points(q), poly)
    ref_in = shapely.contains_xy(poly, q[:, 0], q[:, 1])
    boundary_gap = shapely.distance(shapely.points(q), shapely.boundary(poly))
    clear = boundary_gap > 1e-3
    np.testing.assert_array_equal(d.contains(q)[clear], ref_in[clear])
    # the drawn circles are 256-gons: their sagitta is < 1e-4 at these radii
    np.testing.assert_allclose(d.support_distance(q), ref_dist, atol=1e-4)
    # each outline piece carries a single component label
    pieces = poly.geoms if hasattr(poly, "geoms") else [poly]
    labels = {int(d.component(shapely.get_coordinates(p.representative_point()))[0]) for p in pieces}
    assert labels == set(range(d.n_components))


@pytest.mark.parametrize("name", ["moons", "circles", "spiral", "seahorse", "square"])
def test_uniform_within_components(big, name):
    """Within each component, the fraction of samples in a box matches the fraction of area."""
    d = big[name]
    poly = _support_polygon(d)
    pieces = poly.geoms if hasattr(poly, "geoms") else [poly]
    boxes = [shapely.box(-2, -2, 0, 0), shapely.box(0, -2, 2, 0.3), shapely.box(-0.5, -0.4, 0.6, 0.5)]
    for piece in pieces:
        rp = np.array(shapely.get_coordinates(piece.representative_point()))
        k = int(d.component(rp)[0])
        pts = d.points[d.labels == k]
        for box in boxes:
            expect = shapely.intersection(piece, box).area / piece.area
            got = np.mean(shapely.contains_xy(box, pts[:, 0], pts[:, 1]))
            assert abs(got - expect) < 5 * math.sqrt(expect * (1 - expect) / len(pts)) + 2e-3


@pytest.mark.parametrize("name, centres, sigma", [
    ("ring8", [(math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)) for k in range(8)], 0.05),
    ("grid25", [(gx, gy) for gy in np.linspace(-1, 1, 5) for gx in np.linspace(-1, 1, 5)], 0.04),
])
def test_truncated_gaussians(big, name, centres, sigma):
    d = big[name]
    r = np.linalg.norm(d.points - np.asarray(centres)[d.labels], axis=1)
    assert r.max() <= 3 * sigma * (1 + 1e-12)
    mass = 1 - math.exp(-4.5)
    assert abs(np.mean(r <= sigma) - (1 - math.exp(-0.5)) / mass) < 0.015
    expect_r2 = 2 * sigma**2 * (1 - 4.5 * math.exp(-4.5) / mass)
    assert abs(np.mean(r**2) / expect_r2 - 1) < 0.03
    # off-support = beyond 3 sigma of every Gaussian
    c = np.asarray(centres)
    assert d.contains(c).all()
    np.testing.assert_array_equal(d.component(c), np.arange(len(c)))
    out = c + np.array([3 * sigma * 1.01, 0.0])
    assert not d.contains(out).any()
    np.testing.assert_allclose(d.support_distance(out), 0.03 * sigma, rtol=1e-9)


def test_exact_distances():
    ring = toy("ring8", n=5)
    np.testing.assert_allclose(ring.support_distance([0.0, 0.0]), [0.85])
    circ = toy("circles", n=5)
    np.testing.assert_allclose(
        circ.support_distance([[0, 0], [0.75, 0], [0, 1.5], [0, -1.0]]), [0.4, 0.15, 0.4, 0.0]
    )
    np.testing.assert_array_equal(circ.component([[0, 1.0], [0.5, 0], [0.75, 0]]), [0, 1, -1])
    sq = toy("square", n=5)
    np.testing.assert_allclose(
        sq.support_distance([[2, 0], [2, 2], [1, 1], [0.3, -0.2]]), [1, math.sqrt(2), 0, 0]
    )
    assert sq.contains([1.0, -1.0]).all()  # closed
    moons = toy("moons", n=5)
    # upper moon: centre (-0.5, -0.25), radius 1 over [0, pi]; tube half-width 0.1
    np.testing.assert_allclose(moons.support_distance([[-0.5, -0.25 + 1.3]]), [0.2])
    np.testing.assert_allclose(moons.support_distance([[0.5, -0.4]]), [0.05])  # below its right end cap
    np.testing.assert_array_equal(moons.component([[-0.5, 0.75], [0.5, -0.75], [0.0, 0.0]]), [0, 1, -1])


def test_query_inputs():
    d = toy("seahorse", n=5)
    assert d.contains(d.points[0]).shape == (1,)
    assert d.contains(d.points[0].tolist()).all()
    assert d.support_distance(np.zeros((0, 2))).shape == (0,)
    q = np.array([[np.nan, 0.0], [0.0, 0.0]])
    assert not d.contains(q)[0]
    assert np.isnan(d.support_distance(q)[0])
    assert toy("ring8", n=5).component(q)[0] == -1
    with pytest.raises(ValueError, match="x"):
        d.contains(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        d.support_distance(np.zeros(5))


def test_seahorse_polygon():
    p = seahorse_polygon()
    assert isinstance(p, shapely.Polygon)
    assert p.is_valid and p.exterior.is_simple and len(p.interiors) == 0
    assert p.area / shapely.convex_hull(p).area < 0.7  # strongly non-convex
    minx, miny, maxx, maxy = p.bounds
    assert 1.0 < maxx - minx < 1.6 and 2.2 < maxy - miny < 2.8
    d = toy("seahorse", n=5)
    assert len(d.outline()) == 1 and shapely.equals(p, shapely.Polygon(d.outline()[0]))
    # the inside of the curled tail and the throat under the snout are outside the seahorse
    assert not d.contains([[0.0, -0.85], [0.25, 0.6]]).any()
    # a fresh copy: preparing it must not affect the module's polygon
    shapely.prepare(p)
    assert shapely.is_prepared(p) and not shapely.is_prepared(seahorse_polygon())


@pytest.mark.parametrize("bad", ["nope", "Ring8", "", None, 3])
def test_bad_name(bad):
    with pytest.raises(ValueError, match="name") as err:
        toy(bad)
    assert "seahorse" in str(err.value) and "ring8" in str(err.value)


@pytest.mark.parametrize("bad", [0, -3, 2.5, 10.0, True, "10", None])
def test_bad_n(bad):
    with pytest.raises(ValueError, match="n:"):
        toy("square", n=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None, True, [1, 2]])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        toy("square", seed=bad)
