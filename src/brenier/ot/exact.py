"""Exact 2-D semi-discrete optimal transport by damped Newton on power diagrams.

Source: the uniform measure on a polygon D (density 1/area(D)); target: sum_i nu_i delta_{y_i}.
The optimal (Brenier) map is x -> argmax_i <x, y_i> + h_i for the heights h minimising the
convex Kantorovich energy

    E(h) = ∫_D max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i,

whose gradient is G(h) = mu(h) - nu (mu_i(h): the mass of the power cell W_i in D) and whose
Hessian is the graph Laplacian of the facet lengths (see :mod:`brenier.ot.power_diagram`).
Both are computed exactly, so Newton converges quadratically to machine precision.

Reference: J. Kitagawa, Q. Mérigot, B. Thibert, "Convergence of a Newton algorithm for
semi-discrete optimal transport", J. Eur. Math. Soc. 21 (2019) 2603-2651 (Algorithm 1).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import shapely
from shapely.ops import polylabel

from .power_diagram import PowerDiagram, power_diagram

__all__ = ["initial_heights", "solve_exact"]

#: line search: at most this many step halvings (tau >= 2^-20) before declaring a stall
_MAX_HALVINGS = 20
#: initial_heights: fraction of the inscribed ball that the contracted targets fill
_SHRINK = 0.9

Callback = Callable[[int, np.ndarray, float], object]


def initial_heights(targets: np.ndarray, domain: shapely.Polygon, *, shrink: float = _SHRINK) -> np.ndarray:
    """(N,) heights whose power cells in ``domain`` all have positive mass.

    The targets (N, 2) are contracted into a ball B(c, r) inside D, z_i = s y_i + b, and
    h_i = -|z_i|^2 / (2 s): then argmax_i <x, y_i> + h_i = argmin_i |x - z_i|, so the cells are the
    Voronoi cells of the z_i, each containing its own z_i, an interior point of D. (c, r) is the
    pole of inaccessibility of D and its distance to the boundary; the z_i fill ``shrink`` * r.
    Distinct targets are required (equal targets would share one cell).
    """
    y = _check_targets(targets)
    dom = _check_domain(domain)
    if not 0 < shrink < 1:
        raise ValueError(f"shrink: expected a number in (0, 1), got {shrink!r}")
    pole = polylabel(dom, tolerance=1e-3 * np.sqrt(dom.area))
    centre = np.array([pole.x, pole.y])
    radius = float(dom.boundary.distance(pole))
    mid = 0.5 * (y.min(axis=0) + y.max(axis=0))
    spread = float(np.sqrt(((y - mid) ** 2).sum(axis=1)).max())
    s = shrink * radius / spread if spread > 0 else 1.0
    z = centre + s * (y - mid)
    h = -(z**2).sum(axis=1) / (2 * s)
    # Constants change no cell; centred heights keep the finest float64 resolution (the Newton
    # steps have mean zero, so the solver's heights stay centred).
    return h - h.mean()


def solve_exact(
    targets: np.ndarray,
    weights: np.ndarray,
    domain: shapely.Polygon,
    heights: np.ndarray | None = None,
    *,
    tol: float = 1e-10,
    max_iter: int = 50,
    callback: Callback | None = None,
) -> tuple[np.ndarray, dict]:
    """Heights h (N,) transporting uniform(D) onto sum_i nu_i delta_{y_i}, by damped Newton.

    targets: (N, 2) distinct points y_i; weights: (N,) positive nu_i (normalised to sum 1);
    domain: a valid shapely Polygon (convex or not, holes allowed) carrying the uniform source;
    heights: (N,) starting heights, by default :func:`initial_heights` (a start with an empty
    cell is replaced by it, with a warning).

    Each step solves L delta = G(h) = mu(h) - nu with L the Hessian (a graph Laplacian; its kernel,
    the constants, is removed by fixing delta_{N-1} = 0 and re-centring), then tries
    h - tau delta for tau = 1, 1/2, 1/4, ... until min_i mu_i >= eps0 and
    |G(h - tau delta)| <= (1 - tau/2) |G(h)|, with eps0 = min(min nu, min mu(h0)) / 2
    (Kitagawa, Mérigot & Thibert 2019, Algorithm 1: linear convergence, then quadratic).
    Stops when max_i |mu_i - nu_i| / nu_i <= tol, after ``max_iter`` steps, or when the line search
    stalls (roundoff floor): ``info["converged"]`` tells which.

    callback(iteration, heights, max_rel_error) runs at the start (iteration 0) and after each
    step with the current (N,) heights, so a caller can show progress or keep the last iterate
    if interrupted.

    Returns (heights (N,), info) with info keys: converged, n_iter, history (max relative error
    at iterations 0..n_iter), max_rel_error, tv_error (1/2 sum |mu - nu|), time (s), n_diagrams.
    """
    y = _check_targets(targets)
    nu = _check_weights(weights, len(y))
    dom = _check_domain(domain)
    if not (tol >= 0 and np.isfinite(tol)):
        raise ValueError(f"tol: expected a finite number >= 0, got {tol!r}")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter: expected a non-negative integer, got {max_iter!r}")
    t0 = time.perf_counter()
    h, pd = _start(y, heights, dom)
    n_diagrams = 1 if heights is None or pd is not None else 2
    pd = pd if pd is not None else power_diagram(y, h, dom)
    g = pd.masses - nu
    eps0 = 0.5 * min(nu.min(), pd.masses.min())
    err = _max_rel(g, nu)
    history = [err]
    converged, n_iter = err <= tol, 0
    _notify(callback, 0, h, err)
    while not converged and n_iter < max_iter:
        delta = _newton_direction(pd.hessian(), g)
        step = _line_search(y, h, delta, g, nu, dom, eps0)
        n_diagrams += step.n_tried
        if step.diagram is None:
            # The residual no longer decreases: the roundoff floor, which close targets raise
            # (d mu_i / d h_j ~ facet length / |y_i - y_j|, while h is known to ~1e-16 |h|).
            warnings.warn(
                f"solve_exact: stalled at max relative error {err:.3g} > tol = {tol:g} "
                "(float64 roundoff floor); the heights are the best found",
                RuntimeWarning,
                stacklevel=2,
            )
            break
        h, pd = step.heights, step.diagram
        g = pd.masses - nu
        err = _max_rel(g, nu)
        n_iter += 1
        history.append(err)
        converged = err <= tol
        _notify(callback, n_iter, h, err)
    info = {
        "converged": bool(converged),
        "n_iter": n_iter,
        "history": history,
        "max_rel_error": err,
        "tv_error": float(0.5 * np.abs(g).sum()),
        "time": time.perf_counter() - t0,
        "n_diagrams": n_diagrams,
    }
    return h, info


def _start(y: np.ndarray, heights, dom: shapely.Polygon) -> tuple[np.ndarray, PowerDiagram | None]:
    """Starting heights, and their diagram when it had to be computed to check them."""
    if heights is None:
        return initial_heights(y, dom), None
    h = np.array(heights, dtype=np.float64)
    if h.shape != (len(y),) or not np.all(np.isfinite(h)):
        raise ValueError(f"heights: expected {len(y)} finite numbers to match targets, got shape {h.shape}")
    pd = power_diagram(y, h, dom)
    if pd.masses.min() > 0:
        return h, pd
    # Damped Newton needs every cell non-empty at the start (eps0 > 0).
    warnings.warn(
        f"solve_exact: the given heights leave {int((pd.masses <= 0).sum())} empty cell(s); "
        "starting from initial_heights instead",
        RuntimeWarning,
        stacklevel=3,
    )
    return initial_heights(y, dom), None


class _Step:
    """Outcome of a line search: the accepted heights and diagram (None if it stalled)."""

    def __init__(self, heights: np.ndarray | None, diagram: PowerDiagram | None, n_tried: int):
        self.heights, self.diagram, self.n_tried = heights, diagram, n_tried


def _line_search(y, h, delta, g, nu, dom, eps0) -> _Step:
    """Backtracking on tau = 1, 1/2, ...: keep cells above eps0 and cut |G| by the factor 1 - tau/2."""
    g_norm = np.linalg.norm(g)
    # A step below the float64 resolution of h cannot change the diagram: stop halving there.
    resolution = 4 * np.finfo(np.float64).eps * max(float(np.abs(h).max()), 1e-300)
    step = float(np.abs(delta).max())
    tau = 1.0
    for k in range(_MAX_HALVINGS + 1):
        if k > 0 and tau * step < resolution:
            return _Step(None, None, k)
        h_try = h - tau * delta
        pd = power_diagram(y, h_try, dom)
        mu = pd.masses
        if mu.min() >= eps0 and np.linalg.norm(mu - nu) <= (1 - tau / 2) * g_norm:
            return _Step(h_try, pd, k + 1)
        tau *= 0.5
    return _Step(None, None, _MAX_HALVINGS + 1)


def _newton_direction(hess: sp.csr_matrix, g: np.ndarray) -> np.ndarray:
    """(N,) delta with L delta = g, mean zero.

    L is a connected graph Laplacian (all cells non-empty, D connected): its kernel is the
    constants, so fixing delta_{N-1} = 0 leaves a non-singular system; the minimum-degree ordering
    for symmetric matrices keeps the LU fill of this planar graph small.
    """
    n = len(g)
    delta = np.zeros(n)
    if n > 1:
        reduced = hess[:-1, :-1].tocsc()
        lu = spla.splu(reduced, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        delta[:-1] = lu.solve(g[:-1])
    return delta - delta.mean()


def _max_rel(g: np.ndarray, nu: np.ndarray) -> float:
    return float(np.max(np.abs(g) / nu))


def _notify(callback: Callback | None, it: int, h: np.ndarray, err: float) -> None:
    if callback is not None:
        callback(it, h.copy(), err)


def _check_targets(targets) -> np.ndarray:
    y = np.array(targets, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2 or y.shape[0] < 1:
        raise ValueError(f"targets: expected shape (N, 2) with N >= 1, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("targets: contains NaN or infinite values")
    if len(np.unique(y, axis=0)) < len(y):
        raise ValueError("targets: contains repeated points (merge them and add their weights)")
    return y


def _check_weights(weights, n: int) -> np.ndarray:
    nu = np.array(weights, dtype=np.float64)
    if nu.shape != (n,):
        raise ValueError(f"weights: expected shape ({n},) to match targets, got {nu.shape}")
    if not np.all(np.isfinite(nu)) or nu.min() <= 0:
        raise ValueError("weights: expected finite, strictly positive numbers")
    return nu / nu.sum()


def _check_domain(domain) -> shapely.Polygon:
    if not isinstance(domain, shapely.Polygon):
        raise ValueError(f"domain: expected a shapely Polygon (one connected piece), got {type(domain).__name__}")
    if domain.is_empty or not domain.is_valid or domain.area <= 0:
        raise ValueError(f"domain: expected a valid polygon of positive area ({shapely.is_valid_reason(domain)})")
    return domain
