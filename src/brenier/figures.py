"""Figures of fitted transport maps (matplotlib, imported lazily, Agg canvas, atomic PNG writes).

``plot_transport_2d`` draws a 2-D semi-discrete map as two panels: the source domain cut into
its power cells W_i, and the targets y_i. A cell and its target share one colour, and that colour
varies continuously with the target's position, so the figure shows where each part of the
source is sent: neighbouring targets get similar colours, and a colour seam inside the source
marks a discontinuity of the map (a singular set of the Brenier potential).
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["plot_transport_2d", "position_colors"]

_FIGSIZE = (10.0, 5.0)
_DPI = 150


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _position_colormap(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A continuous map from 2-D positions to RGB, fitted to the spread of ``reference`` (M, 2).

    Positions are centred on the middle of the reference's bounding box and scaled per axis by
    the half-widths, so that an elongated cloud still uses the whole colour wheel. Hue is the
    angle around the centre, saturation grows with the distance from it (reaching full
    saturation at 60% of the way out) and the centre itself is a neutral grey; the map is
    therefore continuous everywhere, the centre included.
    """
    ref = np.asarray(reference, dtype=np.float64)
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    centre = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    half = np.where(half > 0, half, max(float(half.max()), 1.0))

    def colors(points: np.ndarray) -> np.ndarray:
        z = (np.asarray(points, dtype=np.float64) - centre) / half
        hue = (np.arctan2(z[:, 1], z[:, 0]) / (2 * np.pi)) % 1.0
        t = np.clip(np.hypot(z[:, 0], z[:, 1]) / 0.6, 0.0, 1.0)
        sat = 0.85 * t
        val = 0.62 + 0.30 * t  # grey (0.62) at the centre, bright colours outside
        return np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, sat, val)]).reshape(-1, 3)

    return colors


def position_colors(points, reference=None) -> np.ndarray:
    """RGB colours (M, 3) in [0, 1] for 2-D ``points`` (M, 2), continuous in the position.

    ``reference`` (default: ``points``) fixes the centre and scale of the colour wheel; pass the
    same reference to colour two point sets consistently.
    """
    pts = _numpy(points)
    return _position_colormap(pts if reference is None else _numpy(reference))(pts)


def _polygon_parts(geoms) -> tuple[np.ndarray, np.ndarray]:
    """The polygonal parts (P,) of ``geoms`` with positive area and the index of their geometry."""
    import shapely

    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    parts, owner = shapely.get_parts(arr, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
    parts, owner = parts[keep], owner[keep]
    keep = shapely.area(parts) > 0
    return parts[keep], owner[keep]


def _ring_vertices(rings) -> list[np.ndarray]:
    import shapely

    coords, idx = shapely.get_coordinates(rings, return_index=True)
    return np.split(coords, np.flatnonzero(np.diff(idx)) + 1) if len(coords) else []


def _cell_collection(cells, facecolors: np.ndarray, linewidth: float):
    """One collection for all cells: a PolyCollection, plus compound paths for cells with holes."""
    import shapely
    from matplotlib.collections import PathCollection, PolyCollection
    from matplotlib.path import Path as MPath

    parts, owner = _polygon_parts(cells)
    holed = shapely.get_num_interior_rings(parts) > 0
    edge = dict(edgecolors=(0.1, 0.1, 0.1, 0.55), linewidths=linewidth, antialiaseds=True)
    out = []
    simple = ~holed
    verts = _ring_vertices(shapely.get_exterior_ring(parts[simple]))
    out.append(PolyCollection(verts, facecolors=facecolors[owner[simple]], closed=True, **edge))
    if holed.any():
        paths = []
        for poly in shapely.orient_polygons(parts[holed]):  # exterior CCW, holes CW: nonzero fill
            rings = [np.asarray(poly.exterior.coords)] + [np.asarray(r.coords) for r in poly.interiors]
            paths.append(MPath.make_compound_path(*[MPath(r, closed=True) for r in rings]))
        out.append(PathCollection(paths, facecolors=facecolors[owner[holed]], **edge))
    return out


def _outline_rings(outline) -> list[np.ndarray]:
    """Polylines from ``outline``: a (K, 2) array, a list of them, or a shapely geometry."""
    if outline is None:
        return []
    try:
        import shapely

        if isinstance(outline, shapely.Geometry):
            parts = shapely.get_parts(outline)
            rings = []
            for p in parts:
                if shapely.get_type_id(p) == 3:
                    rings += [np.asarray(p.exterior.coords)] + [np.asarray(r.coords) for r in p.interiors]
                else:
                    rings.append(shapely.get_coordinates(p))
            return rings
    except ImportError:  # pragma: no cover
        pass
    if isinstance(outline, np.ndarray) and outline.ndim == 2:
        outline = [outline]
    rings = [np.asarray(r, dtype=np.float64) for r in outline]
    for r in rings:
        if r.ndim != 2 or r.shape[1] != 2:
            raise ValueError(f"outline: expected (K, 2) polylines, got an array of shape {r.shape}")
    return rings


def _source_name(source) -> str:
    kind = type(source).__name__
    return {"UniformBall": "uniform disk", "UniformBox": "uniform square", "Polygon": "uniform polygon"}.get(kind, kind)


#: the most points one scatter draws; beyond it a seeded uniform subset (60,000 dots show no more
#: than 5,000 and cost seconds and megabytes of PNG)
MAX_DRAWN = 5_000


def drawn_subset(n: int, limit: int = MAX_DRAWN, seed: int = 0) -> np.ndarray:
    """(m,) sorted int64 indices of the points a scatter draws out of n: all, or a seeded ``limit``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _frame(ax, xy: np.ndarray, pad: float = 0.05) -> None:
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    m = pad * float(max(hi - lo))
    ax.set_xlim(lo[0] - m, hi[0] + m)
    ax.set_ylim(lo[1] - m, hi[1] + m)
    ax.set_aspect("equal")
    ax.set_axis_off()


def plot_transport_2d(ot, path, title: str | None = None, outline=None) -> Path:
    """Draw a fitted 2-D ``SemiDiscreteOT`` and save it as a PNG at ``path`` (atomically).

    Left: the source domain cut into the power cells W_i (thin edges), each filled with the
    colour of its target. Right: the targets y_i in the same colours, with ``outline`` (the
    data support: a (K, 2) array, a list of them such as ``ToyData.outline()``, or a shapely
    geometry) drawn in grey. Colours depend continuously on the target position
    (``position_colors``). The source must be a uniform 2-D polygonal measure (``Polygon``,
    ``UniformBox(2)``, ``UniformBall(2)``), as for ``ot.power_diagram()``.

    10 x 5 inches at 150 dpi; a few seconds at most for N = 10,000 cells. Every cell is drawn; of
    more than 5,000 targets a seeded subset of 5,000 is (``drawn_subset``; the title says so).
    Returns the path.
    """
    from matplotlib.figure import Figure  # lazily: importing brenier must not import matplotlib

    from ._io import atomic_write

    diagram = ot.power_diagram()  # raises ValueError unless 2-D with a polygonal source
    sites = _numpy(diagram.targets)
    targets = _numpy(ot.targets_)
    cmap = _position_colormap(sites)
    site_colors = cmap(sites)
    n = len(targets)

    fig = Figure(figsize=_FIGSIZE, dpi=_DPI, layout="constrained")
    ax_src, ax_tgt = fig.subplots(1, 2)

    # Left: the power diagram restricted to the source domain.
    lw = float(np.clip(8.0 / np.sqrt(len(sites)), 0.05, 0.5))
    for coll in _cell_collection(diagram.cells(), site_colors, lw):
        ax_src.add_collection(coll, autolim=False)
    domain_rings = _outline_rings(diagram.domain)
    for r in domain_rings:
        ax_src.plot(r[:, 0], r[:, 1], color="0.15", lw=0.8, solid_joinstyle="round")
    _frame(ax_src, np.concatenate(domain_rings))
    n_cells = int(np.count_nonzero(diagram.areas > 0))
    ax_src.set_title(f"Source: {_source_name(ot.source_)}, {n_cells:,} power cells", fontsize=11)

    # Right: the targets, coloured like their cells, over the support outline.
    rings = _outline_rings(outline)
    for r in rings:
        ax_tgt.plot(r[:, 0], r[:, 1], color="0.55", lw=0.8, solid_joinstyle="round", zorder=1)
    w = _numpy(ot.weights_)
    size = float(np.clip(6000.0 / n, 0.8, 14.0))
    # marker area follows the weight (within limits that keep every point visible)
    sizes = size * np.clip(w / w.mean(), 0.3, 6.0) if np.ptp(w) > 1e-9 * w.mean() else size
    show = drawn_subset(n)
    sizes = sizes[show] if np.ndim(sizes) else sizes
    ax_tgt.scatter(targets[show, 0], targets[show, 1], s=sizes, c=cmap(targets[show]), linewidths=0, zorder=2,
                   rasterized=False)
    _frame(ax_tgt, np.concatenate([targets] + rings))
    shown = "" if len(show) == n else f", {len(show):,} drawn"
    ax_tgt.set_title(f"Targets: {n:,} points{shown} (cell colour = its target's colour)", fontsize=11)

    if title:
        fig.suptitle(title, fontsize=13)

    def _save(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white")

    return atomic_write(path, _save)
