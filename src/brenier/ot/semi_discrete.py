"""``SemiDiscreteOT``: the optimal transport map from a source measure onto weighted points.

The map is T(x) = ∇u_h(x) = y_{i(x)}, the gradient of the Brenier potential
u_h(x) = max_i <x, y_i> + h_i, with heights h chosen so that every power cell
W_i = {x : i attains the max} carries exactly its target weight: mu(W_i) = nu_i.

Conditioning. The cells do not change when the targets are translated or scaled (with the heights
to match): with y_i = c + s y'_i (s > 0),

    <x, y_i> + h_i = <x, c> + s (<x, y'_i> + h_i / s),

and <x, c> is the same for every i. So everything is solved and scored on the centred, rescaled
targets y'_i = (y_i - c) / s (c: their mean, s: a power of two near their largest distance
from c, so h -> h / s is exact in floating point) with heights h'_i = h_i / s. The public
``heights_`` keep their meaning for the caller's targets (h_i = s h'_i, the same cells, and
``potential(x)`` = <x, c> + s u'(x)). Without this, a large common offset (targets near 1e5)
drowns the score gaps in float32 rounding and ``assign`` silently disagrees with the argmax.
Scores are then computed in float32 unless a check on source samples finds that float32 cannot
separate them (``score_dtype_``; see ``_score_dtype``): then in float64.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .._array import as_points, as_vector, is_torch, resolve_device, to_caller
from .._io import CorruptRunError, atomic_write, verify_manifest, write_json, write_manifest
from ..exceptions import ConvergenceWarning
from ..sources import Polygon, Source, UniformBall, source_from_dict
from . import distributed as dist_
from . import montecarlo
from .montecarlo import SolverState
from .potential import DEFAULT_MEMORY_BUDGET, SEARCHES, BrenierPotential, voronoi_heights

METHODS = ("auto", "newton", "adam", "exact")

#: default tolerance per method: total variation for Monte Carlo, max relative error for exact
DEFAULT_TOL = {"newton": 0.02, "adam": 0.02, "exact": 1e-9}

#: seeds are limited to what every generator they feed accepts after brenier derives per-iteration
#: seeds from them (seed * 100_003 + iteration must stay a 64-bit integer)
MAX_SEED = 2**32 - 1

#: float32 scores are used while the expected share of sample points they misassign (float32
#: rounding of the score terms over the typical top-2 score gap) stays below this
FLOAT32_MISASSIGN = 1e-3

#: exact solver's default step cap: ordinary problems take ~10 steps, the weight homotopy of
#: degenerate ones (a tight cluster, an outlier) 35-45 (measured on the cases in tests/test_ot_hardening.py)
EXACT_MAX_ITER = 100

SAVE_FORMAT = "brenier.SemiDiscreteOT/1"
CHECKPOINT_FORMAT = "brenier.ot-checkpoint/2"
_SAVED_FILES = ("ot.safetensors", "ot.json")


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
    seed : int in [0, 2**32 - 1]
        Seeds every random draw: the same seed gives the same heights.
    quasi : bool
        Use scrambled Sobol points (randomised QMC) for Monte Carlo integrals.
    memory_budget : int >= 1
        Bytes allowed for one block of scores (rows × N × 4).
    search : {"auto", "brute", "tiled", "pruned", "fused"}
        How ``BrenierPotential`` finds the best targets; every choice gives the same argmax / top-k
        ("brute" is the reference; "auto" picks the fastest exact path, see ``brenier.ot.potential``).
    max_iter : int >= 1, optional
        Iteration cap passed to the solver (default: 100 Newton steps for "exact", 200 for
        "newton", 20000 for "adam").
    solver_options : dict, optional
        Extra keyword arguments for the solver (e.g. ``lr`` for "adam", ``max_samples``,
        ``max_time``).

    Attributes (after ``fit``)
    --------------------------
    targets_ (N, d), weights_ (N,), heights_ (N,): the data and the Brenier potential's heights
    (for the caller's targets as given; see the module docstring for how they are conditioned
    inside); tv_error_ = ½ Σ |mu(W_i) − nu_i| and max_rel_error_ = max_i |mu(W_i) − nu_i| / nu_i
    reached (exact for "exact"; for Monte Carlo, the debiased TV estimate and the raw max estimate
    of the last batch); method_, n_iter_, n_evaluations_ (sample–target scores), history_,
    converged_, stop_reason_ ("converged", "max_iter", "max_samples", "max_time", "roundoff",
    "line_search", "interrupted"), interrupted_, fit_time_, score_dtype_ (float32 or float64).

    A fit that ends without reaching ``tol`` emits a ``brenier.ConvergenceWarning`` saying what
    was reached and why it stopped; the best heights found are kept.
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
        search: str = "auto",
    ):
        self.source = source
        self.method = method
        self.tol = tol
        self.device = device
        self.seed = seed
        self.quasi = quasi
        self.memory_budget = memory_budget
        self.search = search
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
        distributed: bool | None = None,
        shard_targets: bool = False,
    ) -> "SemiDiscreteOT":
        """Solve for the heights. targets: (N, d) array or tensor; weights: (N,), default uniform.

        ``checkpoint``: a file path (Monte Carlo methods); the solver state is written there
        atomically after every iteration (one safetensors file: tensors plus a JSON header, never
        a pickle), and a later ``fit`` with the same data and path resumes from the last
        iteration, counters included. A file there that is not such a checkpoint (e.g. a
        ``torch.save`` pickle) is refused with a ValueError, never unpickled.
        ``callback(record)``: called after each iteration with a dict of progress numbers (for
        Monte Carlo methods also ``"heights"``: the (unique) heights just evaluated, for the
        caller's targets). ``progress``: show a Rich progress bar. Ctrl-C stops the fit and keeps
        the best heights found so far (``interrupted_`` is then True).
        ``distributed``: split a Monte Carlo fit over the ranks of ``torch.distributed``
        (``brenier.ot.distributed``). None (default): when a process group is initialised or the
        process was started by torchrun with WORLD_SIZE > 1 (the group is then initialised here:
        gloo on CPU, NCCL on CUDA); False: never. Every rank must call ``fit`` with the same data
        and ends with the same heights; every rank reads the checkpoint, only rank 0 writes it (a
        run resumes on any number of ranks). ``shard_targets``: each rank also keeps only N / P of
        the targets on its device (for N beyond one device); same answer. ``world_size_``: ranks used.
        """
        _check_bool(shard_targets, "shard_targets")
        self._like_torch = is_torch(targets)
        dev = resolve_device(self.device)
        self._comm = dist_.setup(distributed, dev)
        dev = dist_.local_device(dev) if self._comm.world_size > 1 else dev
        self._shard_targets = bool(shard_targets)
        self.world_size_ = self._comm.world_size
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
        method = self._resolve_method(source, d)
        tol = self._check_tol(method)
        seed = _check_seed(self.seed)
        _check_bool(self.quasi, "quasi")
        _check_int(self.memory_budget, "memory_budget", 1)
        if self.search not in SEARCHES:
            raise ValueError(f"search: expected one of {SEARCHES}, got {self.search!r}")
        if self.max_iter is not None:
            _check_int(self.max_iter, "max_iter", 1)
        options = self._check_solver_options(method)
        if checkpoint is not None and not isinstance(checkpoint, (str, Path)):
            raise TypeError(f"checkpoint: expected a file path, got {type(checkpoint).__name__}")
        y_unique, nu_unique, inverse = _merge_duplicates(y, nu)

        self.source_, self.method_, self.tol_ = source, method, tol
        self.targets_, self.weights_ = y, nu
        self._unique_targets, self._unique_weights, self._inverse = y_unique, nu_unique, inverse
        self._condition()
        self.device_ = dev
        self.interrupted_ = False
        t0 = time.perf_counter()
        if method == "exact":
            self._fit_exact(callback, progress)
        else:
            self._fit_montecarlo(method, tol, seed, dev, checkpoint, callback, progress, options)
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
        if not isinstance(self.method, str) or self.method not in METHODS:
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
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"tol: expected a positive number, got {tol!r}")
        if method != "exact" and tol >= 1:
            raise ValueError(f"tol: a total-variation gap lies in (0, 1), got {tol!r}")
        return float(tol)

    def _check_solver_options(self, method: str) -> dict[str, Any]:
        """The solver's keyword arguments: known names only, counts and limits checked here so a
        typo or a bad value fails before any work, naming the option."""
        opts = self.solver_options
        if opts is None:
            return {}
        if not isinstance(opts, dict):
            raise TypeError(f"solver_options: expected a dict, got {type(opts).__name__}")
        if method == "exact":
            allowed = {"homotopy", "max_iter"}
        else:
            solver = montecarlo.solve_newton if method == "newton" else montecarlo.solve_adam
            # what the caller may set: not the plumbing fit passes itself
            allowed = set(inspect.signature(solver).parameters) - {"pot", "source", "nu", "state", "tol", "seed", "quasi",
                                                                    "callback", "on_state"}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ValueError(f"solver_options: unknown option(s) {unknown} for method {method!r}; allowed: {sorted(allowed)}")
        for key in ("max_samples", "batch0", "patience", "max_iter"):
            if opts.get(key) is not None:
                _check_int(opts[key], f"solver_options[{key!r}]", 1)
        for key in ("max_time", "lr", "growth"):
            v = opts.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0):
                raise ValueError(f"solver_options[{key!r}]: expected a positive number, got {v!r}")
        if opts.get("growth") is not None and opts["growth"] <= 1:
            raise ValueError(f"solver_options['growth']: expected a number > 1, got {opts['growth']!r}")
        return dict(opts)

    # ------------------------------------------------------------ conditioning
    def _condition(self) -> None:
        """Centre c (d,) and power-of-two scale s of the unique targets; y' = (y - c) / s."""
        y = self._unique_targets
        c = y.mean(dim=0)
        spread = float((y - c).norm(dim=1).max())
        # a power of two: h = s h' is then exact both ways (bit-identical save/load)
        s = 2.0 ** round(math.log2(spread)) if spread > 0 else 1.0
        self._centre, self._scale = c, s
        self._cond_targets = (y - c) / s

    def _to_caller(self, h_cond: torch.Tensor) -> torch.Tensor:
        return h_cond.detach().to("cpu", torch.float64) * self._scale

    def _fit_exact(self, callback, progress) -> None:
        from .exact import solve_exact

        poly = self.source_.as_polygon()
        y = self._cond_targets.numpy()
        nu = self._unique_weights.numpy()
        best = {"h": None}
        options = dict(self.solver_options or {})
        max_iter = self.max_iter or options.pop("max_iter", None) or EXACT_MAX_ITER

        def cb(it, h, err):
            best["h"] = np.array(h, copy=True)
            if callback is not None:
                callback({"iteration": it, "max_rel_error": err})

        try:
            with _progress(progress, "exact Newton") as bar:
                def cb_bar(it, h, err):
                    cb(it, h, err)
                    bar(f"step {it} max rel err {err:.1e}")

                with warnings.catch_warnings():
                    # solve_exact's own ConvergenceWarning is re-issued below with the fit's numbers
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    h, info = solve_exact(y, nu, poly, tol=self.tol_, max_iter=max_iter, callback=cb_bar, **options)
        except KeyboardInterrupt:
            if best["h"] is None:
                raise
            warnings.warn("fit interrupted: keeping the last Newton iterate", stacklevel=3)
            self.interrupted_ = True
            h, info = best["h"], {"converged": False, "n_iter": -1, "history": [], "stop_reason": "interrupted"}
        self._set_heights(torch.from_numpy(np.asarray(h, dtype=np.float64)))
        pd = self.power_diagram()
        g = pd.masses - nu
        self.tv_error_ = float(0.5 * np.abs(g).sum())
        self.max_rel_error_ = float(np.max(np.abs(g) / nu))
        self.n_iter_ = info["n_iter"]
        self.n_evaluations_ = 0
        self.history_ = [{"iteration": i, "max_rel_error": e} for i, e in enumerate(info.get("history", []))]
        self.converged_ = bool(info["converged"])
        self.stop_reason_ = info.get("stop_reason", "converged" if self.converged_ else "max_iter")
        if not self.converged_ and not self.interrupted_:
            empty = int((pd.masses <= 0).sum())
            why = {
                "max_iter": f"max_iter = {max_iter} Newton steps were spent",
                "roundoff": "the step fell below the float64 resolution of the heights (the roundoff floor close targets raise)",
                "line_search": ("no damped step (down to 2^-20) kept every cell above the KMT mass floor while reducing the "
                                "error: targets of very different scales (a tight cluster beside a wide one, an outlier) "
                                "make the start's cell masses differ by orders of magnitude"),
            }.get(self.stop_reason_, self.stop_reason_)
            warnings.warn(
                f"SemiDiscreteOT.fit (exact): stopped before tol = {self.tol_:g}: max relative error "
                f"{self.max_rel_error_:.3g}, TV {self.tv_error_:.3g}, {max(self.n_iter_, 0)} Newton steps, {empty} empty "
                f"cell(s); stopped because {why}. The best heights found are kept (converged_ = False).",
                ConvergenceWarning, stacklevel=3)

    def _fit_montecarlo(self, method, tol, seed, dev, checkpoint, callback, progress, options) -> None:
        y = self._cond_targets.to(dev)
        nu = self._unique_weights.to(dev)
        center, radius = self.source_.inscribed_ball()
        h0 = voronoi_heights(y, center, radius)
        dtype = _score_dtype(y, h0, self.source_, seed, self.memory_budget)
        if self._shard_targets:  # this rank scores only its slice of the targets (the host copy stays whole)
            pot = dist_.ShardedPotential(self._cond_targets, h0, self._comm, device=dev, memory_budget=self.memory_budget,
                                         compute_dtype=dtype)
        else:
            pot = BrenierPotential(y, h0, memory_budget=self.memory_budget, compute_dtype=dtype, search=self.search)
        writes = checkpoint is not None and self._comm.is_main  # every rank reads a checkpoint, rank 0 writes it
        state = None
        fingerprint = _fingerprint(self._unique_targets, self._unique_weights, method, self.source_, seed)
        if checkpoint is not None:
            state = _load_checkpoint(checkpoint, fingerprint, dev, len(y))
        if state is None:
            state = SolverState(heights=h0.clone(), best_heights=h0.clone())
        solver = montecarlo.solve_newton if method == "newton" else montecarlo.solve_adam
        if self.max_iter is not None:
            options["max_iter"] = self.max_iter
        max_samples = options.get("max_samples")
        if max_samples is not None:
            # Said before minutes of work: no estimate from max_samples points can certify a
            # gap below its noise floor (0.4 sqrt(N / M) at the i.i.d. rate).
            floor = montecarlo.noise_floor(nu, int(max_samples))
            if floor > tol:
                warnings.warn(
                    f"SemiDiscreteOT.fit ({method}): tol = {tol:g} lies below the noise floor {floor:.3g} of "
                    f"max_samples = {int(max_samples)} samples (i.i.d. rate; scrambled Sobol points may do somewhat "
                    f"better): the fit will most likely stop at max_samples without converging; raise max_samples to "
                    f"about {int(math.ceil(max_samples * (floor / tol) ** 2))} or tol", ConvergenceWarning, stacklevel=3)

        def save_state(st: SolverState) -> None:
            _save_checkpoint(checkpoint, fingerprint, st)

        with _progress(progress and self._comm.is_main, method) as bar:  # one progress line, not one per rank
            def cb(rec, h):
                # the TV shown is the honest one where the fit reuses its sample (its fresh rows)
                if "fresh_samples" in rec and "tv_fresh" not in rec:  # a step on its own sample: no check
                    bar(f"it {rec['iteration']} fit to sample {rec['tv_estimate']:.4f} M={rec['samples']:.1e}",
                        None, tol)
                else:
                    tv = rec.get("tv_fresh_debiased", rec["tv_debiased"])
                    floor = rec.get("noise_floor_fresh", rec["noise_floor"])
                    bar(f"it {rec['iteration']} TV {tv:.4f}/{tol:g} floor {floor:.4f} M={rec['samples']:.1e}", tv, tol)
                if callback is not None:
                    callback({**rec, "heights": self._to_caller(h)})

            try:
                if not state.converged:  # a checkpoint of a finished fit needs no more work
                    with dist_.use(self._comm):
                        solver(pot, self.source_, nu, state, tol=tol, seed=seed, quasi=self.quasi, callback=cb,
                               on_state=save_state if writes else None, **options)
                heights = state.heights if state.converged else state.best_heights
            except KeyboardInterrupt:
                warnings.warn("fit interrupted: keeping the best heights found so far", stacklevel=3)
                self.interrupted_ = True
                state.stop_reason = "interrupted"
                heights = state.best_heights
        if writes:
            _save_checkpoint(checkpoint, fingerprint, state)
        dist_.check_identical(self._comm, heights.cpu(), "heights")  # the ranks took the same steps
        self._set_heights(heights)
        last = state.history[-1] if state.history else {}
        honest = montecarlo._honest_tv(last) if last else None
        self.tv_error_ = float(state.best_tv if not state.converged or honest is None else honest)
        self.max_rel_error_ = float(last.get("max_rel_estimate", math.nan))
        self.n_iter_ = state.iteration
        self.n_evaluations_ = int(state.evaluations)
        self.history_ = state.history
        self.converged_ = state.converged
        self.stop_reason_ = state.stop_reason or ("converged" if state.converged else "max_iter")
        if not self.converged_ and not self.interrupted_:
            self._warn_montecarlo(method, tol, options)

    def _warn_montecarlo(self, method: str, tol: float, options: dict) -> None:
        """The ConvergenceWarning of a Monte Carlo fit that stopped short: what, and why."""
        last = self.history_[-1] if self.history_ else {}
        why = {
            "max_iter": f"max_iter = {options.get('max_iter', 'the default')} iterations were spent (raise max_iter)",
            "max_samples": (f"the next batch would exceed max_samples = {options.get('max_samples', 'the default')} samples "
                            "(raise solver_options['max_samples'] or tol)"),
            "max_time": f"max_time = {options.get('max_time')} s was spent",
        }.get(self.stop_reason_, self.stop_reason_)
        empty = last.get("empty_cells", 0)
        hint = ""
        if empty and self.n_iter_ >= 20:  # not after a short run: there max_iter alone is the cause
            hint = (" Empty cells remain: targets of very different scales (a tight cluster beside a wide one, an "
                    "outlier, points on a lower-dimensional set) are hard for the sampled Newton steps.")
        warnings.warn(
            f"SemiDiscreteOT.fit ({method}): stopped before tol = {tol:g}: best debiased TV {self.tv_error_:.3g} "
            f"(noise floor {last.get('noise_floor', math.nan):.3g}), max relative error {self.max_rel_error_:.3g} in the "
            f"last batch, {self.n_iter_} iterations, {last.get('samples', 0)} samples in the last batch, {empty} empty "
            f"cell(s); stopped because {why}. The best heights found are kept (converged_ = False).{hint}",
            ConvergenceWarning, stacklevel=4)

    def _set_heights(self, h_cond: torch.Tensor) -> None:
        """Install heights for the conditioned targets (N,): the caller's are s h'."""
        self.singular_set_ = None  # new heights: the cached singular set is stale
        self._cond_heights = h_cond.detach().to("cpu", torch.float64)
        self._unique_heights = self._to_caller(self._cond_heights)
        yc = self._cond_targets.to(self.device_)
        hc = self._cond_heights.to(self.device_)
        self.score_dtype_ = _score_dtype(yc, hc, self.source_, int(self.seed), int(self.memory_budget))
        self._potential = BrenierPotential(yc, hc, memory_budget=self.memory_budget, compute_dtype=self.score_dtype_,
                                           search=self.search)

    # ------------------------------------------------------------- results
    def _check_fitted(self) -> None:
        if not hasattr(self, "_potential"):
            raise NotFittedError("this SemiDiscreteOT is not fitted yet: call fit(targets) first")

    @property
    def heights_(self):
        """(N,) heights h_i, one per target as given (duplicates share theirs), for the caller's
        targets: argmax_i <x, y_i> + h_i is the cell of x."""
        self._check_fitted()
        return to_caller(self._unique_heights[self._inverse], self._like_torch)

    @property
    def potential_(self) -> BrenierPotential:
        """A ``BrenierPotential`` over the unique targets as given (N, d) with ``heights_``,
        scored in float64 (exact for any offset). The fitted model itself scores the centred,
        rescaled targets (see the module docstring), which is faster and as exact."""
        self._check_fitted()
        return BrenierPotential(self._unique_targets.to(self.device_), self._unique_heights.to(self.device_),
                                memory_budget=self.memory_budget, compute_dtype=torch.float64)

    def _points(self, x, name: str = "x") -> torch.Tensor:
        self._check_fitted()
        # float64 at the edge: the potential casts to its score dtype after the checks
        pts = as_points(x, name, dim=self.targets_.shape[1], device=self.device_, dtype=torch.float64)
        if self._potential.compute_dtype == torch.float32 and pts.numel() and float(pts.abs().max()) > 1e30:
            raise ValueError(f"{name}: values up to {float(pts.abs().max()):.3g} are too large for float32 scores (|x| <= 1e30)")
        return pts

    def potential(self, x):
        """u_h(x) = max_i <x, y_i> + h_i for x (M, d) → (M,) float64."""
        pts = self._points(x)  # validates and checks fitted before touching the potential
        _, idx = self._potential.argmax(pts)
        # the winning piece re-scored in float64 in the caller's coordinates: the value is then
        # as exact as the argmax, not limited by float32 scores
        idx = idx.to(pts.device)
        y = self._unique_targets.to(pts.device)[idx]
        out = (pts * y).sum(dim=1) + self._unique_heights.to(pts.device)[idx]
        return to_caller(out, is_torch(x))

    def assign(self, x, distributed: bool = False):
        """Index (M,) int64 of the power cell holding each x (M, d); among duplicate targets the first.

        ``distributed=True``: the rows are split over the ranks of ``torch.distributed`` and the
        answers gathered (every rank must call it with the same x; the same indices on each)."""
        pts = self._points(x)
        idx = self._cells(pts, distributed)
        return to_caller(self._first_index()[idx], is_torch(x))

    def transport(self, x, distributed: bool = False):
        """The OT map T(x) = y_{assign(x)}: (M, d). ``distributed``: as in ``assign``."""
        pts = self._points(x)
        idx = self._cells(pts, distributed)
        y = self._unique_targets.to(idx.device)[idx]
        return to_caller(y, is_torch(x))

    def _cells(self, pts: torch.Tensor, distributed: bool) -> torch.Tensor:
        """Unique-target index (M,) of each point's power cell; with several ranks each scores a
        contiguous slice of the rows and one all-gather (padded to the longest slice) joins them."""
        comm = dist_.setup(_check_bool(distributed, "distributed"), self.device_)
        if comm.world_size == 1:
            return self._potential.argmax(pts)[1]
        m = pts.shape[0]
        lo, hi = dist_.shard_range(m, comm.rank, comm.world_size)
        width = -(-m // comm.world_size)
        mine = torch.full((width,), -1, dtype=torch.int64, device=self.device_)
        mine[: hi - lo] = self._potential.argmax(pts[lo:hi])[1]
        parts = comm.all_gather(mine)  # rank r holds rows shard_range(m, r, P): contiguous, in rank order
        sizes = [b - a for a, b in (dist_.shard_range(m, r, comm.world_size) for r in range(comm.world_size))]
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(self.device_)

    def _first_index(self) -> torch.Tensor:
        first = torch.full((len(self._unique_targets),), len(self._inverse), dtype=torch.int64)
        first.scatter_reduce_(0, self._inverse, torch.arange(len(self._inverse)), reduce="amin")
        return first.to(self.device_)

    def cell_masses(self, n_samples: int | None = None, seed: int | None = None, distributed: bool = False):
        """mu(W_i) per target (N,): exact for a polygonal 2-D source, else a Monte Carlo estimate.

        The Monte Carlo estimate uses ``n_samples`` (an integer >= 1) fresh source samples
        (default 1000 per target, noise floor ≈ 0.4·sqrt(N / n_samples) in total variation).
        ``seed`` in [0, 2**32 - 1] (default: derived from the model's seed). Duplicate targets split
        their cell's mass in proportion to their weights. ``distributed=True``: the samples are
        split over the ranks of ``torch.distributed`` (every rank must call it; same masses on each).
        """
        self._check_fitted()
        if n_samples is not None:
            _check_int(n_samples, "n_samples", 1)
        if seed is not None:
            _check_seed(seed)
        if self.source_.as_polygon() is not None and self.source_.uniform and self.targets_.shape[1] == 2:
            m = torch.from_numpy(self.power_diagram().masses)
        else:
            ns = int(n_samples or 1000 * len(self._unique_targets))
            s = (int(self.seed) + 1) * 7_777_777 if seed is None else int(seed)
            comm = dist_.setup(_check_bool(distributed, "distributed"), self.device_)
            with dist_.use(comm):
                m = montecarlo.estimate_masses(self._potential, self.source_, ns, seed=s, quasi=self.quasi).cpu()
        share = self.weights_ / self._unique_weights[self._inverse]
        return to_caller(m[self._inverse] * share, self._like_torch)

    def power_diagram(self, resolution: int = 1024):
        """The exact power diagram restricted to a 2-D polygonal source (``PowerDiagram``).

        Cells, areas, adjacency with facet lengths: see ``brenier.ot.power_diagram``. Indices refer
        to the unique targets (``unique_targets_``), in the caller's coordinates.
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
        """Write ``path/ot.safetensors`` (targets (N, d), weights (N,), unique_heights (K,) for the
        caller's targets), ``path/ot.json`` (source, parameters, fit summary, history) and last
        ``path/manifest.json`` (sha256 of both), each atomically: a save that dies part-way leaves
        no manifest, so it does not load."""
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
            "format": SAVE_FORMAT,
            "source": self.source_.to_dict(),
            "params": {
                "method": self.method, "tol": self.tol, "device": str(self.device), "seed": self.seed,
                "quasi": self.quasi, "memory_budget": self.memory_budget, "max_iter": self.max_iter, "search": self.search,
                "solver_options": self.solver_options,
            },
            "fitted": {
                "method": self.method_, "tol": self.tol_, "tv_error": self.tv_error_,
                "max_rel_error": self.max_rel_error_, "n_iter": self.n_iter_,
                "n_evaluations": self.n_evaluations_, "converged": self.converged_,
                "interrupted": self.interrupted_, "fit_time": self.fit_time_, "like_torch": self._like_torch,
                "stop_reason": getattr(self, "stop_reason_", ""),
            },
            "history": self.history_,
        }
        write_json(path / "ot.json", meta)
        write_manifest(path, list(_SAVED_FILES), "SemiDiscreteOT")
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "SemiDiscreteOT":
        """Read a model written by ``save``; no refit needed.

        The manifest is verified first (every file present and unchanged), then every field is
        validated; any problem raises ``brenier.CorruptRunError`` (a ValueError) naming the file
        and what is wrong. A folder without the model raises FileNotFoundError.
        """
        path = Path(path)
        if not (path / "ot.json").exists() or not (path / "ot.safetensors").exists():
            raise FileNotFoundError(f"path: {path} does not hold a saved SemiDiscreteOT (ot.json + ot.safetensors)")
        dev = resolve_device(device)
        verify_manifest(path, "SemiDiscreteOT")
        meta, tensors = _read_saved(path)
        p = dict(meta["params"])
        p["device"] = device
        obj = cls(meta["source_obj"], **p)
        f = meta["fitted"]
        obj.source_, obj.method_, obj.tol_ = obj.source, f["method"], f["tol"]
        obj.targets_, obj.weights_ = tensors["targets"], tensors["weights"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj._unique_targets, obj._unique_weights, obj._inverse = _merge_duplicates(obj.targets_, obj.weights_, warn=False)
        if tensors["unique_heights"].shape != (len(obj._unique_targets),):
            raise CorruptRunError(f"{path / 'ot.safetensors'}: unique_heights has shape {tuple(tensors['unique_heights'].shape)}, "
                                  f"expected ({len(obj._unique_targets)},) for the distinct targets")
        obj._condition()
        obj.device_ = dev
        obj._like_torch = f["like_torch"]
        obj._set_heights(tensors["unique_heights"] / obj._scale)
        obj.tv_error_, obj.max_rel_error_ = f["tv_error"], f["max_rel_error"]
        obj.n_iter_, obj.n_evaluations_ = f["n_iter"], f["n_evaluations"]
        obj.converged_, obj.interrupted_, obj.fit_time_ = f["converged"], f["interrupted"], f["fit_time"]
        obj.stop_reason_ = f.get("stop_reason") or ("converged" if obj.converged_ else "")
        obj.history_ = meta["history"]
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


def _check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name}: expected an integer in [0, {MAX_SEED}], got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{name}: expected an integer in [0, {MAX_SEED}] (2**32 - 1), got {int(seed)}")
    return int(seed)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {low}, got {value!r} ({type(value).__name__})")
    if int(value) < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {int(value)}")
    return int(value)


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _score_dtype(y: torch.Tensor, h: torch.Tensor, source: Source, seed: int, memory_budget: int) -> torch.dtype:
    """float32 when float32 scores separate the cells on the source, else float64.

    On 1024 source samples (fixed seed) the top-2 scores are computed in float64 and, for the same
    two targets, in float32: e, the float32 error of their difference, is measured, not bounded.
    A sample is misassigned when its top-2 gap is below e; with a gap density flat near 0 that
    share is about 0.1 mean(e) / q10, q10 the 10 % quantile of the gaps (a low quantile, not the
    median, so that a tight cluster holding a tenth of the mass is seen). Above
    ``FLOAT32_MISASSIGN`` the scores go to float64 (e.g. a source far from the origin, or a
    cluster 1e-4 wide beside a unit one). Targets (N, d), heights (N,), both conditioned.
    """
    if y.shape[0] < 2:
        return torch.float32
    x = source.sample(1024, seed=(seed * 31 + 17) % (MAX_SEED + 1), quasi=False, device=y.device, dtype=torch.float64)
    pot = BrenierPotential(y.double(), h.double(), memory_budget=memory_budget, compute_dtype=torch.float64)
    v, i = pot.topk(x, 2)
    gap = (v[:, 0] - v[:, 1]).abs()
    s32 = (x.float()[:, None, :] * y.float()[i]).sum(dim=2) + h.float()[i]  # (1024, 2) float32 scores
    err = ((s32[:, 0] - s32[:, 1]).double() - (v[:, 0] - v[:, 1])).abs()
    low = float(torch.quantile(gap, 0.1))
    if low <= 0 or not math.isfinite(low):
        return torch.float64
    share = 0.1 * float(err.mean()) / low
    return torch.float64 if share > FLOAT32_MISASSIGN else torch.float32


def _fingerprint(y: torch.Tensor, nu: torch.Tensor, method: str, source: Source, seed: int) -> str:
    h = hashlib.sha256()
    h.update(y.numpy().tobytes())
    h.update(nu.numpy().tobytes())
    h.update(f"{method}|{json.dumps(source.to_dict(), sort_keys=True)}|{seed}".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- checkpoints (no pickle)
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip container, a raw pickle


def _save_checkpoint(path, fingerprint: str, state: SolverState) -> None:
    """One safetensors file: the tensors (heights, best heights, solver extras) and, in its
    header, a JSON blob with the scalars and history. One file written atomically is a unit: a
    resumed fit sees the old state or the new one, never a mix."""
    tensors = {"heights": state.heights, "best_heights": state.best_heights}
    tensors.update({f"extra.{k}": v for k, v in state.extra.items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {
        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "best_tv": state.best_tv,
        "iteration": state.iteration, "batch": state.batch, "evaluations": state.evaluations,
        "elapsed": state.elapsed, "history": state.history, "converged": state.converged,
        "stop_reason": state.stop_reason,
    }
    header = {"brenier": json.dumps(meta, default=_json_default)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def _json_default(o):
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, (np.generic,)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _load_checkpoint(path, fingerprint: str, dev, n: int) -> SolverState | None:
    """The state saved at ``path`` (None if there is no file). Never unpickles: a pickle or any
    other file raises a ValueError naming it ("checkpoint: ..." so the CLI can add its hint)."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise ValueError(f"checkpoint: {path} is not a file")
    try:
        # safetensors parses a JSON header and raw arrays only: reading any file this way runs no code
        with safe_open(str(path), "pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(header["brenier"])
    except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        with open(path, "rb") as fh:
            head = fh.read(8)
        # (checked only after the safetensors parse failed: a header length may start with 0x80 too)
        if head.startswith(_PICKLE_MAGIC):
            raise ValueError(f"checkpoint: {path} is a pickle (torch.save) file, not a brenier checkpoint; brenier never "
                             "unpickles (a pickle can run code): delete it to start afresh") from None
        raise CorruptRunError(f"checkpoint: {path} is not a readable brenier checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CorruptRunError(f"checkpoint: {path} has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint: {path} belongs to a different problem (targets, weights, method, source or seed differ)")

    def bad(what: str):
        return CorruptRunError(f"checkpoint: {path}: {what}")

    for key in ("heights", "best_heights"):
        t = tensors.get(key)
        if t is None or t.shape != (n,) or t.dtype != torch.float64 or not bool(torch.isfinite(t).all()):
            raise bad(f"{key} must be {n} finite float64 values")
    ints = {k: meta.get(k) for k in ("iteration", "batch", "evaluations")}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ints.values()):
        raise bad(f"iteration, batch and evaluations must be non-negative integers, got {ints}")
    for k in ("elapsed", "best_tv"):
        if isinstance(meta.get(k), bool) or not isinstance(meta.get(k), (int, float)):
            raise bad(f"{k} must be a number")
    if not isinstance(meta.get("history"), list) or not all(isinstance(r, dict) for r in meta["history"]):
        raise bad("history must be a list of records")
    if not isinstance(meta.get("converged"), bool):
        raise bad("converged must be true or false")
    extra = {k[len("extra."):]: v.to(dev) for k, v in tensors.items() if k.startswith("extra.")}
    return SolverState(
        heights=tensors["heights"].to(dev), best_heights=tensors["best_heights"].to(dev), best_tv=float(meta["best_tv"]),
        iteration=ints["iteration"], batch=ints["batch"], evaluations=ints["evaluations"], elapsed=float(meta["elapsed"]),
        history=meta["history"], extra=extra, converged=meta["converged"], stop_reason=str(meta.get("stop_reason", "")),
    )


# ---------------------------------------------------------------- saved model validation
def _read_saved(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """ot.json and ot.safetensors of a saved model, every field checked (CorruptRunError naming the
    file and the field otherwise). Adds ``meta["source_obj"]``, the rebuilt source."""
    jpath, tpath = path / "ot.json", path / "ot.safetensors"
    try:
        meta = json.loads(jpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{jpath}: not valid JSON ({exc})") from None

    def bad(what: str, file: Path = jpath):
        return CorruptRunError(f"{file}: {what}")

    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != SAVE_FORMAT:
        raise bad(f"unknown format {meta.get('format')!r} (expected {SAVE_FORMAT!r})")
    for key, kind in (("source", dict), ("params", dict), ("fitted", dict), ("history", list)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"'{key}' missing or not a JSON {'object' if kind is dict else 'list'}")
    try:
        meta["source_obj"] = source_from_dict(meta["source"])
    except Exception as exc:  # any malformed source description: report, never a deep traceback
        raise bad(f"'source' does not describe a source ({type(exc).__name__}: {exc})") from None
    p, f = meta["params"], meta["fitted"]
    expected = {"method", "tol", "device", "seed", "quasi", "memory_budget", "max_iter", "solver_options", "search"}
    if set(p) != expected:
        raise bad(f"'params' has keys {sorted(p)}, expected {sorted(expected)}")
    checks = [
        (p["method"] in METHODS, "params.method", f"one of {METHODS}"),
        (p["tol"] is None or _positive_number(p["tol"]), "params.tol", "null or a positive number"),
        (_int_in(p["seed"], 0, MAX_SEED), "params.seed", f"an integer in [0, {MAX_SEED}]"),
        (isinstance(p["quasi"], bool), "params.quasi", "true or false"),
        (_int_in(p["memory_budget"], 1, None), "params.memory_budget", "an integer >= 1"),
        (p["max_iter"] is None or _int_in(p["max_iter"], 1, None), "params.max_iter", "null or an integer >= 1"),
        (p["solver_options"] is None or isinstance(p["solver_options"], dict), "params.solver_options", "null or an object"),
        (p["search"] in SEARCHES, "params.search", f"one of {SEARCHES}"),
        (f.get("method") in ("newton", "adam", "exact"), "fitted.method", "'newton', 'adam' or 'exact'"),
        (_positive_number(f.get("tol")), "fitted.tol", "a positive number"),
        (_number(f.get("tv_error")), "fitted.tv_error", "a number"),
        (_number(f.get("max_rel_error")), "fitted.max_rel_error", "a number"),
        (_int_in(f.get("n_iter"), -1, None), "fitted.n_iter", "an integer >= -1"),
        (_int_in(f.get("n_evaluations"), 0, None), "fitted.n_evaluations", "an integer >= 0"),
        (isinstance(f.get("converged"), bool), "fitted.converged", "true or false"),
        (isinstance(f.get("interrupted"), bool), "fitted.interrupted", "true or false"),
        (_number(f.get("fit_time")) and f["fit_time"] >= 0, "fitted.fit_time", "a number >= 0"),
        (isinstance(f.get("like_torch"), bool), "fitted.like_torch", "true or false"),
        (all(isinstance(r, dict) for r in meta["history"]), "history", "a list of objects"),
    ]
    for ok, field, what in checks:
        if not ok:
            raise bad(f"{field} must be {what}")

    try:
        tensors = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise bad(f"not a readable safetensors file ({exc})", tpath) from None
    if set(tensors) != {"targets", "weights", "unique_heights"}:
        raise bad(f"holds {sorted(tensors)}, expected targets, weights, unique_heights", tpath)
    y, w, h = tensors["targets"], tensors["weights"], tensors["unique_heights"]
    for name, t, ndim in (("targets", y, 2), ("weights", w, 1), ("unique_heights", h, 1)):
        if t.dtype != torch.float64 or t.ndim != ndim:
            raise bad(f"{name} must be a {ndim}-D float64 array, got {t.dtype} of shape {tuple(t.shape)}", tpath)
        if not bool(torch.isfinite(t).all()):
            raise bad(f"{name} contains NaN or infinite values", tpath)
    n, d = y.shape
    if n < 2 or d < 1:
        raise bad(f"targets has shape {(n, d)}, expected (N >= 2, d >= 1)", tpath)
    if meta["source_obj"].dim != d:
        raise bad(f"the source's dimension {meta['source_obj'].dim} does not match the targets' {d}", jpath)
    if w.shape != (n,):
        raise bad(f"weights has shape {tuple(w.shape)}, expected ({n},)", tpath)
    if bool((w <= 0).any()) or abs(float(w.sum()) - 1) > 1e-6:
        raise bad("weights must be positive and sum to 1", tpath)
    if f["method"] == "exact" and (d != 2 or meta["source_obj"].as_polygon() is None):
        raise bad("fitted.method is 'exact' but the source is not a 2-D polygon", jpath)
    return meta, tensors


def _positive_number(v) -> bool:
    return _number(v) and math.isfinite(v) and v > 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(v, low: int, high: int | None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


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
