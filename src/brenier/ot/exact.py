"""Exact 2-D semi-discrete optimal transport by damped Newton on power diagrams.

Source: the uniform measure on a polygon D (density 1/area(D)); target: sum_i nu_i delta_{y_i}.
The optimal (Brenier) map is x -> argmax_i <x, y_i> + h_i for the heights h minimising the
convex Kantorovich energy

    E(h) = ∫_D max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i,

whose gradient is G(h) = mu(h) - nu (mu_i(h): the mass of the power cell W_i in D) and whose
Hessian is the graph Laplacian of the facet lengths (see :mod:`brenier.ot.power_diagram`).
Both are computed exactly, so Newton converges quadratically to machine precision.

From the contracted start of :func:`initial_heights`, the damped phase is short on convex
domains (about 10 steps for N = 10^4) but can crawl on far-from-convex ones; a homotopy from the
convex hull of D (see :func:`solve_exact`) then takes over. The attainable precision is limited
by float64 heights: close targets make the masses sensitive (d mu_i / d h_j ~ facet length /
|y_i - y_j|), about 1e-10 relative error for 6e4 uniform random targets.

Reference: J. Kitagawa, Q. Mérigot, B. Thibert, "Convergence of a Newton algorithm for
semi-discrete optimal transport", J. Eur. Math. Soc. 21 (2019) 2603-2651 (Algorithm 1).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import shapely
from shapely.ops import polylabel

from ..exceptions import ConvergenceWarning
from .power_diagram import PowerDiagram, power_diagram, power_diagrams

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
    homotopy: bool | None = None,
) -> tuple[np.ndarray, dict]:
    """Heights h (N,) transporting uniform(D) onto sum_i nu_i delta_{y_i}, by damped Newton.

    targets: (N, 2) distinct points y_i; weights: (N,) positive nu_i (normalised to sum 1);
    domain: a valid shapely Polygon (convex or not, holes allowed) carrying the uniform source;
    heights: (N,) starting heights, by default :func:`initial_heights` (a start with an empty
    cell is replaced by the default, with a warning).

    Each step solves L delta = G(h) = mu(h) - nu with L the Hessian (a graph Laplacian; its kernel,
    the constants, is removed by fixing delta_{N-1} = 0 and re-centring), then tries
    h - tau delta for tau = 1, 1/2, 1/4, ... until min_i mu_i >= eps0 and
    |G(h - tau delta)|_2 <= (1 - tau/2) |G(h)|_2, with eps0 = min(min nu, min mu(h0)) / 2
    (Kitagawa, Mérigot & Thibert 2019, Algorithm 1: linear convergence, then quadratic).
    Stops when max_i |mu_i - nu_i| / nu_i <= tol, after ``max_iter`` steps in all, or when the
    line search stalls; a stop short of ``tol`` emits a ``brenier.ConvergenceWarning`` naming the
    reason, ``info["stop_reason"]``: "max_iter"; "roundoff" (the step fell below the float64
    resolution of h: the precision floor close targets raise); "line_search" (no step down to
    2^-20 met the two conditions above: the start's masses differ by orders of magnitude, e.g. a
    tight cluster beside a wide one, or an outlier).

    homotopy: damped Newton can crawl from the contracted start when D is far from convex (thin
    parts, slots: mass must flow around corners). The homotopy first solves for the convex hull
    C of D, then for (1 - t) uniform(C) + t uniform(D), t = 1/2, 3/4, 7/8, ..., each stage loosely
    from the previous one, until every cell holds nu_i (1 +- 1/2) inside D; the last stage is D.
    True: always (from ``heights`` if given); False: never; None (default): for a non-convex D
    without starting heights, when the first 15 plain steps fail to shrink the error to 0.4 of
    its start (it then restarts with the homotopy; the history keeps both runs).

    Weight homotopy: when no damped step keeps every cell above the mass floor (the start's cell
    masses differ by orders of magnitude: a tight cluster beside a wide one, an outlier), Newton
    continues on the weights nu(t) ∝ mu0^(1 - t) nu^t from the current masses mu0 (see
    ``_weight_homotopy``); measured: a 1e-3-wide cluster of 150 points beside a unit one, or an
    outlier at 1e4 among 300 points, converge to 1e-9 in 36-45 steps instead of stalling at step 0.

    callback(iteration, heights, max_rel_error) runs at the start (iteration 0) and after each
    step with the current (N,) heights and the error on D, so a caller can show progress or keep
    the last iterate if interrupted.

    Returns (heights (N,), info) with info keys: converged, n_iter, history (max relative error
    on D at iterations 0..n_iter), max_rel_error, tv_error (1/2 sum |mu - nu|), time (s),
    n_diagrams, homotopy_stages (the values of t tried before the last stage; empty without),
    stop_reason ("converged", "max_iter", "roundoff", "line_search").
    """
    y = _check_targets(targets)
    nu = _check_weights(weights, len(y))
    dom = _check_domain(domain)
    if not (tol >= 0 and np.isfinite(tol)):
        raise ValueError(f"tol: expected a finite number >= 0, got {tol!r}")
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter: expected a non-negative integer, got {max_iter!r}")
    t0 = time.perf_counter()
    hull = dom.convex_hull
    solver = _Solver(y, nu, dom, hull, int(max_iter), callback)
    given = _usable_start(solver, _check_heights(heights, len(y)))
    if homotopy:
        state = _homotopy(solver, given.heights if given is not None else initial_heights(y, hull))
    else:
        state = given if given is not None else solver.evaluate(initial_heights(y, dom), 1.0)
        solver.start(state)
        if homotopy is None and given is None and hull.area > (1 + _HULL_EXCESS) * dom.area:
            state, stalled = solver.newton(state, tol, max_steps=_PROBE_STEPS)
            if state.error > max(tol, _PROBE_RATIO * solver.history[0]):
                state = _homotopy(solver, initial_heights(y, hull))
    state, stalled = solver.newton(state, tol)
    if stalled == "line_search" and solver.n_iter < solver.max_iter:
        # Cell masses of very different sizes (a tight cluster beside a wide one, an outlier):
        # no damped step keeps the smallest cells alive. Continue from the masses we have.
        state = _weight_homotopy(solver, state)
        state, stalled = solver.newton(state, tol)
    err = state.error
    reason = "converged" if err <= tol else (stalled or "max_iter")
    empty = int((state.diagram.masses <= 0).sum())
    if reason == "roundoff":
        # The step fell below the float64 resolution of h: the roundoff floor, which close
        # targets raise (d mu_i / d h_j ~ facet length / |y_i - y_j|, h known to ~1e-16 |h|).
        warnings.warn(
            f"solve_exact: stalled at max relative error {err:.3g} > tol = {tol:g} after {solver.n_iter} steps "
            "(float64 roundoff floor: the step fell below the resolution of the heights); the heights are the best found",
            ConvergenceWarning,
            stacklevel=2,
        )
    elif reason == "line_search":
        warnings.warn(
            f"solve_exact: stalled at max relative error {err:.3g} > tol = {tol:g} after {solver.n_iter} steps, "
            f"{empty} empty cell(s): no damped step down to 2^-{_MAX_HALVINGS} kept every cell above the mass floor "
            "while reducing the error (cell masses of very different sizes: a tight cluster beside a wide one, or "
            "an outlier); the heights are the best found",
            ConvergenceWarning,
            stacklevel=2,
        )
    elif reason == "max_iter":
        warnings.warn(
            f"solve_exact: max relative error {err:.3g} > tol = {tol:g} after max_iter = {max_iter} steps",
            ConvergenceWarning,
            stacklevel=2,
        )
    info = {
        "converged": bool(err <= tol),
        "n_iter": solver.n_iter,
        "history": solver.history,
        "max_rel_error": err,
        "tv_error": float(0.5 * np.abs(state.diagram.masses - nu).sum()),
        "time": time.perf_counter() - t0,
        "n_diagrams": solver.n_diagrams,
        "homotopy_stages": solver.stages,
        "stop_reason": reason,
    }
    return state.heights, info


#: D counts as non-convex when its convex hull is this much larger (relative area)
_HULL_EXCESS = 1e-2
#: automatic homotopy: after this many plain steps on a non-convex D, switch if the error is
#: still above this fraction of its start (the damped phase is crawling)
_PROBE_STEPS = 15
_PROBE_RATIO = 0.4
#: homotopy stages are solved to this max relative error ...
_STAGE_TOL = 0.3
#: ... and the last stage (D alone) starts once every cell has this relative error on D
_JUMP_TOL = 0.5
#: at most this many halvings of 1 - t
_MAX_STAGES = 40
#: 1 - t shrinks by this factor from one stage to the next
_STAGE_FACTOR = 2.0


@dataclass
class _State:
    """Heights with their diagram(s) for the source (1 - t) uniform(C) + t uniform(D)."""

    heights: np.ndarray
    t: float
    diagram: PowerDiagram  # restricted to D
    hull_diagram: PowerDiagram | None  # restricted to the convex hull C (None when t = 1)
    nu: np.ndarray

    @property
    def masses(self) -> np.ndarray:
        """(N,) the cell masses under the current source."""
        if self.hull_diagram is None:
            return self.diagram.masses
        return (1 - self.t) * self.hull_diagram.masses + self.t * self.diagram.masses

    def hessian(self) -> sp.csr_matrix:
        if self.hull_diagram is None:
            return self.diagram.hessian()
        return ((1 - self.t) * self.hull_diagram.hessian() + self.t * self.diagram.hessian()).tocsr()

    @property
    def stage_error(self) -> float:
        """Max relative error of the current source's masses."""
        return _max_rel(self.masses - self.nu, self.nu)

    @property
    def error(self) -> float:
        """Max relative error of the masses in D (the problem being solved)."""
        return _max_rel(self.diagram.masses - self.nu, self.nu)


class _Solver:
    """Damped Newton with the bookkeeping shared by the homotopy stages: counters, history, callback."""

    def __init__(self, y, nu, dom, hull, max_iter: int, callback: Callback | None):
        self.y, self.nu, self.dom, self.hull = y, nu, dom, hull
        self.target = nu  # the problem's weights; self.nu is the current stage's (weight homotopy)
        self.max_iter, self.callback = max_iter, callback
        self.n_iter, self.n_diagrams = 0, 0
        self.history: list[float] = []
        self.stages: list[float] = []

    def evaluate(self, h: np.ndarray, t: float) -> _State:
        self.n_diagrams += 1
        if t >= 1:
            return _State(h, 1.0, power_diagram(self.y, h, self.dom), None, self.nu)
        on_d, on_hull = power_diagrams(self.y, h, [self.dom, self.hull])
        return _State(h, t, on_d, on_hull, self.nu)

    def start(self, state: _State) -> None:
        """Report iteration 0 (unless the homotopy already did)."""
        if not self.history:
            self._record(state)

    def _record(self, state: _State) -> None:
        err = _max_rel(state.diagram.masses - self.target, self.target)  # on D, for the real weights
        self.history.append(err)
        _notify(self.callback, len(self.history) - 1, state.heights, err)

    def newton(self, state: _State, tol: float, max_steps: int | None = None) -> tuple[_State, str]:
        """Damped Newton at fixed t until the stage error is <= tol (or the step budget is spent);
        also returns why the line search stalled ("roundoff", "line_search"), "" if it did not."""
        eps0 = 0.5 * min(self.nu.min(), state.masses.min())
        stop = self.max_iter if max_steps is None else min(self.max_iter, self.n_iter + max_steps)
        while state.stage_error > tol and self.n_iter < stop:
            delta = _newton_direction(state.hessian(), state.masses - self.nu)
            new = self._line_search(state, delta, eps0)
            if isinstance(new, str):
                return state, new
            state = new
            self.n_iter += 1
            self._record(state)
        return state, ""

    def _line_search(self, state: _State, delta: np.ndarray, eps0: float) -> _State | str:
        """Backtracking on tau = 1, 1/2, ...: keep cells above eps0 and cut |G| by 1 - tau/2.
        Returns the new state, or why none was found: "roundoff" (the step fell below the float64
        resolution of h) or "line_search" (every halving failed)."""
        h = state.heights
        g_norm = np.linalg.norm(state.masses - self.nu)
        # A step below the float64 resolution of h cannot change the diagram: stop halving there.
        resolution = 4 * np.finfo(np.float64).eps * max(float(np.abs(h).max()), 1e-300)
        step = float(np.abs(delta).max())
        tau = 1.0
        for k in range(_MAX_HALVINGS + 1):
            if k > 0 and tau * step < resolution:
                return "roundoff"
            new = self.evaluate(h - tau * delta, state.t)
            mu = new.masses
            if mu.min() >= eps0 and np.linalg.norm(mu - self.nu) <= (1 - tau / 2) * g_norm:
                return new
            tau *= 0.5
        return "line_search"


def _usable_start(solver: _Solver, h: np.ndarray | None) -> _State | None:
    """The caller's heights with their diagram, or None (with a warning) if a cell is empty in D."""
    if h is None:
        return None
    state = solver.evaluate(h, 1.0)
    if state.masses.min() > 0:
        return state
    # Damped Newton needs every cell non-empty at the start (eps0 > 0).
    warnings.warn(
        f"solve_exact: the given heights leave {int((state.masses <= 0).sum())} empty cell(s); "
        "starting from initial_heights instead",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _homotopy(solver: _Solver, h0: np.ndarray) -> _State:
    """From the convex hull C to D: the state that starts the last stage (t = 1).

    Stage t solves (1 - t) uniform(C) + t uniform(D) to _STAGE_TOL from the previous stage's
    heights; 1 - t halves until every cell holds nu_i (1 +- _JUMP_TOL) inside D.
    """
    state = solver.evaluate(h0, 0.0)
    solver.start(state)
    t = 0.0
    for k in range(_MAX_STAGES):
        solver.stages.append(t)
        state, _ = solver.newton(state, _STAGE_TOL)
        if state.error <= _JUMP_TOL or solver.n_iter >= solver.max_iter:
            break
        t = 1 - _STAGE_FACTOR ** -(k + 1)
        state = _State(state.heights, t, state.diagram, state.hull_diagram, state.nu)
    return _State(state.heights, 1.0, state.diagram, None, state.nu)


#: weight homotopy: the first stage changes any cell's target mass by at most this factor ...
_WEIGHT_FACTOR = 2.0
#: ... and the stage length is halved at most this many times before giving up
_WEIGHT_HALVINGS = 12


def _weight_homotopy(solver: _Solver, state: _State) -> _State:
    """Continuation in the weights from the masses mu0 > 0 of ``state`` (solved by definition) to
    the real weights nu: nu(t) ∝ mu0^(1 - t) nu^t, geometric so that every cell's target grows or
    shrinks by a bounded *factor* per stage (a tiny cell's target cannot jump by orders of
    magnitude, which is what stalls the line search). Each stage is solved to ``_STAGE_TOL`` from
    the last; a stage that fails is retried at half the length, a success doubles it. Returns the
    state from which plain Newton on nu continues (with ``solver.nu`` set back to nu)."""
    nu = solver.target
    log_mu0 = np.log(state.diagram.masses)
    log_ratio = np.log(nu) - log_mu0
    spread = float(np.abs(log_ratio).max())
    t, dt, halvings = 0.0, min(1.0, np.log(_WEIGHT_FACTOR) / max(spread, 1e-300)), 0
    try:
        while t < 1 and solver.n_iter < solver.max_iter:
            t_try = min(1.0, t + dt)
            nu_t = np.exp(log_mu0 + t_try * log_ratio)
            solver.nu = nu_t / nu_t.sum()
            stage = _State(state.heights, 1.0, state.diagram, None, solver.nu)
            new, stalled = solver.newton(stage, _STAGE_TOL)
            if not stalled and new.stage_error <= _STAGE_TOL:
                state, t, dt = new, t_try, 2 * dt
                solver.stages.append(t)
                continue
            halvings += 1
            if halvings > _WEIGHT_HALVINGS:
                break
            dt /= 2
    finally:
        solver.nu = nu
    return _State(state.heights, 1.0, state.diagram, None, nu)


def _newton_direction(hess: sp.csr_matrix, g: np.ndarray) -> np.ndarray:
    """(N,) delta with L delta = g, mean zero.

    L is a connected graph Laplacian when all cells are non-empty and D is connected: its kernel
    is the constants, so fixing delta_{N-1} = 0 leaves a non-singular system; the minimum-degree
    ordering for symmetric matrices keeps the LU fill of this planar graph small. Should a cell
    be cut off all the same (roundoff), a tiny ridge makes the system solvable.
    """
    n = len(g)
    delta = np.zeros(n)
    if n > 1:
        reduced = hess[:-1, :-1].tocsc()
        try:
            delta[:-1] = _lu_solve(reduced, g[:-1])
        except RuntimeError:  # "Factor is exactly singular"
            delta[:-1] = np.nan
        if not np.all(np.isfinite(delta)):
            ridge = 1e-12 * max(float(np.abs(reduced.diagonal()).max()), 1e-300)
            delta[:-1] = _lu_solve((reduced + ridge * sp.eye(n - 1, format="csc")).tocsc(), g[:-1])
    return delta - delta.mean()


def _lu_solve(a: sp.csc_matrix, b: np.ndarray) -> np.ndarray:
    # SymmetricMode matters: with the symmetric ordering but without it, SuperLU pivots off the
    # diagonal and the factorisation of a 60k-site Laplacian takes minutes instead of 0.4 s.
    lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    return lu.solve(b)


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


def _check_heights(heights, n: int) -> np.ndarray | None:
    if heights is None:
        return None
    h = np.array(heights, dtype=np.float64)
    if h.shape != (n,) or not np.all(np.isfinite(h)):
        raise ValueError(f"heights: expected {n} finite numbers to match targets, got shape {h.shape}")
    return h


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
