"""Exact 2-D power (Laguerre) diagrams restricted to a polygonal domain.

For targets y_i (N, 2) and heights h_i (N,), the Brenier potential u_h(x) = max_i <x, y_i> + h_i
splits the plane into power cells W_i = {x : <x, y_i> + h_i >= <x, y_j> + h_j for all j}. The
semi-discrete OT solvers need, for a domain D (a shapely polygon, convex or not, uniform density
1/area(D)):

* the cell masses mu_i = area(W_i ∩ D) / area(D)  (the gradient of the Kantorovich energy);
* the facet lengths len(W_i ∩ W_j ∩ D)  (its Hessian, a weighted graph Laplacian).

Method. The cells are the projections of the lower convex hull of the lifted points
(y_i, -h_i): a site whose lifted point is not on the lower hull has an empty cell, and the
power vertex of a lower triangle (a, b, c) is the x where the three scores tie. A ring of dummy
sites far out in target space, with heights low enough never to win on a ball containing D,
closes every real cell, so each non-empty cell is the convex polygon of the power vertices of
its incident triangles. Only the few cells that cross the boundary of D are intersected with D
by GEOS; the others are wholly inside (shoelace area) or wholly outside (area 0).

Everything is computed in coordinates centred on D (x' = x - c) so that the areas of small
cells far from the origin keep their relative precision; the scores change only by terms that
are the same for every site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import shapely
from scipy.spatial import ConvexHull

__all__ = ["PowerDiagram", "power_diagram", "power_diagrams"]

#: number of dummy sites on the ring that closes the outer cells
_N_DUMMY = 8
#: dummy ring radius, as a multiple of the spread of the targets (any value > 1/cos(pi/8) works;
#: a moderate one keeps the lifted coordinates, hence Qhull's roundoff, small)
_DUMMY_SCALE = 10.0
#: dummies never win on the ball of radius _SAFE_BALL * R around the centre of D (R: radius of D)
_SAFE_BALL = 1.5
#: facets shorter than this fraction of the radius of D are roundoff (a merged, co-circular vertex)
_FACET_RTOL = 1e-13
#: a cell vertex this close to the next one (relative to the cell's size) is a repeat
_REPEAT_RTOL = 1e-13
#: below this |det| / (|e1| |e2|) a lower triangle is too flat for Cramer's rule: use Qhull's plane
_FLAT_TRIANGLE = 1e-10


@dataclass(eq=False)
class PowerDiagram:
    """A power diagram of N sites restricted to a polygonal domain D.

    targets: (N, 2) sites y_i; heights: (N,) h_i; domain: the shapely polygon D.
    areas: (N,) area(W_i ∩ D), 0 for empty cells.
    adjacency: (E, 2) int64 pairs i < j (sorted) whose restricted cells share a facet of positive
    length inside D; facet_lengths: (E,) that length; facet_segments: (E, 2, 2) the endpoints of
    the whole power edge between i and j (not clipped by D, but finite).
    """

    targets: np.ndarray
    heights: np.ndarray
    domain: shapely.Geometry
    areas: np.ndarray
    adjacency: np.ndarray
    facet_lengths: np.ndarray
    facet_segments: np.ndarray
    # Private: what ``cells`` needs to rebuild the geometries lazily (centred coordinates).
    _centre: np.ndarray = field(default=None, repr=False)
    _polygons: np.ndarray = field(default=None, repr=False)  # (N,) unclipped cells, None if empty
    _clipped: dict = field(default_factory=dict, repr=False)  # site -> W_i ∩ D for boundary cells
    _status: np.ndarray = field(default=None, repr=False)  # (N,) _OUTSIDE / _INSIDE / _CROSSING
    _cells: list | None = field(default=None, repr=False)

    @property
    def n_sites(self) -> int:
        return self.targets.shape[0]

    @property
    def masses(self) -> np.ndarray:
        """(N,) mu_i = area(W_i ∩ D) / area(D)."""
        return self.areas / self.domain.area

    def cells(self) -> list[shapely.Geometry]:
        """W_i ∩ D for each site, in the caller's coordinates (an empty polygon for empty cells).

        A cell split by a non-convex D comes back as a MultiPolygon. Computed on first call.
        """
        if self._cells is None:
            out = np.array([shapely.Polygon()] * self.n_sites, dtype=object)
            inside = np.flatnonzero(self._status == _INSIDE)
            out[inside] = self._polygons[inside]
            for i, geom in self._clipped.items():
                out[i] = geom
            keep = np.flatnonzero(~shapely.is_empty(out))
            c = self._centre
            out[keep] = shapely.transform(out[keep], lambda xy: xy + c)
            self._cells = list(out)
        return self._cells

    def hessian(self) -> sp.csr_matrix:
        """(N, N) d mu / d h: the graph Laplacian with L_ij = -len(W_i ∩ W_j ∩ D) / (|y_i - y_j| area(D)).

        Symmetric, positive semi-definite, rows summing to 0 (constants are in its kernel).
        """
        n = self.n_sites
        i, j = self.adjacency[:, 0], self.adjacency[:, 1]
        dist = np.linalg.norm(self.targets[i] - self.targets[j], axis=1)
        w = self.facet_lengths / (dist * self.domain.area)
        off = sp.coo_matrix((np.r_[-w, -w], (np.r_[i, j], np.r_[j, i])), shape=(n, n))
        diag = np.bincount(i, w, minlength=n) + np.bincount(j, w, minlength=n)
        diag = diag.astype(np.float64)  # bincount of nothing is int64
        return (off + sp.diags(diag)).tocsr()


_OUTSIDE, _INSIDE, _CROSSING = 0, 1, 2


def power_diagram(targets: np.ndarray, heights: np.ndarray, domain: shapely.Geometry) -> PowerDiagram:
    """The power diagram of sites ``targets`` (N, 2) with ``heights`` (N,) restricted to ``domain``.

    domain: a valid shapely Polygon (or MultiPolygon) of positive area, convex or not.
    Returns a :class:`PowerDiagram` with cell areas, the adjacency inside D and facet lengths.
    """
    return power_diagrams(targets, heights, [domain])[0]


def power_diagrams(targets: np.ndarray, heights: np.ndarray, domains: Sequence[shapely.Geometry]) -> list[PowerDiagram]:
    """One power diagram restricted to each of several domains, sharing one convex hull.

    Cheaper than separate calls when the same sites are clipped by several domains (the
    exact solver's homotopy from the convex hull of D to D needs both).
    """
    y, h = _check_sites(targets, heights)
    if len(domains) == 0:
        raise ValueError("domains: expected at least one domain")
    doms = _domains(domains)
    centre, radius = doms[0].centre, max(d.radius for d in doms)
    n = len(y)
    # Scores in centred coordinates: <c + x', y_i> + h_i = <x', y_i> + (h_i + <c, y_i>); shifting the
    # targets by their mean adds <x', ybar>, the same for all sites, so it changes no cell.
    ys = y - y.mean(axis=0)
    hs = h + y @ centre
    hs = hs - hs.max()

    hull = _lower_hull(ys, hs, radius)
    polygons, mean, shoelace = _cell_polygons(hull, n)
    out = []
    for domain, dom in zip(domains, doms):
        status, areas, clipped = _clip_cells(polygons, mean, shoelace, dom)
        adjacency, lengths, segments = _facets(hull, n, status, dom)
        out.append(
            PowerDiagram(
                targets=y,
                heights=h,
                domain=domain,
                areas=areas,
                adjacency=adjacency,
                facet_lengths=lengths,
                facet_segments=segments + centre,
                _centre=centre,
                _polygons=polygons,
                _clipped=clipped,
                _status=status,
            )
        )
    return out


def _check_sites(targets, heights) -> tuple[np.ndarray, np.ndarray]:
    y = np.array(targets, dtype=np.float64)
    h = np.array(heights, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2 or y.shape[0] < 1:
        raise ValueError(f"targets: expected shape (N, 2) with N >= 1, got {y.shape}")
    if h.shape != (y.shape[0],):
        raise ValueError(f"heights: expected shape ({y.shape[0]},) to match targets, got {h.shape}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(h))):
        raise ValueError("targets, heights: contain NaN or infinite values")
    return y, h


class _Domain:
    """D in coordinates centred on ``centre``, with what the clipping needs: its boundary edges in
    an STRtree, and the radius of a ball around the centre that contains it."""

    def __init__(self, domain: shapely.Geometry, centre: np.ndarray):
        self.centre = centre
        self.polygon = shapely.transform(domain, lambda xy: xy - centre)
        shapely.prepare(self.polygon)
        rings = shapely.get_rings(shapely.get_parts(self.polygon))
        coords, ring_id = shapely.get_coordinates(rings, return_index=True)
        self.radius = float(np.sqrt((coords**2).sum(axis=1)).max())
        # One 2-point linestring per boundary edge: small bounding boxes make the tree selective.
        same = ring_id[1:] == ring_id[:-1]
        seg = np.stack([coords[:-1][same], coords[1:][same]], axis=1)
        self.segments = shapely.linestrings(seg)
        self.tree = shapely.STRtree(self.segments)


def _domains(domains: Sequence[shapely.Geometry]) -> list[_Domain]:
    """Validate the domains and centre them all on the middle of their common bounding box."""
    for domain in domains:
        if not isinstance(domain, (shapely.Polygon, shapely.MultiPolygon)):
            raise ValueError(f"domain: expected a shapely Polygon, got {type(domain).__name__}")
        if domain.is_empty or not domain.is_valid or domain.area <= 0:
            raise ValueError(f"domain: expected a valid polygon of positive area ({shapely.is_valid_reason(domain)})")
    b = np.array([d.bounds for d in domains])
    centre = 0.5 * (b[:, :2].min(axis=0) + b[:, 2:].max(axis=0))
    return [_Domain(d, centre) for d in domains]


@dataclass
class _Hull:
    """The lower hull of the lifted sites: triangles (F, 3) (indices >= N are dummies), their
    neighbours (F, 3) (the face across the edge opposite each vertex, -1 for an upper face) and
    their power vertices (F, 2) in centred x-coordinates."""

    faces: np.ndarray
    neighbors: np.ndarray
    vertices: np.ndarray


def _lower_hull(ys: np.ndarray, hs: np.ndarray, radius: float) -> _Hull:
    """Lower convex hull of the lifted sites (y_i, -h_i), closed by a ring of dummy sites."""
    spread = float(np.sqrt((ys**2).sum(axis=1)).max())
    spread = spread if spread > 0 else 1.0
    t = 2 * np.pi * np.arange(_N_DUMMY) / _N_DUMMY
    yd = _DUMMY_SCALE * spread * np.c_[np.cos(t), np.sin(t)]
    # Every site scores at least max_i (h_i - r |y_i|) on the ball |x| <= r, and a dummy at most
    # h_d + r |y_d|: this h_d keeps the dummies below the real sites on the whole ball.
    r = _SAFE_BALL * radius
    lower_bound = np.max(hs - r * np.sqrt((ys**2).sum(axis=1)))
    hd = lower_bound - r * _DUMMY_SCALE * spread - r * spread  # the last term: a relative margin
    y_all = np.r_[ys, yd]
    h_all = np.r_[hs, np.full(_N_DUMMY, hd)]
    hull = ConvexHull(np.c_[y_all, -h_all], qhull_options="Qt")
    lower = hull.equations[:, 2] < 0
    faces = hull.simplices[lower]
    remap = np.full(len(hull.simplices), -1)
    remap[lower] = np.arange(int(lower.sum()))
    vertices = _power_vertices(y_all, h_all, faces, hull.equations[lower])
    return _Hull(faces=faces, neighbors=remap[hull.neighbors[lower]], vertices=vertices)


def _power_vertices(y: np.ndarray, h: np.ndarray, faces: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(F, 2) the points where the scores of the three sites of each face tie.

    <x, y_b - y_a> = h_a - h_b and <x, y_c - y_a> = h_a - h_c, solved by Cramer's rule (exact to
    roundoff for the data); for a triangle flat in projection (Qhull's triangulation of a merged,
    co-circular facet) the face's plane gives the same point: x = -(n_x, n_y) / n_z.
    """
    a, b, c = faces.T
    e1, e2 = y[b] - y[a], y[c] - y[a]
    r1, r2 = h[a] - h[b], h[a] - h[c]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    scale = np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
    flat = np.abs(det) <= _FLAT_TRIANGLE * scale
    safe = np.where(flat, 1.0, det)
    x = np.c_[(r1 * e2[:, 1] - r2 * e1[:, 1]) / safe, (e1[:, 0] * r2 - e2[:, 0] * r1) / safe]
    if flat.any():
        x[flat] = -planes[flat, :2] / planes[flat, 2:3]
    return x


def _cell_polygons(hull: _Hull, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unclipped cells of the N real sites as convex polygons.

    Returns polygons (N,) object array (None for empty cells), the mean of each cell's vertices
    (N, 2) (an interior point) and its shoelace area (N,).
    """
    site = hull.faces.ravel()
    face = np.repeat(np.arange(len(hull.faces)), 3)
    real = site < n
    site, face = site[real], face[real]
    count = np.bincount(site, minlength=n)
    has = count >= 3  # a site on the lower hull has a full fan of at least 3 triangles
    site, face = site[has[site]], face[has[site]]
    xy = hull.vertices[face]
    mean = np.stack([np.bincount(site, xy[:, 0], n), np.bincount(site, xy[:, 1], n)], axis=1)
    mean /= np.maximum(count, 1)[:, None]
    # A convex polygon's vertices, sorted by angle around their mean, go round it counterclockwise.
    d = xy - mean[site]
    order = np.lexsort((np.arctan2(d[:, 1], d[:, 0]), site))
    site, d = site[order], d[order]
    # Co-circular sites give (nearly) repeated vertices, which roundoff may sort into a spike:
    # drop each vertex that (nearly) repeats the next one round its cell.
    size = np.zeros(n)
    np.maximum.at(size, site, np.abs(d).max(axis=1))
    keep = np.abs(d - d[_next_round(site)]).max(axis=1) > _REPEAT_RTOL * size[site]
    site, d = site[keep], d[keep]
    has &= np.bincount(site, minlength=n) >= 3  # a cell reduced to a point or a segment is empty
    site, d = site[has[site]], d[has[site]]
    # Shoelace relative to the mean: small cells far from the origin keep their precision.
    nxt = _next_round(site)
    cross = d[:, 0] * d[nxt, 1] - d[:, 1] * d[nxt, 0]
    shoelace = 0.5 * np.bincount(site, cross, n)
    rank = np.cumsum(has) - 1
    polygons = np.full(n, None, dtype=object)
    polygons[has] = shapely.polygons(shapely.linearrings(d + mean[site], indices=rank[site]))
    return polygons, mean, shoelace


def _next_round(site: np.ndarray) -> np.ndarray:
    """For rows grouped by ``site`` (sorted), the index of the next row of the same group, cyclically."""
    starts = np.r_[0, np.flatnonzero(np.diff(site)) + 1]
    nxt = np.arange(1, len(site) + 1)
    nxt[np.r_[starts[1:], len(site)] - 1] = starts
    return nxt


def _clip_cells(polygons: np.ndarray, mean: np.ndarray, shoelace: np.ndarray, dom: _Domain) -> tuple[np.ndarray, np.ndarray, dict]:
    """Classify the cells against D and compute area(W_i ∩ D).

    A cell whose bounding box meets no boundary edge's box is wholly inside or wholly outside:
    one interior point (its vertex mean) tells which. Only the others ("crossing", some of them
    merely near the boundary) go through GEOS. Boxes, not exact predicates, so that a cell left
    slightly invalid by roundoff cannot be misclassified.
    Returns status (N,) int8, areas (N,), and {site: W_i ∩ D} for the crossing cells.
    """
    n = len(polygons)
    idx = np.flatnonzero(np.not_equal(polygons, None))
    hit = dom.tree.query(polygons[idx])[0]
    crossing = idx[np.unique(hit)]
    rest = np.setdiff1d(idx, crossing)
    status = np.full(n, _OUTSIDE, dtype=np.int8)
    status[rest[shapely.contains_xy(dom.polygon, mean[rest, 0], mean[rest, 1])]] = _INSIDE
    status[crossing] = _CROSSING
    areas = np.where(status == _INSIDE, shoelace, 0.0)
    pieces = _polygonal(_intersect(polygons[crossing], dom.polygon))
    areas[crossing] = shapely.area(pieces)
    return status, areas, dict(zip(crossing.tolist(), pieces))


def _intersect(geoms: np.ndarray, polygon: shapely.Geometry) -> np.ndarray:
    """geoms ∩ polygon, repairing a cell that roundoff made invalid (a degenerate sliver)."""
    try:
        return shapely.intersection(geoms, polygon)
    except shapely.errors.GEOSException:
        return shapely.intersection(shapely.make_valid(geoms), polygon)


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Drop the line and point debris of cells that only touch D somewhere (GeometryCollections)."""
    for k in np.flatnonzero(shapely.get_type_id(geoms) == 7):
        parts = shapely.get_parts(geoms[k])
        polys = parts[shapely.get_type_id(parts) == 3]
        geoms[k] = polys[0] if len(polys) == 1 else shapely.multipolygons(polys)
    return geoms


def _facets(hull: _Hull, n: int, status: np.ndarray, dom: _Domain) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent pairs (E, 2), the length of their common facet inside D (E,), its segment (E, 2, 2).

    Edge (i, j) of the lower hull, shared by faces f and g, is the power edge from vertex f to
    vertex g. It lies in W_i and W_j, so it is wholly inside D when either cell is, wholly outside
    when either cell is; only edges between two crossing cells are clipped by GEOS.
    """
    nf = len(hull.faces)
    f = np.repeat(np.arange(nf), 3)
    k = np.tile(np.arange(3), nf)
    g = hull.neighbors.ravel()
    i = hull.faces[f, (k + 1) % 3]
    j = hull.faces[f, (k + 2) % 3]
    keep = (g > f) & (i < n) & (j < n)  # g > f: each edge once (g = -1: no lower face across)
    f, g, i, j = f[keep], g[keep], i[keep], j[keep]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    seg = np.stack([hull.vertices[f], hull.vertices[g]], axis=1)
    length = np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1)
    si, sj = status[lo], status[hi]
    length[(si == _OUTSIDE) | (sj == _OUTSIDE)] = 0.0
    clip = (si == _CROSSING) & (sj == _CROSSING) & (length > 0)
    if clip.any():
        length[clip] = shapely.length(shapely.intersection(shapely.linestrings(seg[clip]), dom.polygon))
    real = length > _FACET_RTOL * dom.radius
    order = np.lexsort((hi[real], lo[real]))
    pairs = np.stack([lo[real], hi[real]], axis=1)[order].astype(np.int64)
    return pairs, length[real][order], seg[real][order]
