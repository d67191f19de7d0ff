"""Boundary-aware generation with a semi-discrete OT map, and walks that never change mode.

The piecewise-linear extension (``sample``)
-------------------------------------------
The OT map T(x) = y_{i(x)} only ever returns the targets themselves. To generate *new* points we
draw x from the source measure and blend the targets of the cells around x. Let
s_j(x) = <x, y_j> + h_j be the scores, sorted s_(1) >= s_(2) >= ... , with cells i_1, i_2, ...;
i_1 = i(x) is x's own cell. With k neighbours (default k = min(4 (d + 1), 16): 12 in 2-D),

    w_m(x) = a_m(x) · (s_(m)(x) - s_(k+1)(x))^p,      m = 1..k,
    G(x)   = Σ_m w_m(x) y_{i_m} / Σ_m w_m(x),

where a_m = 1 for ``boundary="ignore"``; for ``boundary="respect"`` a_1 = 1 and a_m = 1 only when
(i_1, i_m) is a *regular* facet of the singular set (same mode, the segment y_{i_1} y_{i_m} runs
through the data), else 0. Each weight is a continuous function of x: the score gaps are affine in
x, and a cell that enters or leaves the k best does so with s_(m) = s_(k+1), i.e. with weight 0.
Deep inside W_i the gaps to the (k+1)-th score dominate and G(x) stays near y_i; near a vertex of
the power diagram the neighbours share the weight, so G interpolates between adjacent targets
(the barycentric extension of the map on the dual triangulation in 2-D, up to the weights). With
"respect" the blend is cut exactly on the singular facets (where the map itself tears), so no
point is put in a gap between modes or across a concavity: G(x) lies in the convex hull of x's
target and its regular neighbours. Away from cells adjacent to the singular set it is continuous.

Critical crossings and the reflected walk (``reflect_walk``)
-----------------------------------------------------------
A path in the source that crosses a singular facet makes its image jump across the boundary of
the data manifold: a critical event (``SemiDiscreteOT.crossings``). ``reflect_walk`` is a
Gaussian random walk in the source that folds back (mirror reflection in the facet's hyperplane
<x, y_a - y_b> + h_a - h_b = 0) whenever a step would cross a singular facet, and at the source
boundary for a ball or box; its image therefore never leaves its mode.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._array import as_points, to_caller

__all__ = ["sample", "reflect_walk", "BOUNDARY_RULES"]

BOUNDARY_RULES = ("respect", "ignore")


def _check_int(v, name: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def _seed(seed) -> int:
    if seed is None:
        return int(torch.seed() % 2**62)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer or None, got {seed!r}")
    return int(seed)


def _singular(ot):
    S = getattr(ot, "singular_set_", None)
    return S if S is not None else ot.singular_set()


def _barycentric_frame(ot):
    """Cell centroids (N, 2), their Delaunay triangulation and, per target, its incident triangles
    (N, D) padded with -1; cached per fitted heights (2-D polygonal sources only)."""
    cache = getattr(ot, "_brenier_bary", None)
    if cache is not None and cache[0] is ot._unique_heights:
        return cache[1]
    import shapely
    from scipy.spatial import Delaunay

    cells = np.asarray(ot.power_diagram().cells(), dtype=object)
    n = len(cells)
    ok = shapely.area(cells) > 0
    cent = np.full((n, 2), np.nan)
    cent[ok] = shapely.get_coordinates(shapely.centroid(cells[ok]))
    site = np.flatnonzero(ok)
    tri = Delaunay(cent[site])
    simplices = site[tri.simplices]                      # (T, 3) target indices
    owner = simplices.reshape(-1)
    which = np.repeat(np.arange(len(simplices)), 3)
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=n)
    incident = np.full((n, max(int(counts.max()), 1)), -1, dtype=np.int64)
    start = np.r_[0, np.cumsum(counts)[:-1]]
    col = np.arange(len(owner)) - np.repeat(start, counts)
    incident[owner[order], col] = which[order]
    frame = {"simplices": simplices, "transform": tri.transform, "incident": incident}
    ot._brenier_bary = (ot._unique_heights, frame)
    return frame


def _barycentric(ot, x: np.ndarray, own: np.ndarray, S):
    """(idx (M, 3), weights (M, 3), found (M,)): the centroid triangle holding x, among those
    incident to x's own cell's centroid, and x's barycentric coordinates in it. With S given, a
    triangle counts only if its three targets are pairwise compatible (same mode, regular)."""
    fr = _barycentric_frame(ot)
    cand = fr["incident"][own]                            # (M, D)
    valid = cand >= 0
    c = np.where(valid, cand, 0)
    T = fr["transform"][c]                                # (M, D, 3, 2)
    b = np.einsum("mdij,mdj->mdi", T[:, :, :2], x[:, None, :] - T[:, :, 2])
    lam = np.concatenate([b, 1.0 - b.sum(axis=2, keepdims=True)], axis=2)   # (M, D, 3)
    inside = valid & (lam.min(axis=2) >= -1e-12)
    found = inside.any(axis=1)
    pick = c[np.arange(len(x)), inside.argmax(axis=1)]
    idx = fr["simplices"][pick]
    lam = lam[np.arange(len(x)), inside.argmax(axis=1)].clip(0.0, None)
    if S is not None:
        ok = (S.compatible(idx[:, 0], idx[:, 1]) & S.compatible(idx[:, 1], idx[:, 2])
              & S.compatible(idx[:, 0], idx[:, 2]))
        found &= ok
    lam = lam / lam.sum(axis=1, keepdims=True).clip(1e-300, None)
    return idx, lam, found


def sample(ot, n: int, seed: int | None = None, boundary: str = "respect", *, method: str = "auto",
           k: int | None = None, power: float = 1.0, return_source: bool = False):
    """``n`` new points G(x), x ~ source, from the piecewise-linear extension of the map: (n, d).

    See the module docstring for the formula. ``boundary="respect"`` blends only regular
    neighbours (computes ``ot.singular_set()`` once if it is not cached); ``"ignore"`` blends
    all k best cells. ``seed=None`` draws fresh randomness. Returns the caller's kind (NumPy if
    the map was fit on NumPy); with ``return_source`` also the source points x (n, d) and their
    own cells (n,) int64 (unique-target indices).
    Cost: one chunked top-(k+1) pass over the targets, O(n N d).
    """
    ot._check_fitted()
    n = _check_int(n, "n", 0)
    if boundary not in BOUNDARY_RULES:
        raise ValueError(f"boundary: expected 'respect' or 'ignore', got {boundary!r}")
    if not (isinstance(power, (int, float)) and not isinstance(power, bool) and math.isfinite(power) and power > 0):
        raise ValueError(f"power: expected a positive number, got {power!r}")
    if method not in ("auto", "barycentric", "scores"):
        raise ValueError(f"method: expected 'auto', 'barycentric' or 'scores', got {method!r}")
    src = ot.source_
    can_bary = ot.targets_.shape[1] == 2 and src.uniform and src.as_polygon() is not None
    if method == "barycentric" and not can_bary:
        raise ValueError("method: 'barycentric' needs a uniform 2-D polygonal source (Polygon, UniformBox(2), UniformBall(2))")
    bary = method == "barycentric"
    seed = _seed(seed)
    y = ot._unique_targets.double()
    h = ot._unique_heights.double()
    n_t, d = y.shape
    k = min(4 * (d + 1), 16) if k is None else _check_int(k, "k", 1)
    k = min(k, n_t - 1)
    S = _singular(ot) if boundary == "respect" else None

    x = ot.source_.sample(n, seed=seed, quasi=False, device=ot.device_, dtype=torch.float32)
    out, own = [], []
    for s in range(0, n, 16384):
        xb = x[s:s + 16384]
        _, idx = ot._potential.topk(xb, k + 1)
        idx = idx.cpu()
        xd = xb.cpu().double()
        sc = (xd[:, None, :] * y[idx]).sum(dim=2) + h[idx]          # (b, k+1) float64 scores
        sc, order = torch.sort(sc, dim=1, descending=True)             # float64 re-sort of float32 top-k
        idx = idx.gather(1, order)
        w = (sc[:, :k] - sc[:, k:]).clamp_min(0.0) ** power
        if S is not None:
            own_b = idx[:, :1].expand(-1, k).reshape(-1).numpy()
            allowed = S.compatible(own_b, idx[:, :k].reshape(-1).numpy()).reshape(-1, k)
            w = w * torch.from_numpy(allowed)
        tot = w.sum(dim=1, keepdim=True)
        w = torch.where(tot > 0, w / tot.clamp_min(1e-300), torch.nn.functional.one_hot(torch.zeros(len(w), dtype=torch.int64), k).double())
        g = (w[:, :, None] * y[idx[:, :k]]).sum(dim=1)
        if bary:
            bi, bl, found = _barycentric(ot, xd.numpy(), idx[:, 0].numpy(), S)
            gb = (torch.from_numpy(bl)[:, :, None] * y[torch.from_numpy(bi)]).sum(dim=1)
            g = torch.where(torch.from_numpy(found)[:, None], gb, g)
        out.append(g)
        own.append(idx[:, 0])
    g = torch.cat(out) if out else torch.empty(0, d, dtype=torch.float64)
    cells = torch.cat(own) if own else torch.empty(0, dtype=torch.int64)
    like = ot._like_torch
    g = g.to(ot.targets_.dtype) if like else g
    if return_source:
        return to_caller(g, like), to_caller(x.cpu().double(), like), to_caller(cells, like)
    return to_caller(g, like)


# ------------------------------------------------------------------------- the walk
def _fold_into_source(source, x: torch.Tensor) -> torch.Tensor | None:
    """Reflect a point that left a ball or box back inside; None when it cannot be done."""
    from .sources import UniformBall, UniformBox

    if bool(source.contains(x[None].numpy())[0]):
        return x
    if isinstance(source, UniformBall):
        c = torch.as_tensor(source.center, dtype=torch.float64)
        v = x - c
        r = float(v.norm())
        r2 = 2 * source.radius - r
        return c + v * (r2 / r) if 0 <= r2 <= source.radius else None
    if isinstance(source, UniformBox):
        lo, hi = source.low, source.high
        span = hi - lo
        z = torch.remainder(x - lo, 2 * span)
        return lo + torch.where(z > span, 2 * span - z, z)
    return None


def _first_singular(ot, a, b, S):
    """(t, i, j) of the first singular facet (``S.separates``) crossed on the segment a -> b, or None."""
    from .singular import cell_walk

    cells, entries = cell_walk(ot, a, b)
    if len(cells) > 1:
        c = np.asarray(cells, dtype=np.int64)
        hit = np.flatnonzero(S.separates(c[:-1], c[1:]))
        if len(hit):
            m = int(hit[0]) + 1
            return entries[m], cells[m - 1], cells[m]
    return None


def reflect_walk(ot, n_steps: int, step: float, seed: int | None = None, *, x0=None, max_reflections: int = 8):
    """A random walk in the source, (n_steps + 1, d), that folds back at singular facets.

    Each step proposes x' = x + step · z / sqrt(d), z ~ N(0, I) (mean step length ≈ ``step``).
    A proposal that leaves a ball or box source is reflected at its boundary. If the segment
    x -> x' crosses a singular facet (``S.separates``: a sampled singular facet or a change of
    mode) between cells a (x's side) and b, x' is replaced by its
    mirror image in the facet's hyperplane <x, y_a - y_b> + h_a - h_b = 0 and the segment is
    checked again (up to ``max_reflections`` times; if it still crosses, the walk stays put).
    So ``ot.crossings(path)`` of the result is empty and every point maps into the start's mode.
    x0 : start (d,), default a source sample. Returns the caller's kind.
    """
    ot._check_fitted()
    n_steps = _check_int(n_steps, "n_steps", 1)
    if isinstance(step, bool) or not isinstance(step, (int, float, np.floating)) or not (math.isfinite(step) and step > 0):
        raise ValueError(f"step: expected a positive finite number, got {step!r}")
    seed = _seed(seed)
    d = ot.targets_.shape[1]
    S = _singular(ot)
    y = ot._unique_targets.double()
    h = ot._unique_heights.double()
    gen = torch.Generator().manual_seed(seed)
    if x0 is None:
        x = ot.source_.sample(1, seed=seed, quasi=False, dtype=torch.float64)[0].cpu()
    else:
        x = as_points(x0, "x0", dim=d, dtype=torch.float64)[0]
        if not bool(ot.source_.contains(x[None].numpy())[0]):
            raise ValueError("x0: the starting point lies outside the source's support")
    path = [x.clone()]
    for _ in range(n_steps):
        prop = x + float(step) * torch.randn(d, generator=gen, dtype=torch.float64) / math.sqrt(d)
        prop = _fold_into_source(ot.source_, prop)
        nxt = None
        for _r in range(max_reflections + 1):
            if prop is None:
                break
            hit = _first_singular(ot, x, prop, S)
            if hit is None:
                nxt = prop
                break
            _, a, b = hit
            nrm = y[a] - y[b]
            off = float(prop @ nrm + h[a] - h[b])      # < 0: prop is on b's side
            prop = prop - 2.0 * off / float(nrm @ nrm) * nrm
            prop = _fold_into_source(ot.source_, prop)
        if nxt is not None:
            x = nxt
        path.append(x.clone())
    p = torch.stack(path)
    return to_caller(p.to(ot.targets_.dtype) if ot._like_torch else p, ot._like_torch)

from .critical import critical_frames  # noqa: E402,F401  (issue 6: brenier.sampling.critical_frames)
