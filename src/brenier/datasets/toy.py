"""2-D toy distributions with exact ground truth.

Every dataset is a probability measure on the plane whose support is a finite union of disjoint,
closed, connected pieces ("components"), each with a known probability. Besides the samples and
their true component labels, a :class:`ToyData` can answer, exactly, whether any point lies in the
support, which component it lies in, and how far it is from the support; and it can draw its
support's outline. This is what a generative model is scored against: samples off the support,
modes that were dropped, mass put on a mode in the wrong proportion.

The datasets (all fit in roughly [-1.5, 1.5]^2):

``ring8``
    8 equal-weight isotropic Gaussians, sigma = 0.05, centred at (cos 2 pi k/8, sin 2 pi k/8),
    each *truncated at 3 sigma* (a sample is drawn from the Gaussian conditioned on lying within
    3 sigma of its centre). Support = the union of the eight closed disks of radius 3 sigma = 0.15
    (neighbouring disks are 0.465 apart). 8 components, ordered by angle k.
``grid25``
    25 equal-weight isotropic Gaussians, sigma = 0.04, centred on the 5 x 5 grid
    {-1, -0.5, 0, 0.5, 1}^2, truncated at 3 sigma. Support = the 25 disks of radius 0.12
    (gaps 0.26). 25 components, label = 5 * row + column, where row is the index of the
    centre's y coordinate and column that of its x coordinate, both counted up from -1.
``moons``
    Two interleaving half-circle arcs of radius 1 (the arcs of sklearn's ``make_moons``,
    shifted by (-0.5, -0.25)): component 0 has centre (-0.5, -0.25) and spans angles [0, pi]
    (the upper moon), component 1 has centre (0.5, 0.25) and spans [pi, 2 pi] (the lower moon).
    Each component is the uniform distribution on the closed tube of half-width w = 0.1 around
    its arc, i.e. the set of points within distance 0.1 of the arc (an annular sector with
    half-disk caps at the two ends). Weights 1/2, 1/2; the tubes are 0.3 apart.
``circles``
    Two concentric annuli centred at the origin, each uniform: component 0 = the outer annulus
    0.9 <= |x| <= 1.1, component 1 = the inner annulus 0.4 <= |x| <= 0.6. Equal weights 1/2, 1/2
    (like sklearn's ``make_circles``; the density is therefore higher on the inner ring). Gap 0.3.
``spiral``
    One arm: the uniform distribution on a tube of half-width 0.08 around the Archimedean spiral
    r = b theta with turn spacing 2 pi b = 0.45, from r = 0.2 out to r = 1.325 (2.5 turns).
    The tube is a shapely polygon (the buffer of a dense polyline of the spiral, round caps);
    that polygon *is* the support. Neighbouring turns are 0.29 apart. 1 component.
``seahorse``
    The uniform distribution on a non-convex seahorse-shaped polygon (facing right: a crowned
    head with a long tubular snout, a concave neck, a bulging belly, a small dorsal fin on the
    back, and a tail curled forward into a spiral), about 1.3 wide and 2.6 tall. The polygon,
    built by sweeping disks of varying radius along a smooth spine and then smoothing, is
    exposed by :func:`seahorse_polygon`; it is a valid simple polygon without holes. Samples come
    from rejection sampling in its bounding box. 1 component.
``square``
    The uniform distribution on [-1, 1]^2. 1 component.

Supports are closed sets: a point on the boundary is in the support. Membership tests allow a
rounding tolerance of 1e-9 for the analytic shapes (disks, annuli, arc tubes, the square); the
polygon shapes (spiral, seahorse) use shapely's exact closed-set predicate ``intersects_xy``.

``ToyData.scale`` is the population RMS distance from the population mean, estimated once per
dataset from 2**17 draws with a fixed seed, so it does not depend on ``n`` or ``seed``.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely import affinity

from .._array import real_array

__all__ = ["ToyData", "toy", "TOY_NAMES", "seahorse_polygon"]

TOY_NAMES = ("ring8", "grid25", "moons", "circles", "spiral", "seahorse", "square")

_TOL = 1e-9  # rounding tolerance of the analytic membership tests
_SCALE_DRAWS = 2**17
_SCALE_SEED = 20240229
_CIRCLE_VERTICES = 256  # vertices of a drawn circle in outline()


# ---------------------------------------------------------------------------------------------
# input checking


def _as_xy(x: Any, name: str = "x") -> np.ndarray:
    """Validate query points: (M, 2) or a single point (2,); returns a float64 (M, 2) array."""
    arr = real_array(x, name).astype(np.float64, copy=False)
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected points of shape (M, 2) or (2,), got shape {arr.shape}")
    return arr


def _check_n(n: Any) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    if int(n) < 1:
        raise ValueError(f"n: expected a positive integer (n >= 1), got {int(n)}")
    return int(n)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {int(seed)}")
    return int(seed)


def _circle(center, radius: float, k: int = _CIRCLE_VERTICES) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, k, endpoint=False)
    ring = np.column_stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)])
    return np.vstack([ring, ring[:1]])


# ---------------------------------------------------------------------------------------------
# component shapes: each samples itself, measures distance to itself, and draws itself


class _Shape:
    """One connected component of a support."""

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:  # (m, 2)
        raise NotImplementedError

    def distance(self, x: np.ndarray) -> np.ndarray:  # (M,) >= 0, 0 inside
        raise NotImplementedError

    def contains(self, x: np.ndarray) -> np.ndarray:  # (M,) bool
        return self.distance(x) <= _TOL

    def outline(self) -> list[np.ndarray]:
        raise NotImplementedError


class _TruncatedGaussian(_Shape):
    """Isotropic Gaussian N(c, sigma^2 I) conditioned on |x - c| <= k sigma; support = that disk."""

    def __init__(self, center, sigma: float, k: float = 3.0):
        self.center = np.asarray(center, dtype=np.float64)
        self.sigma = float(sigma)
        self.radius = k * self.sigma
        self._mass = -math.expm1(-0.5 * k * k)  # P(|z| <= k) for a 2-D standard normal

    def sample(self, rng, m):
        # |z|^2 / 2 ~ Exp(1) for a 2-D standard normal: invert its CDF restricted to [0, k^2/2]
        u = rng.random(m)
        r = self.sigma * np.sqrt(-2.0 * np.log1p(-u * self._mass))
        r = np.minimum(r, self.radius)
        t = rng.random(m) * (2.0 * np.pi)
        return self.center + np.column_stack([r * np.cos(t), r * np.sin(t)])

    def distance(self, x):
        d = np.hypot(x[:, 0] - self.center[0], x[:, 1] - self.center[1]) - self.radius
        return np.maximum(d, 0.0)

    def outline(self):
        return [_circle(self.center, self.radius)]


class _Annulus(_Shape):
    """Uniform on the closed annulus r_in <= |x - c| <= r_out."""

    def __init__(self, center, r_in: float, r_out: float):
        self.center = np.asarray(center, dtype=np.float64)
        self.r_in, self.r_out = float(r_in), float(r_out)

    def sample(self, rng, m):
        u = rng.random(m)
        r = np.sqrt(self.r_in**2 + u * (self.r_out**2 - self.r_in**2))
        r = np.clip(r, self.r_in, self.r_out)
        t = rng.random(m) * (2.0 * np.pi)
        return self.center + np.column_stack([r * np.cos(t), r * np.sin(t)])

    def distance(self, x):
        rho = np.hypot(x[:, 0] - self.center[0], x[:, 1] - self.center[1])
        return np.maximum(np.maximum(self.r_in - rho, rho - self.r_out), 0.0)

    def outline(self):
        return [_circle(self.center, self.r_out), _circle(self.center, self.r_in)]


class _ArcTube(_Shape):
    """Uniform on {x : dist(x, arc) <= w} for the circular arc c + R (cos a, sin a), a in [a0, a1].

    The set is the annular sector R - w <= |x - c| <= R + w over the arc's angles plus two
    half-disks of radius w capping its ends. Requires w < R and a1 - a0 <= pi (so the caps and
    the sector do not overlap).
    """

    def __init__(self, center, radius: float, a0: float, a1: float, w: float):
        self.center = np.asarray(center, dtype=np.float64)
        self.R, self.a0, self.a1, self.w = float(radius), float(a0), float(a1), float(w)
        assert 0 < self.w < self.R and 0 < self.a1 - self.a0 <= np.pi
        span = self.a1 - self.a0
        self._p_sector = (2.0 * span * self.R * self.w) / (2.0 * span * self.R * self.w + np.pi * self.w**2)
        self._ends = [self._point(self.a0), self._point(self.a1)]

    def _point(self, a: float) -> np.ndarray:
        return self.center + self.R * np.array([np.cos(a), np.sin(a)])

    def sample(self, rng, m):
        in_sector = rng.random(m) < self._p_sector
        out = np.empty((m, 2))
        # annular sector: angle uniform, radius with density proportional to r
        k = int(in_sector.sum())
        u = rng.random(k)
        lo, hi = self.R - self.w, self.R + self.w
        r = np.clip(np.sqrt(lo**2 + u * (hi**2 - lo**2)), lo, hi)
        a = self.a0 + rng.random(k) * (self.a1 - self.a0)
        out[in_sector] = self.center + np.column_stack([r * np.cos(a), r * np.sin(a)])
        # caps: a uniform point of a disk of radius w in (tangent, normal) coordinates; the half
        # with positive tangent coordinate goes beyond the a1 end, the other half beyond a0
        k = m - k
        rr = self.w * np.sqrt(rng.random(k))
        tt = rng.random(k) * (2.0 * np.pi)
        s, nrm = rr * np.cos(tt), rr * np.sin(tt)
        caps = np.empty((k, 2))
        for end, a_end, sign, sel in ((1, self.a1, 1.0, s >= 0), (0, self.a0, -1.0, s < 0)):
            # outward tangent at the end (direction of travel beyond it) and radial normal
            tangent = sign * np.array([-np.sin(a_end), np.cos(a_end)])
            normal = np.array([np.cos(a_end), np.sin(a_end)])
            caps[sel] = self._ends[end] + np.abs(s[sel])[:, None] * tangent + nrm[sel][:, None] * normal
        out[~in_sector] = caps
        return out

    def arc_distance(self, x: np.ndarray) -> np.ndarray:
        """Exact distance from each point to the arc (the tube's centre-line)."""
        dx, dy = x[:, 0] - self.center[0], x[:, 1] - self.center[1]
        rho = np.hypot(dx, dy)
        ang = np.mod(np.arctan2(dy, dx) - self.a0, 2.0 * np.pi)
        on_arc = ang <= self.a1 - self.a0
        d_end = np.minimum(
            np.hypot(x[:, 0] - self._ends[0][0], x[:, 1] - self._ends[0][1]),
            np.hypot(x[:, 0] - self._ends[1][0], x[:, 1] - self._ends[1][1]),
        )
        return np.where(on_arc, np.abs(rho - self.R), d_end)

    def distance(self, x):
        return np.maximum(self.arc_distance(x) - self.w, 0.0)

    def outline(self):
        k = _CIRCLE_VERTICES // 2
        a = np.linspace(self.a0, self.a1, k)
        outer = self.center + (self.R + self.w) * np.column_stack([np.cos(a), np.sin(a)])
        inner = self.center + (self.R - self.w) * np.column_stack([np.cos(a[::-1]), np.sin(a[::-1])])
        # cap at a1 goes from the outer to the inner edge through the beyond-the-end side
        c1 = np.linspace(self.a1, self.a1 + np.pi, k // 2)
        cap1 = self._ends[1] + self.w * np.column_stack([np.cos(c1), np.sin(c1)])
        c0 = np.linspace(self.a0 + np.pi, self.a0 + 2.0 * np.pi, k // 2)
        cap0 = self._ends[0] + self.w * np.column_stack([np.cos(c0), np.sin(c0)])
        ring = np.vstack([outer, cap1, inner, cap0])
        return [np.vstack([ring, ring[:1]])]


class _Box(_Shape):
    """Uniform on the closed axis-aligned box [lo, hi]."""

    def __init__(self, lo, hi):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)

    def sample(self, rng, m):
        return self.lo + rng.random((m, 2)) * (self.hi - self.lo)

    def distance(self, x):
        excess = np.maximum(np.maximum(self.lo - x, x - self.hi), 0.0)
        return np.hypot(excess[:, 0], excess[:, 1])

    def outline(self):
        (x0, y0), (x1, y1) = self.lo, self.hi
        return [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])]


class _PolygonShape(_Shape):
    """Uniform on a closed shapely polygon (rejection sampling from its bounding box)."""

    def __init__(self, polygon: shapely.Polygon):
        self.polygon = polygon
        shapely.prepare(self.polygon)
        minx, miny, maxx, maxy = polygon.bounds
        self._lo = np.array([minx, miny])
        self._span = np.array([maxx - minx, maxy - miny])
        self._accept = polygon.area / float(np.prod(self._span))

    def sample(self, rng, m):
        chunks, have = [], 0
        while have < m:
            batch = int(1.2 * (m - have) / self._accept) + 64
            cand = self._lo + rng.random((batch, 2)) * self._span
            cand = cand[shapely.contains_xy(self.polygon, cand[:, 0], cand[:, 1])]
            chunks.append(cand)
            have += len(cand)
        return np.concatenate(chunks)[:m]

    def contains(self, x):
        ok = np.isfinite(x).all(axis=1)
        out = np.zeros(len(x), dtype=bool)
        out[ok] = shapely.intersects_xy(self.polygon, x[ok, 0], x[ok, 1])
        return out

    def distance(self, x):
        ok = np.isfinite(x).all(axis=1)
        out = np.full(len(x), np.nan)
        out[ok] = shapely.distance(shapely.points(x[ok]), self.polygon)
        return out

    def outline(self):
        rings = [self.polygon.exterior, *self.polygon.interiors]
        return [np.asarray(r.coords, dtype=np.float64) for r in rings]


# ---------------------------------------------------------------------------------------------
# the polygons


def _sweep(ctrl, n: int) -> np.ndarray:
    """Resample a smooth interpolant of control rows (x, y, radius) at n points along it."""
    from scipy.interpolate import CubicSpline

    ctrl = np.asarray(ctrl, dtype=np.float64)
    chord = np.r_[0.0, np.cumsum(np.hypot(*np.diff(ctrl[:, :2], axis=0).T))]
    return CubicSpline(chord, ctrl, bc_type="natural")(np.linspace(0.0, chord[-1], n))


def _tube(spine: np.ndarray) -> shapely.Geometry:
    """Union of the convex hulls of consecutive disks along a spine of rows (x, y, radius)."""
    discs = shapely.buffer(shapely.points(spine[:, :2]), spine[:, 2], quad_segs=16)
    pairs = shapely.union(discs[:-1], discs[1:])
    return shapely.union_all(shapely.convex_hull(pairs))


# Seahorse spine, facing right (x, y, half-thickness): snout tip -> head -> neck -> belly -> tail.
_SEAHORSE_BODY = (
    (0.82, 0.74, 0.050),
    (0.70, 0.78, 0.042),
    (0.52, 0.85, 0.048),
    (0.36, 0.92, 0.09),
    (0.18, 0.98, 0.19),
    (0.02, 0.95, 0.20),
    (-0.10, 0.78, 0.13),
    (-0.12, 0.58, 0.14),
    (-0.02, 0.36, 0.25),
    (0.08, 0.10, 0.33),
    (0.04, -0.18, 0.29),
    (-0.08, -0.45, 0.20),
    (-0.17, -0.70, 0.13),
    (-0.19, -0.93, 0.10),
    (-0.08, -1.12, 0.085),
    (0.13, -1.18, 0.075),
    (0.32, -1.06, 0.065),
    (0.37, -0.86, 0.055),
    (0.27, -0.71, 0.045),
    (0.13, -0.74, 0.04),
    (0.09, -0.88, 0.035),
    (0.17, -0.96, 0.03),
)
_SEAHORSE_CROWN = ((0.0, 1.08, 0.10), (-0.05, 1.22, 0.065), (-0.07, 1.31, 0.04))
_SEAHORSE_FIN = ((-0.20, 0.20, 0.05), (-0.33, 0.08, 0.09), (-0.31, -0.10, 0.05))
_SEAHORSE_SHIFT = (-0.2, 0.0)  # centres the bounding box horizontally


@functools.lru_cache(maxsize=None)
def _seahorse_polygon() -> shapely.Polygon:
    parts = [
        _tube(_sweep(_SEAHORSE_BODY, 600)),
        _tube(_sweep(_SEAHORSE_CROWN, 40)),
        _tube(_sweep(_SEAHORSE_FIN, 40)),
    ]
    poly = shapely.union_all(parts)
    e = 0.03  # closing then opening by e: rounds the joins between the swept pieces
    poly = poly.buffer(e, quad_segs=16).buffer(-2 * e, quad_segs=16).buffer(e, quad_segs=16)
    poly = affinity.translate(poly.simplify(5e-4), *_SEAHORSE_SHIFT)
    if not (poly.geom_type == "Polygon" and poly.is_valid and not poly.interiors):
        raise RuntimeError("internal error: the seahorse outline is not a valid simple polygon")
    return poly


def seahorse_polygon() -> shapely.Polygon:
    """The seahorse support as a valid, simple (hole-free, non-convex) shapely polygon.

    About 1.3 wide and 2.6 tall, facing right (snout at the upper right, tail curled at the
    bottom). A fresh copy is returned each call, so callers may prepare or modify it freely.
    """
    return shapely.Polygon(np.asarray(_seahorse_polygon().exterior.coords))


_SPIRAL_SPACING = 0.45  # radial distance between successive turns
_SPIRAL_R0, _SPIRAL_TURNS, _SPIRAL_W = 0.2, 2.5, 0.08


@functools.lru_cache(maxsize=None)
def _spiral_polygon() -> shapely.Polygon:
    b = _SPIRAL_SPACING / (2.0 * np.pi)
    th0 = _SPIRAL_R0 / b
    th1 = th0 + 2.0 * np.pi * _SPIRAL_TURNS
    th = np.linspace(th0, th1, 3000)
    r = b * th
    line = shapely.LineString(np.column_stack([r * np.cos(th), r * np.sin(th)]))
    poly = line.buffer(_SPIRAL_W, quad_segs=16).simplify(1e-4)
    if not (poly.geom_type == "Polygon" and poly.is_valid and not poly.interiors):
        raise RuntimeError("internal error: the spiral tube is not a valid simple polygon")
    return poly


# ---------------------------------------------------------------------------------------------
# the datasets


def _components(name: str) -> tuple[list[_Shape], np.ndarray]:
    if name == "ring8":
        a = 2.0 * np.pi * np.arange(8) / 8
        shapes = [_TruncatedGaussian((np.cos(t), np.sin(t)), 0.05) for t in a]
    elif name == "grid25":
        g = np.linspace(-1.0, 1.0, 5)
        shapes = [_TruncatedGaussian((gx, gy), 0.04) for gy in g for gx in g]
    elif name == "moons":
        shapes = [
            _ArcTube((-0.5, -0.25), 1.0, 0.0, np.pi, 0.1),
            _ArcTube((0.5, 0.25), 1.0, np.pi, 2.0 * np.pi, 0.1),
        ]
    elif name == "circles":
        shapes = [_Annulus((0.0, 0.0), 0.9, 1.1), _Annulus((0.0, 0.0), 0.4, 0.6)]
    elif name == "spiral":
        shapes = [_PolygonShape(_spiral_polygon())]
    elif name == "seahorse":
        shapes = [_PolygonShape(_seahorse_polygon())]
    elif name == "square":
        shapes = [_Box((-1.0, -1.0), (1.0, 1.0))]
    else:  # pragma: no cover - guarded by toy()
        raise ValueError(name)
    weights = np.full(len(shapes), 1.0 / len(shapes))
    return shapes, weights


def _draw(shapes: list[_Shape], weights: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = len(shapes)
    labels = rng.choice(k, size=n, p=weights).astype(np.int64) if k > 1 else np.zeros(n, dtype=np.int64)
    points = np.empty((n, 2), dtype=np.float64)
    for j, shape in enumerate(shapes):
        sel = labels == j
        m = int(sel.sum())
        if m:
            points[sel] = shape.sample(rng, m)
    return points, labels


@functools.lru_cache(maxsize=None)
def _population_scale(name: str) -> float:
    shapes, weights = _components(name)
    pts, _ = _draw(shapes, weights, _SCALE_DRAWS, _SCALE_SEED)
    return float(np.sqrt(np.mean(np.sum((pts - pts.mean(axis=0)) ** 2, axis=1))))


@dataclass(eq=False)
class ToyData:
    """Samples of a toy distribution together with its exact support.

    Attributes
    ----------
    name : the dataset's name (one of ``TOY_NAMES``).
    points : (n, 2) float64 samples.
    labels : (n,) int64, the true component (mode) each sample was drawn from.
    n_components : the true number of connected components of the support.
    component_weights : (n_components,) the true probability of each component.
    scale : the population RMS distance from the mean (independent of n and seed); use it to
        set thresholds such as ``1e-3 * scale``.
    """

    name: str
    points: np.ndarray
    labels: np.ndarray
    n_components: int
    component_weights: np.ndarray
    scale: float
    _shapes: list = field(default_factory=list, repr=False)

    def contains(self, x) -> np.ndarray:
        """(M,) bool: whether each point of ``x`` ((M, 2) or (2,)) lies in the closed support."""
        return self.component(x) >= 0

    def component(self, x) -> np.ndarray:
        """(M,) int64: the component label of each point of ``x``, or -1 outside the support."""
        xy = _as_xy(x)
        out = np.full(len(xy), -1, dtype=np.int64)
        for j, shape in enumerate(self._shapes):
            free = out < 0
            if not free.any():
                break
            hit = np.zeros(len(xy), dtype=bool)
            hit[free] = shape.contains(xy[free])
            out[hit] = j
        return out

    def support_distance(self, x) -> np.ndarray:
        """(M,) float64: Euclidean distance from each point of ``x`` to the support (0 inside).

        Exact for every dataset (for the Gaussian mixtures the support is the union of the
        3-sigma disks, so this is the distance beyond the nearest 3-sigma disk). Non-finite
        query points give NaN.
        """
        xy = _as_xy(x)
        d = np.full(len(xy), np.inf)
        for shape in self._shapes:
            d = np.fmin(d, shape.distance(xy))
        d[~np.isfinite(xy).all(axis=1)] = np.nan
        d[self.contains(xy)] = 0.0
        return d

    def outline(self) -> list[np.ndarray]:
        """Closed polylines ((K, 2) arrays, first row == last row) outlining the support."""
        return [ring for shape in self._shapes for ring in shape.outline()]

    def __len__(self) -> int:
        return len(self.points)


def toy(name: str, n: int = 2000, seed: int = 0) -> ToyData:
    """Draw ``n`` samples of the 2-D toy distribution ``name`` (see the module docstring).

    Deterministic: the same (name, n, seed) gives identical arrays. Raises ValueError for an
    unknown ``name``, ``n < 1`` (or a non-integer ``n``), or a ``seed`` that is not a
    non-negative integer.
    """
    if not isinstance(name, str) or name not in TOY_NAMES:
        raise ValueError(f"name: unknown toy dataset {name!r}; expected one of {', '.join(TOY_NAMES)}")
    n = _check_n(n)
    seed = _check_seed(seed)
    shapes, weights = _components(name)
    points, labels = _draw(shapes, weights, n, seed)
    return ToyData(
        name=name,
        points=points,
        labels=labels,
        n_components=len(shapes),
        component_weights=weights.copy(),
        scale=_population_scale(name),
        _shapes=shapes,
    )
