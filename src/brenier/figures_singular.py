"""Figures of the singular set: where the OT map from a disk onto a 2-D data set tears.

``plot_singular_2d`` draws two panels. Left: the source domain cut into power cells, each filled
with a pale version of its target's colour, the regular power edges thin and grey, the singular
facets thick and black. Right: the data support's outline, the targets (small dark dots) and
generated points (``SemiDiscreteOT.sample``) coloured like the cell their source point fell in. A
colour seam on the left that follows a black curve is a jump of the map; on the right the
generated points fill each piece of the support without crossing the gaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import _cell_collection, _frame, _numpy, _outline_rings, _position_colormap, drawn_subset

__all__ = ["plot_singular_2d"]


def plot_singular_2d(ot, path, *, outline=None, n_generated: int = 5000, seed: int = 0,
                     boundary: str = "respect", title: str | None = None) -> Path:
    """Draw the singular set of a fitted 2-D ``SemiDiscreteOT`` (polygonal uniform source) to a PNG.

    outline: the data support (``ToyData.outline()``, a (K, 2) array or a shapely geometry).
    n_generated points are drawn with ``ot.sample(..., boundary=boundary)``; of more than 5,000
    data points a seeded subset of 5,000 is drawn (the title says so). 12 x 6 inches at
    150 dpi, written atomically. Returns the path.
    """
    import shapely
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from ._io import atomic_write

    S = ot.singular_set_ if getattr(ot, "singular_set_", None) is not None else ot.singular_set()
    pd = ot.power_diagram()
    sites = _numpy(pd.targets)
    cmap = _position_colormap(sites)
    colours = cmap(sites)
    pale = 0.55 * colours + 0.45

    fig = Figure(figsize=(12.0, 6.2), dpi=150, layout="constrained")
    ax_s, ax_t = fig.subplots(1, 2)

    # left: power diagram, singular facets in black
    lw = float(np.clip(6.0 / np.sqrt(len(sites)), 0.05, 0.4))
    for coll in _cell_collection(pd.cells(), pale, lw):
        ax_s.add_collection(coll, autolim=False)
    n = len(S.modes)
    sing = np.isin(pd.adjacency[:, 0] * n + pd.adjacency[:, 1], S.pair_keys(regular=False))
    segs = shapely.intersection(shapely.linestrings(pd.facet_segments[sing]), pd.domain)
    parts = [np.asarray(g.coords) for g in shapely.get_parts(segs) if not g.is_empty and g.length > 0]
    if parts:
        ax_s.add_collection(LineCollection(parts, colors="black", linewidths=2.0, capstyle="round", zorder=3))
    rings = _outline_rings(pd.domain)
    for r in rings:
        ax_s.plot(r[:, 0], r[:, 1], color="0.1", lw=1.0)
    _frame(ax_s, np.concatenate(rings))
    ax_s.set_title(f"Source disk: {len(sites):,} power cells; singular set (black): {S.n_facets} facets", fontsize=11)

    # right: support, targets, generated points coloured by their source cell
    X, _, cells = ot.sample(n_generated, seed=seed, boundary=boundary, return_source=True)
    X, cells = _numpy(X), np.asarray(_numpy(cells), dtype=np.int64)
    out_rings = _outline_rings(outline)
    for r in out_rings:
        ax_t.plot(r[:, 0], r[:, 1], color="0.35", lw=1.0, zorder=1)
    size = float(np.clip(4000.0 / n_generated, 0.6, 6.0))
    ax_t.scatter(X[:, 0], X[:, 1], s=size, c=colours[cells], linewidths=0, zorder=2)
    show = drawn_subset(len(sites), seed=seed)   # at most 5,000 data points drawn (seeded subset)
    ax_t.scatter(sites[show, 0], sites[show, 1], s=0.8, c="0.1", linewidths=0, zorder=3)
    _frame(ax_t, np.concatenate([sites, X] + out_rings))
    shown = "" if len(show) == len(sites) else f" ({len(show):,} drawn)"
    ax_t.set_title(f"Target: {len(sites):,} data points{shown} (black) and {n_generated:,} generated points\n"
                   f"(colour = the source cell they came from; {S.n_modes} mode{'s' if S.n_modes != 1 else ''})",
                   fontsize=11)
    if title:
        fig.suptitle(title, fontsize=13)

    def _save(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=150, facecolor="white")

    return atomic_write(path, _save)
