"""``SemiDiscreteOT``: the optimal transport map from a source measure onto weighted points.

The map is T(x) = ∇u_h(x) = y_{i(x)}, the gradient of the Brenier potential
u_h(x) = max_i <x, y_i> + h_i, with heights h chosen so that every power cell
W_i = {x : i attains the max} carries exactly its target weight: mu(W_i) = nu_i.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .._array import as_points, as_vector, is_torch, resolve_device, to_caller
from .._io import atomic_write, write_json
from ..sources import Polygon, Source, UniformBall, source_from_dict
from . import montecarlo
from .montecarlo import SolverState
from .potential import DEFAULT_MEMORY_BUDGET, BrenierPotential, voronoi_heights

METHODS = ("auto", "newton", "adam", "exact")

#: default tolerance per method: total variation for Monte Carlo, max relative error for exact
DEFAULT_TOL = {"newton": 0.02, "adam": 0.02, "exact": 1e-9}


class NotFittedError(RuntimeError, ValueError):
    """Raised when a method needs ``fit`` first."""


class SemiDiscreteOT:
    """Semi-discrete optimal transport from ``source`` onto targets y_i with weights nu_i.

    Parameters
    ----------
    source : Source, optional
        The source measure mu (``brenier.sources``); default: the uniform unit ball in the
        targets' dimension.
    method : {"auto", "newton", "adam", "exact"}
        "exact": damped Newton on the exact power diagram (2-D polygonal sources only; a 2-D
        ``UniformBall`` is used as a fine inscribed polygon). "newton": Monte Carlo damped
        Newton with a sampled Hessian (any dimension; the default for non-polygon sources).
        "adam": the AE-OT baseline (Adam on h). "auto" picks "exact" for a uniform polygonal source
        in 2-D (``Polygon``, ``UniformBox(2)``, ``UniformBall(2)``), "newton" otherwise.
    tol : float, optional
        Stopping tolerance: the total-variation gap for Monte Carlo methods (default 0.02, with
        the sampling noise floor removed), the max relative mass error for "exact" (1e-9).
    device : "auto" | "cpu" | "cuda"
        Where the scores are computed ("auto": CUDA when available).
    seed : int
        Seeds every random draw: the same seed gives the same heights.
    quasi : bool
        Use scrambled Sobol points (randomised QMC) for Monte Carlo integrals.
    memory_budget : int
        Bytes allowed for one block of scores (rows × N × 4).
    max_iter : int, optional
        Iteration cap passed to the solver.
    solver_options : dict, optional
        Extra keyword arguments for the solver (e.g. ``lr`` for "adam", ``max_samples``).

    Attributes (after ``fit``)
    --------------------------
    targets_ (N, d), weights_ (N,), heights_ (N,): the data and the Brenier potential's heights;
    tv_error_ = ½ Σ |mu(W_i) − nu_i| and max_rel_error_ = max_i |mu(W_i) − nu_i| / nu_i reached
    (exact for "exact"; for Monte Carlo, the debiased TV estimate and the raw max estimate of the
    last batch); method_, n_iter_, n_evaluations_ (sample–target scores), history_,
    converged_, interrupted_, fit_time_.
    """

    def __init__(
        self,
        source: Source | None = None,
        *,
        method: str = "auto",
        tol: float | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        quasi: bool = True,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        max_iter: int | None = None,
        solver_options: dict[str, Any] | None = None,
    ):
        self.source = source
        self.method = method
        self.tol = tol
        self.device = device
        self.seed = seed
        self.quasi = quasi
        self.memory_budget = memory_budget
        self.max_iter = max_iter
        self.solver_options = solver_options

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        targets,
        weights=None,
        *,
        checkpoint: str | Path | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = False,
    ) -> "SemiDiscreteOT":
        """Solve for the heights. targets: (N, d) array or tensor; weights: (N,), default uniform.

        ``checkpoint``: a file path; the solver state is written there atomically after each
        iteration, and a later ``fit`` with the same data and path resumes from it.
        ``callback(record)``: called after each iteration with a dict of progress numbers (for
        Monte Carlo methods also ``"heights"``: the (unique) heights just evaluated).
        ``progress``: show a Rich progress bar. Ctrl-C stops the fit and keeps the best heights
        found so far (``interrupted_`` is then True).
        """
        self._like_torch = is_torch(targets)
        dev = resolve_device(self.device)
        y = as_points(targets, "targets", device="cpu", dtype=torch.float64)
        if y.shape[0] < 2:
            raise ValueError(f"targets: need at least 2 points, got {y.shape[0]}")
        n, d = y.shape
        source = self.source if self.source is not None else UniformBall(d)
        if not isinstance(source, Source):
            raise TypeError(f"source: expected a brenier.sources.Source, got {type(source).__name__}")
        if source.dim != d:
            raise ValueError(f"source: dimension {source.dim} does not match the targets' dimension {d}")
        nu = self._check_weights(weights, n)
        y_unique, nu_unique, inverse = _merge_duplicates(y, nu)
        method = self._resolve_method(source, d)
        tol = self._check_tol(method)
        seed = _check_seed(self.seed)

        self.source_, self.method_, self.tol_ = source, method, tol
        self.targets_, self.weights_ = y, nu
        self._unique_targets, self._unique_weights, self._inverse = y_unique, nu_unique, inverse
        self.device_ = dev
        self.interrupted_ = False
        t0 = time.perf_counter()
        if method == "exact":
            self._fit_exact(callback, progress)
        else:
            self._fit_montecarlo(method, tol, seed, dev, checkpoint, callback, progress)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _check_weights(self, weights, n: int) -> torch.Tensor:
        if weights is None:
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        nu = as_vector(weights, "weights", length=n)
        if bool((nu < 0).any()):
            raise ValueError(f"weights: {int((nu < 0).sum())} negative value(s); weights must be positive")
        if bool((nu == 0).any()):
            raise ValueError(f"weights: {int((nu == 0).sum())} zero value(s); drop those targets instead")
        total = float(nu.sum())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights: sum to {total:.9g}, expected 1 (normalise them: weights / weights.sum())")
        return nu / total  # only rounding is corrected here

    def _resolve_method(self, source: Source, d: int) -> str:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if self.method == "auto":
            # A 2-D uniform ball or box is a polygon too (the ball as a fine inscribed polygon):
            # the exact solver beats any Monte Carlo estimate there (no noise floor).
            exact_ok = d == 2 and source.uniform and source.as_polygon() is not None
            return "exact" if exact_ok else "newton"
        if self.method == "exact" and (d != 2 or source.as_polygon() is None or not source.uniform):
            raise ValueError(f"method: 'exact' needs a uniform 2-D polygonal source (Polygon, UniformBox(2), UniformBall(2)), got {source!r}")
        return self.method

    def _check_tol(self, method: str) -> float:
        tol = DEFAULT_TOL[method] if self.tol is None else self.tol
        if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"tol: expected a positive number, got {tol!r}")
        if method != "exact" and tol >= 1:
            raise ValueError(f"tol: a total-variation gap lies in (0, 1), got {tol!r}")
        return float(tol)

    def _fit_exact(self, callback, progress) -> None:
        from .exact import solve_exact

        poly = self.source_.as_polygon()
        y = self._unique_targets.numpy()
        nu = self._unique_weights.numpy()
        best = {"h": None}

        def cb(it, h, err):
            best["h"] = np.array(h, copy=True)
            if callback is not None:
                callback({"iteration": it, "max_rel_error": err})

        try:
            with _progress(progress, "exact Newton") as bar:
                def cb_bar(it, h, err):
                    cb(it, h, err)
                    bar(f"step {it} max rel err {err:.1e}")

                h, info = solve_exact(y, nu, poly, tol=self.tol_, max_iter=self.max_iter or 50, callback=cb_bar)
        except KeyboardInterrupt:
            if best["h"] is None:
                raise
            warnings.warn("fit interrupted: keeping the last Newton iterate", stacklevel=3)
            self.interrupted_ = True
            h, info = best["h"], {"converged": False, "n_iter": -1, "history": []}
        self._set_heights(torch.from_numpy(np.asarray(h, dtype=np.float64)))
        pd = self.power_diagram()
        g = pd.masses - nu
        self.tv_error_ = float(0.5 * np.abs(g).sum())
        self.max_rel_error_ = float(np.max(np.abs(g) / nu))
        self.n_iter_ = info["n_iter"]
        self.n_evaluations_ = 0
        self.history_ = [{"iteration": i, "max_rel_error": e} for i, e in enumerate(info.get("history", []))]
        self.converged_ = bool(info["converged"])

    def _fit_montecarlo(self, method, tol, seed, dev, checkpoint, callback, progress) -> None:
        y = self._unique_targets.to(dev)
        nu = self._unique_weights.to(dev)
        center, radius = self.source_.inscribed_ball()
        pot = BrenierPotential(y, voronoi_heights(y, center, radius), memory_budget=self.memory_budget)
        state = None
        fingerprint = _fingerprint(self._unique_targets, self._unique_weights, method, self.source_, seed)
        if checkpoint is not None:
            state = _load_checkpoint(checkpoint, fingerprint, dev)
        if state is None:
            h0 = pot.heights
            state = SolverState(heights=h0.clone(), best_heights=h0.clone())
        solver = montecarlo.solve_newton if method == "newton" else montecarlo.solve_adam
        options = dict(self.solver_options or {})
        if self.max_iter is not None:
            options["max_iter"] = self.max_iter

        with _progress(progress, method) as bar:
            def cb(rec, h):
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, fingerprint, state)
                bar(f"it {rec['iteration']} TV {rec['tv_debiased']:.4f}/{tol:g} floor {rec['noise_floor']:.4f} "
                    f"M={rec['samples']:.1e}", rec["tv_debiased"], tol)
                if callback is not None:
                    callback({**rec, "heights": h})

            try:
                solver(pot, self.source_, nu, state, tol=tol, seed=seed, quasi=self.quasi, callback=cb, **options)
                heights = state.heights if state.converged else state.best_heights
            except KeyboardInterrupt:
                warnings.warn("fit interrupted: keeping the best heights found so far", stacklevel=3)
                self.interrupted_ = True
                heights = state.best_heights
        if checkpoint is not None:
            _save_checkpoint(checkpoint, fingerprint, state)
        self._set_heights(heights)
        last = state.history[-1] if state.history else {}
        self.tv_error_ = float(state.best_tv if not state.converged else last.get("tv_debiased", math.nan))
        self.max_rel_error_ = float(last.get("max_rel_estimate", math.nan))
        self.n_iter_ = state.iteration
        self.n_evaluations_ = int(state.evaluations)
        self.history_ = state.history
        self.converged_ = state.converged

    def _set_heights(self, h_unique: torch.Tensor) -> None:
        self.singular_set_ = None  # new heights: the cached singular set is stale
        self._unique_heights = h_unique.detach().to("cpu", torch.float64)
        self._potential = BrenierPotential(
            self._unique_targets.to(self.device_), self._unique_heights.to(self.device_), memory_budget=self.memory_budget
        )

    # ------------------------------------------------------------- results
    def _check_fitted(self) -> None:
        if not hasattr(self, "_potential"):
            raise NotFittedError("this SemiDiscreteOT is not fitted yet: call fit(targets) first")

    @property
    def heights_(self):
        """(N,) heights h_i, one per target as given (duplicates share theirs)."""
        self._check_fitted()
        return to_caller(self._unique_heights[self._inverse], self._like_torch)

    @property
    def potential_(self) -> BrenierPotential:
        """The fitted ``BrenierPotential`` over the unique targets (torch, on ``device_``)."""
        self._check_fitted()
        return self._potential

    def _points(self, x, name: str = "x") -> torch.Tensor:
        self._check_fitted()
        return as_points(x, name, dim=self.targets_.shape[1], device=self.device_, dtype=torch.float32)

    def potential(self, x):
        """u_h(x) = max_i <x, y_i> + h_i for x (M, d) → (M,)."""
        pts = self._points(x)  # validates and checks fitted before touching the potential
        vals, _ = self._potential.argmax(pts)
        return to_caller(vals.double(), is_torch(x))

    def assign(self, x):
        """Index (M,) int64 of the power cell holding each x (M, d); among duplicate targets the first."""
        pts = self._points(x)
        _, idx = self._potential.argmax(pts)
        return to_caller(self._first_index()[idx], is_torch(x))

    def transport(self, x):
        """The OT map T(x) = y_{assign(x)}: (M, d)."""
        pts = self._points(x)
        _, idx = self._potential.argmax(pts)
        y = self._unique_targets.to(idx.device)[idx]
        return to_caller(y, is_torch(x))

    def _first_index(self) -> torch.Tensor:
        first = torch.full((len(self._unique_targets),), len(self._inverse), dtype=torch.int64)
        first.scatter_reduce_(0, self._inverse, torch.arange(len(self._inverse)), reduce="amin")
        return first.to(self.device_)

    def cell_masses(self, n_samples: int | None = None, seed: int | None = None):
        """mu(W_i) per target (N,): exact for a polygonal 2-D source, else a Monte Carlo estimate.

        The Monte Carlo estimate uses ``n_samples`` fresh source samples (default 1000 per target,
        noise floor ≈ 0.4·sqrt(N / n_samples) in total variation). Duplicate targets split their
        cell's mass in proportion to their weights.
        """
        self._check_fitted()
        if self.source_.as_polygon() is not None and self.source_.uniform and self.targets_.shape[1] == 2:
            m = torch.from_numpy(self.power_diagram().masses)
        else:
            ns = int(n_samples or 1000 * len(self._unique_targets))
            s = (self.seed + 1) * 7_777_777 if seed is None else int(seed)
            m = montecarlo.estimate_masses(self._potential, self.source_, ns, seed=s, quasi=self.quasi).cpu()
        share = self.weights_ / self._unique_weights[self._inverse]
        return to_caller(m[self._inverse] * share, self._like_torch)

    def power_diagram(self, resolution: int = 1024):
        """The exact power diagram restricted to a 2-D polygonal source (``PowerDiagram``).

        Cells, areas, adjacency with facet lengths: see ``brenier.ot.power_diagram``. Indices refer
        to the unique targets (``unique_targets_``).
        """
        self._check_fitted()
        from .power_diagram import power_diagram

        poly = self.source_.as_polygon(resolution)
        if poly is None or self.targets_.shape[1] != 2:
            raise ValueError("power_diagram: only defined for a 2-D polygonal source (Polygon, UniformBox(2), UniformBall(2))")
        return power_diagram(self._unique_targets.numpy(), self._unique_heights.numpy(), poly)

    # ------------------------------------------------- singular set & generation (brenier.singular)
    def singular_set(self, threshold="auto", **options):
        """The singular set of u_h (``brenier.singular.SingularSet``), cached as ``singular_set_``.

        threshold: "auto" or a number (detour ratio > 1; or radians with ``criterion="angle"``).
        Options: criterion, adjacency ("auto" | "exact" | "sampled"), n_samples, seed.
        """
        from ..singular import singular_set

        self.singular_set_ = singular_set(self, threshold, **options)
        return self.singular_set_

    def sample(self, n: int, seed: int | None = None, boundary: str = "respect", **options):
        """(n, d) new points from the piecewise-linear extension of the map (``brenier.sampling.sample``).

        boundary="respect" never blends targets across a singular facet; "ignore" does.
        """
        from ..sampling import sample

        return sample(self, n, seed=seed, boundary=boundary, **options)

    def boundary_distance(self, x):
        """(M,) distance from source points x (M, d) to the nearest singular facet (0 on it)."""
        from ..singular import boundary_distance

        self._check_fitted()
        d = boundary_distance(self, x, self.singular_set_ or self.singular_set())
        return to_caller(torch.from_numpy(d), is_torch(x))

    def crossings(self, path):
        """int64 indices k where the segment path[k] -> path[k+1] (path: (T, d)) crosses a singular facet."""
        from ..singular import crossings

        self._check_fitted()
        k = crossings(self, path, self.singular_set_ or self.singular_set())
        return to_caller(torch.from_numpy(k), is_torch(path))

    @property
    def unique_targets_(self):
        self._check_fitted()
        return to_caller(self._unique_targets, self._like_torch)

    # ---------------------------------------------------------- save / load
    def save(self, path: str | Path) -> Path:
        """Write ``path/ot.safetensors`` (targets, weights, heights) and ``path/ot.json``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {
            "targets": self.targets_.contiguous(),
            "weights": self.weights_.contiguous(),
            "unique_heights": self._unique_heights.contiguous(),
        }
        atomic_write(path / "ot.safetensors", lambda tmp: save_file(tensors, tmp))
        meta = {
            "format": "brenier.SemiDiscreteOT/1",
            "source": self.source_.to_dict(),
            "params": {
                "method": self.method, "tol": self.tol, "device": str(self.device), "seed": self.seed,
                "quasi": self.quasi, "memory_budget": self.memory_budget, "max_iter": self.max_iter,
                "solver_options": self.solver_options,
            },
            "fitted": {
                "method": self.method_, "tol": self.tol_, "tv_error": self.tv_error_,
                "max_rel_error": self.max_rel_error_, "n_iter": self.n_iter_,
                "n_evaluations": self.n_evaluations_, "converged": self.converged_,
                "interrupted": self.interrupted_, "fit_time": self.fit_time_, "like_torch": self._like_torch,
            },
            "history": self.history_,
        }
        write_json(path / "ot.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "SemiDiscreteOT":
        """Read a model written by ``save``; no refit needed."""
        path = Path(path)
        if not (path / "ot.json").exists() or not (path / "ot.safetensors").exists():
            raise FileNotFoundError(f"path: {path} does not hold a saved SemiDiscreteOT (ot.json + ot.safetensors)")
        meta = json.loads((path / "ot.json").read_text())
        tensors = load_file(str(path / "ot.safetensors"))
        p = dict(meta["params"])
        p["device"] = device
        obj = cls(source_from_dict(meta["source"]), **p)
        f = meta["fitted"]
        obj.source_, obj.method_, obj.tol_ = obj.source, f["method"], f["tol"]
        obj.targets_, obj.weights_ = tensors["targets"], tensors["weights"]
        obj._unique_targets, obj._unique_weights, obj._inverse = _merge_duplicates(obj.targets_, obj.weights_, warn=False)
        obj.device_ = resolve_device(device)
        obj._like_torch = f["like_torch"]
        obj._set_heights(tensors["unique_heights"])
        obj.tv_error_, obj.max_rel_error_ = f["tv_error"], f["max_rel_error"]
        obj.n_iter_, obj.n_evaluations_ = f["n_iter"], f["n_evaluations"]
        obj.converged_, obj.interrupted_, obj.fit_time_ = f["converged"], f["interrupted"], f["fit_time"]
        obj.history_ = meta.get("history", [])
        return obj

    def __repr__(self) -> str:
        state = f"fitted: N={len(self.targets_)}, TV={self.tv_error_:.3g}" if hasattr(self, "_potential") else "not fitted"
        return f"SemiDiscreteOT(source={self.source!r}, method={self.method!r}; {state})"


# ---------------------------------------------------------------- helpers
def _merge_duplicates(y: torch.Tensor, nu: torch.Tensor, warn: bool = True):
    """Unique targets (K, d), their summed weights (K,), and the map original → unique (N,)."""
    uniq, inverse = torch.unique(y, dim=0, return_inverse=True)
    if len(uniq) == len(y):
        return y, nu, torch.arange(len(y))
    if len(uniq) < 2:
        raise ValueError("targets: all points are identical; need at least 2 distinct targets")
    if warn:
        warnings.warn(f"targets: {len(y) - len(uniq)} duplicate point(s) merged (their weights are added)", stacklevel=4)
    w = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, nu)
    return uniq, w, inverse


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def _fingerprint(y: torch.Tensor, nu: torch.Tensor, method: str, source: Source, seed: int) -> str:
    h = hashlib.sha256()
    h.update(y.numpy().tobytes())
    h.update(nu.numpy().tobytes())
    h.update(f"{method}|{json.dumps(source.to_dict(), sort_keys=True)}|{seed}".encode())
    return h.hexdigest()


def _save_checkpoint(path, fingerprint: str, state: SolverState) -> None:
    blob = {
        "fingerprint": fingerprint,
        "heights": state.heights.cpu(), "best_heights": state.best_heights.cpu(), "best_tv": state.best_tv,
        "iteration": state.iteration, "batch": state.batch, "evaluations": state.evaluations,
        "elapsed": state.elapsed, "history": state.history, "converged": state.converged,
        "extra": {k: v.cpu() for k, v in state.extra.items()},
    }
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def _load_checkpoint(path, fingerprint: str, dev) -> SolverState | None:
    path = Path(path)
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if blob.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint: {path} belongs to a different problem (targets, weights, method, source or seed differ)")
    return SolverState(
        heights=blob["heights"].to(dev), best_heights=blob["best_heights"].to(dev), best_tv=blob["best_tv"],
        iteration=blob["iteration"], batch=blob["batch"], evaluations=blob["evaluations"], elapsed=blob["elapsed"],
        history=blob["history"], extra={k: v.to(dev) for k, v in blob["extra"].items()}, converged=blob["converged"],
    )


class _progress:
    """A Rich status line when ``enabled``; a no-op callable otherwise."""

    def __init__(self, enabled: bool, title: str):
        self.enabled, self.title = enabled, title

    def __enter__(self):
        if not self.enabled:
            return lambda *a, **k: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        # elapsed time first and a short bar, so an 80-column terminal (or a CI log) keeps it all
        self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=12), TimeElapsedColumn(),
                           TextColumn("{task.fields[msg]}"), transient=False)
        self._p.__enter__()
        task = self._p.add_task(self.title, total=1.0, msg="")

        def update(msg: str, err: float | None = None, tol: float | None = None) -> None:
            # progress on a log scale from the first error down to the tolerance
            if err is not None and tol is not None:
                if not hasattr(update, "e0"):
                    update.e0 = max(err, tol * 1.0001)
                frac = math.log(update.e0 / max(err, tol)) / math.log(update.e0 / tol) if update.e0 > tol else 1.0
                self._p.update(task, completed=min(max(frac, 0.0), 1.0), msg=msg)
            else:
                self._p.update(task, msg=msg)

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
