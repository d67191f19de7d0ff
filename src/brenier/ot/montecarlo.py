"""Monte Carlo solvers of semi-discrete OT in any dimension.

Both minimise the convex energy

    E(h) = ∫ u_h dmu − Σ_i nu_i h_i,     u_h(x) = max_i <x, y_i> + h_i,

whose gradient is the cell-mass mismatch  ∇E(h)_i = mu(W_i(h)) − nu_i, estimated by counting
which power cell each of M source samples falls in.

* ``solve_adam`` — the published AE-OT recipe (An, Lei, Su, Gu et al., "AE-OT: a new generative
  model based on extended semi-discrete optimal transport", ICLR 2020; code "pyOMT"): Adam on h
  with the raw mass-mismatch gradient, the Monte Carlo sample doubled whenever the gradient norm
  has not improved for ``patience`` steps.
* ``solve_newton`` — our default: a Monte Carlo damped Newton method. The Hessian of E is the
  graph Laplacian  H_ij = −∫_{W_i∩W_j} rho dσ / |y_i − y_j|  (i ≠ j),  H_ii = −Σ_j H_ij
  (Kitagawa, Mérigot & Thibert, JEMS 2019). Its entries are estimated from the same samples as
  the gradient, with an entropic smoothing: over each sample's best k = 4 scores s, let
  p = softmax((s − s_max) / ε); the sample adds p_best p_j / ε to the pair (best, j). Across a
  facet this integrates to exactly |W_i ∩ W_j| / |y_i − y_j|, and every sample near a facet
  contributes, not only those in a thin slab. ε is a low quantile of the top-2 score gaps. The
  step solves H δ = ∇E by Jacobi-preconditioned conjugate gradients on the device, then:
  - line search: while the measured mismatch is far above its noise, the step is halved as
    long as the convex energy keeps falling along it, measured on a small common sample (far
    from the solution the sampled Hessian is several times too small: a full step overshoots);
  - damping: a step whose measured mismatch still grows beyond noise is halved (backtracking);
  - the step length is the signal share 1 − floor² / tv² of the measured mismatch, so that
    sampling noise is not written into h at full weight;
  - a scalar κ rescales the sampled Hessian: after each step the measured mass change is
    compared with the predicted one (with the noise's own contribution removed);
  - the sample doubles once the measured mismatch is at its noise floor or stops shrinking, so
    early steps are cheap and only the last few are expensive; near the end the last batches are
    planned instead (``plan_batch``): a Wiener-weighted step pools the information of the
    batches, so the fit asks for just the samples that let its last step land within the
    tolerance, then for a verdict batch just large enough to certify it;
  - in low dimension (d ≤ 3) a fresh run starts from a coarse-to-fine solution
    (``multiscale_heights``, Mérigot 2011) with κ = 4, not from the contracted Voronoi diagram,
    whose cell masses differ there by orders of magnitude. d ≥ 4 runs are unchanged by this;
  - a cell that no near-tie sample touches (empty, or nearly) has a diagonal floored at half
    the median diagonal of its 8 nearest targets (``local_floor``), not the global median: the
    entries scale like 1 / |y_i − y_j|, so in a tight cluster of targets (the codes of one
    stable state that varies little) a globally floored empty cell overshoots by orders of
    magnitude, and the cluster's cells trade emptiness for hundreds of steps
    (``benchmarks/newton_floor.py``).

Sample reuse (``solve_newton(reuse=True)``, opt-in: measured slower than fresh samples): one nested
sample for the whole fit, the steps at one batch size being Newton steps on that fixed sample
(their cells certified across steps by ``reuse.AssignmentCache`` where the height change allows,
so most late passes skip the N targets); the Hessian kept until the batch grows or it mispredicts
a step by more than 1.5x; convergence judged only on the rows appended by the last growth, which
no step has seen (their own split-half noise floor). Measured in README "Benchmarks".

Monte Carlo noise floor: with M samples, a cell of mass nu is counted with standard deviation
sqrt(nu (1 − nu) / M); summed over N cells the total-variation estimate of a *perfect* solution is
about sqrt(2/π) · ½ Σ_i sqrt(nu_i / M) = 0.40 · sqrt(N / M) for uniform weights. No estimate from
M samples can certify a gap below that; the solvers therefore stop on the *debiased* estimate
sqrt(max(tv² − floor², 0)) and only once the floor itself is below the tolerance.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..sources import CHUNK_SIZE, Source, n_chunks
from . import distributed
from .potential import BrenierPotential
from .reuse import AssignmentCache

Callback = Callable[[dict[str, Any], torch.Tensor], None]


@dataclass
class SolverState:
    """Everything a Monte Carlo solver needs to continue: written to checkpoints, kept on Ctrl-C."""

    heights: torch.Tensor
    best_heights: torch.Tensor
    best_tv: float = math.inf
    iteration: int = 0
    batch: int = 0
    evaluations: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # solver-specific (Adam moments)
    converged: bool = False
    #: why the solver returned: "converged", "max_iter", "max_samples", "max_time" ("" while running)
    stop_reason: str = ""

    # The solvers keep this state current *every iteration* (heights, counters, elapsed time and
    # what the next step needs: kappa, the last step, Adam's moments), so a checkpoint written
    # from it at any iteration resumes there, not at the start.


#: called by the solvers after every step with the state that continues from there
StateHook = Callable[[SolverState], None]


@dataclass
class BatchStats:
    counts: torch.Tensor  # (N,) samples per cell
    n_samples: int
    split_tv: float = 0.0  # ½ Σ |mu_A − mu_B| between the two half-samples
    noise_sq: float = 0.0  # estimate of |mu_hat − mu|² (squared L2 noise of the pooled masses)
    pairs: torch.Tensor | None = None  # (E, 2) near-tie pairs i < j
    pair_weights: torch.Tensor | None = None  # (E,) estimated |H_ij| for each pair
    eps: float = 0.0
    # counts of the rows no earlier evaluation used (``batch_stats(fitted_rows=...)``): an
    # independent check of heights fitted on the others. (2, N) per half-sample, and their sizes.
    fresh_halves: torch.Tensor | None = None
    fresh_sizes: tuple[int, int] = (0, 0)


def noise_floor(nu: torch.Tensor, n_samples: int) -> float:
    """Expected TV estimate ½ Σ|mu_hat_i − nu_i| of an exact solution from ``n_samples`` samples."""
    return float(0.5 * math.sqrt(2 / math.pi) * torch.sqrt(nu * (1 - nu) / n_samples).sum())


def debiased_tv(tv: float, floor: float) -> float:
    """Remove the noise floor from a TV estimate (errors and noise add roughly in quadrature)."""
    return math.sqrt(max(tv * tv - floor * floor, 0.0))


def batch_stats(
    pot: BrenierPotential,
    source: Source,
    n_samples: int,
    *,
    seed: int,
    quasi: bool = True,
    pairs: bool = False,
    eps_quantile: float = 0.15,
    k_pairs: int = 8,
    hessian_samples: int | None = None,
    cache: AssignmentCache | None = None,
    fitted_rows: tuple[int, int] | None = None,
) -> BatchStats:
    """Count samples per power cell; with ``pairs``, also count near-tie pairs for the Hessian.

    ``hessian_samples``: the near-tie pairs come from the first chunks of each half-sample only,
    about this many samples in all (default ``max(16 N, 2^20)``, see ``hessian_sample_size``);
    the rest of the batch is counted by an argmax, which costs ~2.5x less than the top-k.

    The sample is two half-samples (streams ``seed`` and ``seed + 0x5EED``), each a list of chunks
    of ``sources.CHUNK_SIZE`` points whose content depends only on (stream, chunk index); the
    targets are reached only through ``pot.topk`` / ``pot.argmax`` of one chunk at a time. The
    near-tie width ε is the ``eps_quantile`` quantile of the top-2 score gaps of the first chunk.
    So the result does not depend on ``pot``'s memory budget nor on how the chunks are split
    across ranks (counts exactly, pair weights up to float64 summation order).

    ``cache``: an ``AssignmentCache`` on ``pot`` (keys (half, chunk)) that answers the rows whose
    cells are certified since an earlier call on the same streams; the answers are those of a
    fresh pass, so the statistics do not depend on it (only the work does).
    ``fitted_rows``: (rows of half A, rows of half B) that earlier evaluations used: the rows
    after them are also counted apart (``BatchStats.fresh_halves``), the fit's honest check.

    Under ``distributed.use(comm)`` with P > 1 ranks: with a plain ``BrenierPotential`` rank r
    takes the chunks g ≡ r (mod P) of the batch and the ranks combine counts (all-reduce) and
    pairs (all-gather); with a ``distributed.ShardedPotential`` every rank takes every chunk and
    the potential merges the top-k. Every rank returns the same statistics.
    """
    comm = distributed.current()
    n = pot.n_targets
    dev = pot.device
    sizes = (n_samples // 2, n_samples - n_samples // 2)
    seeds = (seed, seed + 0x5EED)
    # Two independent half-samples (two scrambles): their disagreement measures the noise of
    # the pooled estimate directly, also for QMC, whose noise is below the i.i.d. formula.
    plan = [(half, k) for half in (0, 1) for k in range(n_chunks(sizes[half]))]
    sharded = getattr(pot, "shards_targets", False)
    split = comm.world_size > 1 and not sharded
    mine = plan[comm.rank::comm.world_size] if split else plan
    track = fitted_rows is not None
    # rows 0-1: the two half-samples; rows 2-3: their rows after ``fitted_rows`` (fresh ones)
    halves = torch.zeros(4 if track else 2, n, dtype=torch.int64, device=dev)
    if sharded:
        cache = None  # the sharded top-k merges over ranks: no per-rank certificate
    keys: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    evals0 = pot.evaluations
    kp = min(k_pairs, n)
    # The Hessian is only Newton's preconditioner: its sampling noise changes the step, not the
    # fixed point (the counts, from the whole batch, do). So it is estimated from a capped number
    # of samples -- whole chunks, chosen by index, so the result still does not depend on how
    # the chunks are split across ranks -- and the late, large batches pay an argmax, not a top-k.
    cap = hessian_sample_size(n) if hessian_samples is None else int(hessian_samples)
    pair_chunks = max(1, n_chunks(max(cap // 2, 1)))
    pair_n = sum(min(sz, pair_chunks * CHUNK_SIZE) for sz in sizes)

    def chunks():
        for half in (0, 1):
            ks = [k for h, k in mine if h == half]
            for k, x in source.chunks(sizes[half], seed=seeds[half], quasi=quasi, indices=ks, device=dev,
                                      dtype=pot.compute_dtype):
                yield half, k, x

    def scored():
        for half, k, x in chunks():
            if pairs and k < pair_chunks:
                # best first, equal scores by ascending index (also at the k-th place): a
                # sharded potential merges to exactly this list, so both give the same pairs
                # (never from the cache: a top-k list is rarely certified whole, and the fresh
                # float32 scores keep the pair weights bit-identical with and without it)
                yield half, k, pot.topk(x, kp)
            elif cache is None:
                yield half, k, (None, pot.argmax(x)[1][:, None])
            else:
                yield half, k, (None, cache.query((half, k), x, 1)[1])

    stream = scored()
    eps = 0.0
    if pairs:
        # ε from the stream's first chunk (rank 0's first one when the chunks are split): not
        # from "the first memory block", whose size would change the result
        first = next(stream, None)
        local = math.nan
        if first is not None and (first[0], first[1]) == plan[0]:
            local = _near_tie_width(first[2][0], eps_quantile)
        if split:
            local = float(comm.broadcast(torch.tensor([local], dtype=torch.float64), src=0)[0])
        eps = local if math.isfinite(local) else 0.0
        stream = itertools.chain([first] if first is not None else [], stream)
    for half, k, (v, i) in stream:
        halves[half] += torch.bincount(i[:, 0], minlength=n)
        if track:
            start = max(fitted_rows[half] - k * CHUNK_SIZE, 0)  # this chunk's first fresh row
            if start < i.shape[0]:
                halves[2 + half] += torch.bincount(i[start:, 0], minlength=n)
        if v is None:  # counted only (no pairs asked, or past the Hessian's sample cap)
            continue
        # Entropic Hessian: with p = softmax(s / eps) over the best k cells, each sample adds
        # p_i p_j / eps to the pair (best cell i, runner-up j). Across a facet this integrates
        # to exactly |W_i ∩ W_j| / |y_i - y_j|, so it tends to the true Hessian as eps -> 0,
        # and every sample contributes (far less noise than counting samples in a thin slab).
        p = torch.softmax((v - v[:, :1]).double() / eps, dim=1)
        w = p[:, :1] * p[:, 1:] / eps
        keep = w > 1e-4 * w.max() if w.numel() else w.bool()
        r, c = torch.nonzero(keep, as_tuple=True)
        a, b = i[r, 0], i[r, c + 1]
        keys.append(torch.minimum(a, b) * n + torch.maximum(a, b))
        weights.append(w[r, c])
        if len(keys) >= 16:  # merge duplicates as we go: memory stays O(#pairs), not O(M)
            keys, weights = _merge_pairs(keys, weights)
    if pairs:
        if not keys:
            keys, weights = [torch.empty(0, dtype=torch.int64, device=dev)], [torch.empty(0, dtype=torch.float64, device=dev)]
        keys, weights = _merge_pairs(keys, weights)
    if split:
        halves, keys, weights = _combine(comm, pot, halves, keys, weights, evals0)
    counts = halves[:2].sum(0)
    diff = halves[0].double() / max(sizes[0], 1) - halves[1].double() / max(sizes[1], 1)
    split_tv = float(0.5 * diff.abs().sum())
    noise_sq = float(diff.square().sum()) / 4  # var(A − B) = 4 var(pooled) for equal halves
    out = BatchStats(counts, n_samples, split_tv=split_tv, noise_sq=noise_sq)
    if track:
        out.fresh_halves = halves[2:]
        out.fresh_sizes = tuple(max(sz - f, 0) for sz, f in zip(sizes, fitted_rows))
    if pairs:
        (uniq,), (acc,) = keys, weights
        out.pairs, out.pair_weights, out.eps = torch.stack([uniq // n, uniq % n], 1), acc / pair_n, eps
    return out


def hessian_sample_size(n: int) -> int:
    """Default number of samples for the sampled Hessian of N targets: max(16 N, 2^20).

    At 16 N samples (the first batch) the solver already takes full Newton steps, and κ (the
    measured response) corrects the Hessian's overall scale, so a larger Hessian sample buys
    little: capping it left the steps of a 10,000-code fit unchanged (benchmarks/hessian_cap.py).
    Larger batches only serve the gradient; above 2^16 targets each top-k sample costs about
    twice an argmax, so the cap is what the late, large batches of a big fit pay."""
    return max(16 * int(n), 1 << 20)


def _near_tie_width(v: torch.Tensor, q: float) -> float:
    """ε: the q-quantile of the top-2 score gaps of v (M, k) (1.0 when there is no runner-up)."""
    if v.shape[1] < 2 or v.shape[0] == 0:
        return 1.0
    gap2 = (v[:, 0] - v[:, 1]).double()
    return float(torch.quantile(gap2, q).clamp_min(1e-12))


def _combine(comm, pot, halves: torch.Tensor, keys: list[torch.Tensor], weights: list[torch.Tensor], evals0: int):
    """Sum the ranks' half-counts and merge their near-tie pairs; every rank gets the same result.

    One all-reduce carries the counts, this batch's score evaluations and each rank's number of
    pairs (exact int64); one all-gather carries the pairs, padded to the longest, as int64 rows
    (key, the weight's float64 bits). The merge runs on the CPU in rank order, so it is
    deterministic even where the device's index_add is not.
    """
    rows_n, n = halves.shape
    P = comm.world_size
    own = keys[0].shape[0] if keys else 0
    lens = torch.zeros(P, dtype=torch.int64, device=halves.device)
    lens[comm.rank] = own
    evals = torch.tensor([pot.evaluations - evals0], dtype=torch.int64, device=halves.device)
    buf = comm.all_reduce_sum(torch.cat([halves.reshape(-1), evals, lens]))
    halves = buf[: rows_n * n].reshape(rows_n, n)
    pot.evaluations = evals0 + int(buf[rows_n * n])
    lens = buf[rows_n * n + 1:].tolist()
    if not keys or max(lens) == 0:  # every rank knows lens: all skip the gather together
        return halves, keys, weights
    rows = torch.zeros(max(lens), 2, dtype=torch.int64, device=halves.device)
    rows[:own, 0] = keys[0]
    rows[:own, 1] = weights[0].view(torch.int64)  # the float64 bits, exactly
    parts = [part[:m].cpu() for part, m in zip(comm.all_gather(rows), lens)]
    allrows = torch.cat(parts)
    merged_k, merged_w = _merge_pairs([allrows[:, 0]], [allrows[:, 1].contiguous().view(torch.float64)])
    return halves, [merged_k[0].to(halves.device)], [merged_w[0].to(halves.device)]


def _merge_pairs(keys: list[torch.Tensor], weights: list[torch.Tensor]):
    """Sum the weights of equal pair keys: ([unique keys], [summed weights])."""
    uniq, inv = torch.unique(torch.cat(keys), return_inverse=True)
    acc = torch.zeros(uniq.shape[0], dtype=torch.float64, device=uniq.device).index_add_(0, inv, torch.cat(weights))
    return [uniq], [acc]


def estimate_masses(pot: BrenierPotential, source: Source, n_samples: int, *, seed: int, quasi: bool = True) -> torch.Tensor:
    """Monte Carlo estimate of the cell masses mu(W_i): (N,) float64.

    Split over the ranks under ``distributed.use(comm)`` (every rank gets the same masses)."""
    st = batch_stats(pot, source, n_samples, seed=seed, quasi=quasi)
    return st.counts.double() / n_samples


def _sync(state: SolverState, pot: BrenierPotential, evals0: int, elapsed0: float, t0: float) -> None:
    """Bring the state's running totals up to date (what a checkpoint written now must hold)."""
    state.evaluations = evals0 + pot.evaluations
    state.elapsed = elapsed0 + time.perf_counter() - t0


def _record(state: SolverState, stats: BatchStats, nu: torch.Tensor, **extra) -> dict:
    """The history entry of one evaluation; ``state``'s counters must be current (``_sync``)."""
    mu = stats.counts.double() / stats.n_samples
    g = mu - nu
    tv = float(0.5 * g.abs().sum())
    # The pooled estimate's noise is half the half-samples' disagreement (std(A − B) = 2 std(pooled)).
    floor = 0.5 * stats.split_tv
    rec = {
        "iteration": state.iteration,
        "samples": stats.n_samples,
        "tv_estimate": tv,
        "noise_floor": floor,
        "noise_floor_iid": noise_floor(nu, stats.n_samples),
        "tv_debiased": debiased_tv(tv, floor),
        "max_rel_estimate": float((g.abs() / nu).max()),
        "empty_cells": int((stats.counts == 0).sum()),
        "evaluations": state.evaluations,
        "time": state.elapsed,
        **extra,
    }
    if stats.fresh_halves is not None:
        # the independent check: rows no earlier step used (all rows at the first evaluation)
        fa, fb = stats.fresh_sizes
        rec["fresh_samples"] = fa + fb
        if fa > 0 and fb > 0:
            f = stats.fresh_halves.double()
            tv_f = float(0.5 * ((f[0] + f[1]) / (fa + fb) - nu).abs().sum())
            floor_f = 0.5 * float(0.5 * (f[0] / fa - f[1] / fb).abs().sum())
            rec.update(tv_fresh=tv_f, noise_floor_fresh=floor_f, tv_fresh_debiased=debiased_tv(tv_f, floor_f))
    return rec


def _converged(rec: dict, tol: float) -> bool:
    if "fresh_samples" in rec:  # a fit reusing its sample: only its fresh rows may judge it
        return "tv_fresh" in rec and rec["noise_floor_fresh"] <= tol and rec["tv_fresh_debiased"] <= tol
    return rec["noise_floor"] <= tol and rec["tv_debiased"] <= tol


def _honest_tv(rec: dict) -> float | None:
    """The record's independent (debiased) TV estimate, None where it has none."""
    if "fresh_samples" in rec:
        return rec.get("tv_fresh_debiased")
    return rec["tv_debiased"]


def _advance(state: SolverState, rec: dict, h_evaluated: torch.Tensor, callback: Callback | None) -> None:
    state.history.append(rec)
    # "best" is judged by the debiased estimate, comparable across sample sizes, and only by an
    # independent one (a fit reusing its sample is judged on its fresh rows)
    tv = _honest_tv(rec)
    if tv is not None and (tv < state.best_tv or state.best_tv == math.inf):
        state.best_tv = tv
        state.best_heights = h_evaluated.clone()
    if callback is not None:
        callback(rec, h_evaluated)


def _laplacian_solve(stats: BatchStats, g: torch.Tensor, n: int, *, ridge: float = 0.02, cg_tol: float = 1e-4, max_cg: int = 300,
                     neighbours: torch.Tensor | None = None) -> torch.Tensor:
    """Solve H δ = g with H the near-tie estimate of the Hessian (a graph Laplacian), mean-zero δ.

    neighbours: (N, k) indices of each target's nearest targets, for the local diagonal floor."""
    dev = g.device
    w = stats.pair_weights
    i, j = stats.pairs[:, 0], stats.pairs[:, 1]
    diag = torch.zeros(n, dtype=torch.float64, device=dev)
    diag.index_add_(0, i, w).index_add_(0, j, w)
    # Cells with (almost) no near-tie samples would get huge steps: floor the diagonal at
    # half a typical cell's, so such a cell moves at most like a typical one. The sampled
    # graph may also split into pieces whose mismatch does not sum to zero; a small ridge
    # (Levenberg-Marquardt) keeps the system definite and the step bounded.
    positive = diag[diag > 0]
    typical = float(positive.median()) if positive.numel() else 1.0
    floor = torch.full_like(diag, 0.5 * typical)
    if neighbours is not None:
        # "typical" is local: the Hessian entries scale like 1 / |y_i - y_j|, so in a tight
        # cluster of targets they are far above the global median, and an empty cell there,
        # floored at the global scale, jumps far past its neighbours (measured: tens of cells
        # trading emptiness for hundreds of steps). Floor it at its neighbours' median instead.
        nd = diag[neighbours]                                          # (N, k)
        local = torch.where(nd > 0, nd, torch.nan).nanmedian(dim=1).values
        floor = torch.where(torch.isnan(local), floor, torch.maximum(floor, 0.5 * local))
    diag = torch.maximum(diag, floor) + ridge * typical
    rows = torch.cat([i, j, torch.arange(n, device=dev)])
    cols = torch.cat([j, i, torch.arange(n, device=dev)])
    vals = torch.cat([-w, -w, diag])
    H = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()
    if dev.type == "cpu":
        with warnings.catch_warnings():  # CSR is "beta" in torch, but it is the fast CPU matvec
            warnings.simplefilter("ignore", UserWarning)
            H = H.to_sparse_csr()
    # Jacobi-preconditioned conjugate gradients.
    inv_d = 1.0 / diag
    b = g - g.mean()
    x = torch.zeros_like(b)
    r = b.clone()
    z = inv_d * r
    p = z.clone()
    rz = torch.dot(r, z)
    bnorm = float(b.norm()) or 1.0
    for _ in range(max_cg):
        Hp = H @ p
        alpha = rz / torch.dot(p, Hp)
        x += alpha * p
        r -= alpha * Hp
        if float(r.norm()) <= cg_tol * bnorm:
            break
        z = inv_d * r
        rz_new = torch.dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x - x.mean()


def line_search_size(n: int) -> int:
    """Samples of the energy line search for N targets: 2 N, within [2^15, 2^18]."""
    return int(min(max(2 * int(n), 1 << 15), 1 << 18))


def _energy_line_search(pot: BrenierPotential, source: Source, h: torch.Tensor, delta: torch.Tensor, nu: torch.Tensor,
                        tau: float, *, seed: int, quasi: bool, n_samples: int, max_halvings: int = 5) -> tuple[float, int]:
    """The step length along h − t·δ: tau, halved while the energy E(h − t δ) keeps falling.

    E(h − t δ) = ∫ u_{h − t δ} dmu − Σ nu_i h_i + t <nu, δ> is convex in t, and its Monte Carlo
    estimate on one common sample (the same points for every t) is far less noisy than a mass
    count: the difference between two t's is an average of |Δu| ≤ |Δt| max |δ|. Far from the
    solution the sampled Hessian underestimates the true one (d = 16, MNIST codes: the first
    Newton step's energy minimum lies at t ≈ 1/4), and a full step then overshoots badly (TV
    0.46 → 0.83) and costs one whole batch per halving; here a halving costs one pass over
    ``n_samples`` points, a fraction of a batch. Returns (t, halvings made).
    h: (N,) float64 heights the step starts from; delta: (N,) the step direction.
    Every rank computes the same search (deterministic; a sharded potential merges its top-1).
    """
    xs = [x for _, x in source.chunks(n_samples, seed=seed, quasi=quasi, device=pot.device, dtype=pot.compute_dtype)]
    slope = float(torch.dot(nu.to(delta.dtype), delta))

    def energy(t: float) -> float:
        pot.set_heights(h - t * delta)
        total = sum(float(pot.argmax(x)[0].double().sum()) for x in xs)
        return total / max(n_samples, 1) + t * slope

    t, e = tau, energy(tau)
    halvings = 0
    while halvings < max_halvings:
        e_half = energy(t / 2)
        if e_half >= e:
            break
        t, e = t / 2, e_half
        halvings += 1
    pot.set_heights(h)
    return t, halvings


def _nearest_targets(y: torch.Tensor, k: int = 8, memory_budget: int = 1 << 28) -> torch.Tensor:
    """(N, k) indices of each target's k nearest other targets (exact search, in row blocks whose
    distance matrix stays under ``memory_budget`` bytes)."""
    n = y.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return torch.zeros(n, 0, dtype=torch.int64, device=y.device)
    block = max(1, min(4096, memory_budget // (4 * n)))
    yf = y.float()
    out = []
    for s in range(0, n, block):
        d = torch.cdist(yf[s:s + block], yf)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def solve_newton(
    pot: BrenierPotential,
    source: Source,
    nu: torch.Tensor,
    state: SolverState,
    *,
    tol: float = 0.02,
    seed: int = 0,
    quasi: bool = True,
    batch0: int | None = None,
    growth: float = 2.0,
    max_samples: int | None = None,
    max_iter: int = 200,
    eps_quantile: float = 0.15,
    max_time: float | None = None,
    callback: Callback | None = None,
    multiscale: bool | None = None,
    local_floor: bool = True,
    hessian_samples: int | None = None,
    on_state: StateHook | None = None,
    reuse: bool = False,
    line_search: bool = True,
    hessian_k: int = 4,
) -> SolverState:
    """Monte Carlo damped Newton (see the module docstring). Updates ``state`` in place.

    pot: potential holding targets (N, d) and the current heights; nu: (N,) target weights.
    Stops when the debiased TV estimate of the current heights is ≤ ``tol`` (with a noise
    floor ≤ ``tol``), after ``max_iter`` iterations, or when the next batch would exceed
    ``max_samples``. ``multiscale`` (default: d ≤ 3): a fresh run (iteration 0) starts from
    ``multiscale_heights`` instead of ``state.heights``; its cost counts in ``evaluations``.
    ``local_floor``: floor the sampled Hessian's diagonal at half the median diagonal of each
    target's 8 nearest targets (else at half the global median only; see ``_laplacian_solve``).
    ``hessian_samples``: samples of each batch that feed the sampled Hessian (``batch_stats``).
    ``on_state(state)``: called after every step with the state to continue from (the stepped
    heights, the counters, kappa and the last step for the damping): a checkpoint written there
    resumes the run exactly where it was. ``state.stop_reason`` says why the solver returned.
    ``hessian_k``: the sampled Hessian pairs each sample's cell with its next ``hessian_k − 1``
    best (4: 97.6 % of the entropic weight of the best 8 on MNIST codes, d = 16, and a top-4
    pass ran 1.6x faster than a top-8 over all 60,000 codes: benchmarks/hessian_k.py; κ absorbs
    the rest of the scale).
    ``line_search``: while the measured mismatch is far above its noise floor (tv > 4 floor), the
    step is halved as long as the energy falls along it, on a small common sample
    (``_energy_line_search``, ~2 N points a try) instead of a whole batch per halving (fresh
    samples only; with ``reuse`` the steps are not damped this way).

    ``reuse`` (opt-in; measured slower, see below): one nested sample for the whole fit (two fixed streams; growing the
    batch appends chunks), each iteration's cells certified from the last ones where the height
    change allows (``reuse.AssignmentCache``, exact). Steps at one batch size are then Newton
    steps on a fixed sample, so they converge (to that sample's solution) instead of re-shuffling
    noise, and cost a fraction of a pass. Convergence is judged only on rows no earlier step has
    seen (the rows a growth appended): an independent estimate with its own noise floor, so a fit
    to its own sample cannot pass for convergence. ``reuse=False``: a fresh sample every
    iteration and every row recomputed: the default, because it was measured faster. On 20,000
    MNIST codes (d = 16, TV 0.028, benchmarks/ot_solver.py, JSON ot_solver_mnist20k.json) reuse
    took 491 s and fresh samples 233 s (ot_solver_mnist20k_fresh.json): the early steps on a fixed small sample overshoot more,
    and judging convergence on appended rows only needs a final batch twice as large (512 N
    against 256 N). Certification itself works late in the fit (80-84 % of the rows kept
    their cell without a pass in the last steps).
    """
    n = pot.n_targets
    if not isinstance(reuse, bool):
        raise ValueError(f"reuse: expected True or False, got {reuse!r}")
    if isinstance(hessian_k, bool) or not isinstance(hessian_k, int) or hessian_k < 2:
        raise ValueError(f"hessian_k: expected an integer ≥ 2, got {hessian_k!r}")
    if not isinstance(line_search, bool):
        raise ValueError(f"line_search: expected True or False, got {line_search!r}")
    if state.batch <= 0:
        # With reuse a batch is fitted, not just measured, before it grows, so the far-off first
        # steps run on a quarter of the sample (4 N): they need direction, not precision.
        state.batch = int(batch0 or max((4 if reuse else 16) * n, 1 << 14))
    if reuse and hessian_samples is None:
        # the Hessian is re-estimated only on growth or a bad prediction: 16 N samples of top-k
        hessian_samples = max(16 * n, 1 << 20)
    # (with reuse the verdict needs appended rows: room for one more doubling)
    max_samples = int(max_samples or (2 if reuse else 1) * 64 * n * (0.4 / tol) ** 2)
    t0 = time.perf_counter()
    state.stop_reason = ""
    if multiscale is None:  # default: only in low dimension (see multiscale_heights); d >= 4 unchanged
        multiscale = pot.dim <= LOW_DIM
    if multiscale and state.iteration == 0 and n > _COARSE_MIN:
        # a fresh low-dimensional run replaces the given start by the coarse-to-fine one
        h0, coarse_evals = multiscale_heights(pot.targets, nu, source, tol=tol, seed=seed, quasi=quasi,
                                              memory_budget=pot.memory_budget)
        state.heights, state.best_heights = h0.clone(), h0.clone()
        state.evaluations += coarse_evals
    pot.reset_count()
    evals0, elapsed0 = state.evaluations, state.elapsed
    neighbours = _nearest_targets(pot.targets, memory_budget=pot.memory_budget) if local_floor else None
    h = state.heights.to(pot.device, torch.float64)
    # (tv, g, h before the step, step, noise²) of the last step, and its length: restored from
    # a resumed state so that its damping and kappa update continue as if never stopped
    prev = _load_prev(state.extra, pot.device)
    tau = float(state.extra.get("tau", torch.tensor(1.0)))
    # kappa corrects the overall scale of the sampled Hessian (smoothing biases it, most in low
    # d): after each step the measured mass change is compared with the predicted one.
    # In d <= LOW_DIM the sampled Hessian is several times too small far from the solution
    # (measured: from kappa = 1 the TV first grows for ~15 steps while kappa climbs to ~6), so
    # low-dimensional runs start at kappa = 4; d >= 4 keeps 1.
    kappa = float(state.extra.get("kappa", torch.tensor(1.0 if pot.dim > LOW_DIM else 4.0)))

    # reuse: the rows of each half-sample that earlier evaluations used (the rest are fresh);
    # the cache lives in this call only: a resumed run recomputes once, with the same answers
    fitted = [int(v) for v in state.extra.get("fitted_rows", torch.zeros(2, dtype=torch.int64)).reshape(-1).tolist()]
    if len(fitted) != 2 or not 0 <= fitted[0] <= state.batch // 2 or not 0 <= fitted[1] <= state.batch - state.batch // 2:
        fitted = [0, 0]  # a damaged record: count every row as fresh (the honest side)
    cache = AssignmentCache(pot) if reuse and not getattr(pot, "shards_targets", False) else None
    # reuse: the sampled Hessian (pairs, weights, ε) is kept while it predicts the steps well
    hess = _load_hessian(state.extra, pot.device)
    if hess is not None and hess[0].numel() and int(hess[0].max()) >= n:
        hess = None
    ratio = float(state.extra.get("ratio", torch.tensor(1.0)))

    def keep(h_next: torch.Tensor) -> None:
        # the state to continue from: the heights to evaluate next and what the damping needs
        state.heights = h_next
        state.extra.update(_save_prev(prev), tau=_scalar(tau), kappa=_scalar(kappa))
        if reuse:
            state.extra["fitted_rows"] = torch.tensor(fitted, dtype=torch.int64)
            state.extra["ratio"] = _scalar(ratio)
            if hess is not None:
                state.extra.update(hess_pairs=hess[0], hess_weights=hess[1], hess_eps=_scalar(hess[2]))
        _sync(state, pot, evals0, elapsed0, t0)
        if on_state is not None:
            on_state(state)

    while state.iteration < max_iter:
        pot.set_heights(h)
        if cache is not None:
            cache.set_heights(h)
        # With reuse the Hessian (the top-k pass, ~3x an argmax) is re-estimated only when the
        # batch grew, or when the last step's measured response was off the model's by > 1.5x:
        # it is Newton's preconditioner, so a kept one changes the path, never the fixed point.
        fresh_hessian = not reuse or hess is None or state.batch > sum(fitted) or not 2 / 3 <= ratio <= 1.5
        stats = batch_stats(pot, source, state.batch, seed=seed * 100_003 + (0 if reuse else state.iteration),
                            quasi=quasi, pairs=fresh_hessian, eps_quantile=eps_quantile, hessian_samples=hessian_samples,
                            k_pairs=hessian_k,
                            cache=cache, fitted_rows=tuple(fitted) if reuse else None)
        if reuse and fresh_hessian:
            hess = (stats.pairs, stats.pair_weights, stats.eps)
            ratio = 1.0  # the last ratio judged the old Hessian; the next step judges this one
        elif reuse:
            stats.pairs, stats.pair_weights, stats.eps = hess
        g = stats.counts.double() / stats.n_samples - nu
        _sync(state, pot, evals0, elapsed0, t0)
        rec = _record(state, stats, nu, step=tau, kappa=kappa)
        if reuse:
            rec["hessian"] = "new" if fresh_hessian else "kept"
        if cache is not None:
            rec["reused_share"] = cache.hits / max(cache.hits + cache.misses, 1)
            cache.hits = cache.misses = 0
        fresh_share = sum(stats.fresh_sizes) / max(stats.n_samples, 1) if reuse else 1.0
        if reuse:
            fitted = [stats.n_samples // 2, stats.n_samples - stats.n_samples // 2]
        state.iteration += 1
        state.heights = h
        _advance(state, rec, h, callback)
        if _converged(rec, tol):
            state.converged, state.stop_reason = True, "converged"
            break
        if max_time is not None and rec["time"] > max_time:
            state.stop_reason = "max_time"
            break
        tv, floor = rec["tv_estimate"], rec["noise_floor"]
        if prev is not None and prev[0] > 2 * floor:
            # Response ratio: the measured mass change over the change the scaled model predicted
            # (tau g_prev). The noise of g_prev enters both g_prev and the change, which biases
            # the ratio up by tau |noise|² / |pred|²: remove that. The ratio estimates
            # H_true / (kappa H_est), so kappa is multiplied by it (damped, clamped).
            # (With reuse only the appended rows carry new noise: the rest is shared, and cancels.)
            pred = tau * (prev[1] - prev[1].mean())
            num = float(torch.dot(prev[1] - g, pred)) - tau * prev[4] * fresh_share
            ratio = num / max(float(torch.dot(pred, pred)), 1e-300)
            rec["ratio"] = ratio
            kappa = min(max(kappa * min(max(ratio, 0.5), 2.0) ** 0.5, 0.25), 8.0)
        if prev is not None and tv > prev[0] + 2 * floor and tau > 1 / 32:
            # The step overshot: retry it halved from where it started (damped Newton).
            tau /= 2
            h = prev[2] - tau * prev[3]
            keep(h)
            continue
        # a step that needed halving makes the next one start at twice its length, not at 1
        trust = 1.0 if prev is None else min(1.0, 2 * tau)
        # Grow the sample once the measured mismatch is mostly noise, or stops shrinking:
        # more steps at this size would only re-shuffle the noise.
        # (with reuse, an evaluation with appended rows is not a stall: its new rows were never fitted)
        stalled = prev is not None and tv > 0.7 * prev[0] and tv < 6 * floor and (not reuse or fresh_share == 0.0)
        # With reuse the sample is fixed, so its mismatch can fall below its noise: grow once the
        # fit to it is well inside the noise (appended rows then test heights close to its optimum).
        # With fresh samples, once the mismatch is mostly noise the next batch is planned
        # (``plan_batch``): the size that lets the step after it land inside the tolerance, or,
        # where this step is predicted to land there, the size that certifies it (the verdict).
        if not reuse:
            # where the last step was predicted well, the plan may jump further (growth²)
            last_pred = state.history[-2].get("predicted_tv") if len(state.history) > 1 else None
            trusted = last_pred is not None and rec["tv_debiased"] <= TRUST * last_pred
            predicted = predicted_landing(rec["tv_debiased"], floor)
            rec["predicted_tv"] = predicted if math.isfinite(predicted) else None
        if tv <= (0.5 if reuse else 2.5) * floor or stalled:
            if reuse:
                nxt = int(state.batch * growth)
            else:
                nxt = plan_batch(state.batch, rec["tv_debiased"], floor, tol, growth=growth, trusted=trusted)
            if nxt > max_samples:
                state.stop_reason = "max_samples"
                break
            state.batch = nxt
        delta = _laplacian_solve(stats, g, n, neighbours=neighbours) / kappa
        # Only the signal share of the measured mismatch is worth a full step; the rest is
        # sampling noise that a full step would write into h (tv^2 ~ signal^2 + floor^2).
        # (With reuse the noise is that of a fixed sample whose solution is the target: full steps.)
        tau = trust if reuse else trust * min(1.0, max(0.25, 1.0 - (floor / max(tv, 1e-300)) ** 2))
        if line_search and not reuse and tv > 4 * floor:
            # far from the noise the step's length matters more than its noise share: find it on
            # the energy, on a small common sample, not by halving after a whole batch
            tau, halvings = _energy_line_search(pot, source, h, delta, nu, tau, seed=seed * 100_003 + 7_000_003 + state.iteration,
                                                quasi=quasi, n_samples=line_search_size(n))
            rec["line_search_halvings"] = halvings
        prev = (tv, g, h.clone(), delta, stats.noise_sq)
        h = h - tau * delta
        keep(h)
    state.stop_reason = state.stop_reason or "max_iter"
    state.heights = h
    state.extra["kappa"] = _scalar(kappa)
    _sync(state, pot, evals0, elapsed0, t0)
    pot.reset_count()
    return state


_PREV_KEYS = ("prev_tv", "prev_g", "prev_h", "prev_delta", "prev_noise")


def _load_hessian(extra: dict[str, torch.Tensor], device) -> tuple | None:
    """The kept sampled Hessian (pairs (E, 2), weights (E,), ε) of a resumed reuse fit, if any."""
    if not all(k in extra for k in ("hess_pairs", "hess_weights", "hess_eps")):
        return None
    pairs, w, eps = extra["hess_pairs"], extra["hess_weights"], extra["hess_eps"]
    # a malformed one (a damaged checkpoint) is re-estimated, never trusted: it only steers steps
    if (pairs.ndim != 2 or pairs.shape[1:] != (2,) or w.shape != (pairs.shape[0],) or pairs.dtype != torch.int64
            or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or eps.numel() != 1
            or not math.isfinite(float(eps)) or float(eps) <= 0 or (pairs.numel() and int(pairs.min()) < 0)):
        return None
    return pairs.to(device), w.to(device, torch.float64), float(eps)


#: Late Newton steps land at sqrt(STEP_MODEL) times the error that a Wiener-weighted step with an
#: exact Hessian would leave, e f / sqrt(e² + f²): measured 1.01-1.12 x on MNIST codes (d = 16,
#: N = 20,000 and 60,000, benchmarks/results/ot_solver_mnist60k_h16.json and _plan.json); 1.25 = 1.12².
STEP_MODEL = 1.25
#: plan_batch aims the last step at LAND x tol and certifies with a floor of CERTIFY x tol
LAND, CERTIFY = 0.9, 0.95
#: a step whose measured landing was within TRUST x its prediction lets the plan jump growth²
TRUST = 1.3


def predicted_landing(e: float, f: float) -> float:
    """Debiased TV predicted after a Wiener-weighted step from error e with batch noise f:
    1/e'² = (1/e² + 1/f²) / STEP_MODEL (NaN where f is not a positive number)."""
    if not (f > 0 and math.isfinite(f) and math.isfinite(e)):
        return math.nan
    return math.sqrt(STEP_MODEL / (1.0 / max(e * e, 1e-300) + 1.0 / (f * f)))


def plan_batch(batch: int, e: float, f: float, tol: float, *, growth: float = 2.0, trusted: bool = False) -> int:
    """The next batch size of a fresh-sample Newton fit whose measured mismatch is mostly noise.

    batch: this evaluation's sample size; e: its debiased TV estimate; f: its noise floor;
    trusted: the last step landed as predicted (then the plan may grow by growth², else growth).

    A Wiener-weighted step leaves the error e' with 1/e'² = (1/e² + 1/f²) / STEP_MODEL
    (``predicted_landing``): the information of the samples accumulates as if pooled, 1/f² =
    M / c² growing with the batch M (the floor is c / sqrt(M)). So the fit needs, before its
    verdict, information worth 1/(LAND tol)², and the verdict a floor ≤ CERTIFY tol; both are
    planned from c, measured:
    - this step is predicted to land within LAND tol: the next evaluation is the verdict, of
      the size whose floor is CERTIFY tol (between half and ``growth`` times this batch);
    - else: the size that brings the next step within LAND tol, at least this batch and at
      most growth (growth² if trusted) times it; far from the tolerance, the plain doubling.
    Early steps land far above their prediction (the sampled Hessian, not the noise, limits
    them), so only a step that landed as predicted earns the longer jump.
    Measured on 60,000 MNIST codes (tolerance 0.028): doubling went 3.8e6 (e 0.065) -> 7.7e6
    (0.0435) -> 1.5e7 (0.0298, over) -> 1.5e7 (0.0206); the plan went 3.8e6 -> 1.29e7 (0.0439,
    predicted 0.0434) -> 1.21e7 (0.0264, predicted 0.0249: converged at its first verdict;
    benchmarks/results/ot_solver_mnist60k_plan.json).
    """
    grown = int(batch * growth)
    predicted = predicted_landing(e, f)
    if not math.isfinite(predicted):
        return grown
    c2 = f * f * batch
    info = 1.0 / predicted**2
    target = 1.0 / (LAND * tol) ** 2
    if info >= target:
        nxt = c2 / (CERTIFY * tol) ** 2
        return math.ceil(min(max(nxt, batch / 2), grown))
    nxt = c2 * (STEP_MODEL * target - info)
    return math.ceil(min(max(nxt, batch), batch * (growth**2 if trusted else growth)))


def _save_prev(prev) -> dict[str, torch.Tensor]:
    """The last Newton step as checkpointable tensors (empty before the first step)."""
    if prev is None:
        return {}
    tv, g, h, delta, noise = prev
    return {"prev_tv": _scalar(tv), "prev_g": g, "prev_h": h, "prev_delta": delta, "prev_noise": _scalar(noise)}


def _scalar(v: float) -> torch.Tensor:
    """A float as a float64 0-d tensor: a checkpointed scalar must come back bit-identical."""
    return torch.tensor(float(v), dtype=torch.float64)


def _load_prev(extra: dict[str, torch.Tensor], device) -> tuple | None:
    if not all(k in extra for k in _PREV_KEYS):
        return None
    return (float(extra["prev_tv"]), extra["prev_g"].to(device, torch.float64), extra["prev_h"].to(device, torch.float64),
            extra["prev_delta"].to(device, torch.float64), float(extra["prev_noise"]))


def solve_adam(
    pot: BrenierPotential,
    source: Source,
    nu: torch.Tensor,
    state: SolverState,
    *,
    tol: float = 0.02,
    seed: int = 0,
    quasi: bool = True,
    lr: float | None = None,
    batch0: int | None = None,
    patience: int = 30,
    max_samples: int | None = None,
    max_iter: int = 20_000,
    max_time: float | None = None,
    callback: Callback | None = None,
    on_state: StateHook | None = None,
) -> SolverState:
    """The AE-OT baseline: Adam (β = 0.9, 0.999, no bias correction, as in pyOMT) on h.

    ``lr`` defaults to 0.05 × the median top-2 score gap at the start (the scale of h that
    moves one cell boundary by about one cell), since the recipe's lr assumes normalised data.
    The Monte Carlo sample doubles when the gradient norm has not improved for ``patience``
    iterations. Stopping rule, ``on_state`` and ``state.stop_reason`` as in ``solve_newton``.
    """
    n = pot.n_targets
    if state.batch <= 0:
        state.batch = int(batch0 or max(16 * n, 1 << 14))
    max_samples = int(max_samples or 64 * n * (0.4 / tol) ** 2)
    t0 = time.perf_counter()
    state.stop_reason = ""
    pot.reset_count()
    evals0, elapsed0 = state.evaluations, state.elapsed
    h = state.heights.to(pot.device, torch.float64)
    if lr is None:
        lr = float(state.extra.get("lr", torch.tensor(0.0)))
        if lr <= 0:
            pot.set_heights(h)
            x = source.sample(min(4 * n, 1 << 16), seed=seed + 7, quasi=quasi, device=pot.device, dtype=pot.compute_dtype)
            v, _ = pot.topk(x, 2)
            lr = 0.05 * float((v[:, 0] - v[:, 1]).median())
    m = state.extra.get("m", torch.zeros_like(h)).to(h)
    v2 = state.extra.get("v", torch.zeros_like(h)).to(h)
    best_g = float(state.extra.get("best_g", torch.tensor(math.inf)))
    bad = int(state.extra.get("bad", torch.tensor(0)))
    while state.iteration < max_iter:
        pot.set_heights(h)
        stats = batch_stats(pot, source, state.batch, seed=seed * 100_003 + state.iteration, quasi=quasi)
        g = stats.counts.double() / stats.n_samples - nu
        _sync(state, pot, evals0, elapsed0, t0)
        rec = _record(state, stats, nu, lr=lr)
        state.iteration += 1
        state.heights = h
        _advance(state, rec, h, callback)
        if _converged(rec, tol):
            state.converged, state.stop_reason = True, "converged"
            break
        if max_time is not None and rec["time"] > max_time:
            state.stop_reason = "max_time"
            break
        m = 0.9 * m + 0.1 * g
        v2 = 0.999 * v2 + 0.001 * g * g
        h = h - lr * m / (v2.sqrt() + 1e-8)
        h = h - h.mean()
        gn = float(g.norm())
        if gn <= best_g:
            best_g, bad = gn, 0
        else:
            bad += 1
        if bad > patience:
            if state.batch * 2 > max_samples:
                state.stop_reason = "max_samples"
                break
            state.batch *= 2
            best_g, bad = math.inf, 0
        state.extra = {"m": m, "v": v2, "best_g": _scalar(best_g), "bad": torch.tensor(bad), "lr": _scalar(lr)}
        state.heights = h
        _sync(state, pot, evals0, elapsed0, t0)
        if on_state is not None:
            on_state(state)
    state.stop_reason = state.stop_reason or "max_iter"
    state.heights = h
    _sync(state, pot, evals0, elapsed0, t0)
    pot.reset_count()
    return state


# ---------------------------------------------------------------------------------------------
# Low dimension (d ≤ 3): coarse-to-fine start for solve_newton.
#
# Why: from the contracted-Voronoi start (potential.voronoi_heights) the cell masses in d = 2
# differ by orders of magnitude (the cells of targets in dense regions are tiny, since all
# Voronoi cells are squeezed into one ball). The semi-discrete energy is then far from
# quadratic: even the *exact* Newton step only takes the 2-D TV from 0.51 to 0.45, and the
# sampled entropic Hessian (whose smoothing ε is set by the typical cell) mis-scales the tiny
# cells, so Monte Carlo Newton crawls (measured: 60 iterations, TV still ≈ 0.15-0.35 for
# N = 2000). In d ≥ 4 contracted Voronoi cells are far more even and none of this is needed.
# The remedy is classic multiscale OT (Mérigot, "A multiscale approach to optimal transport",
# CGF 2011): solve for k-means centroids of the targets first, where the clusters' masses are
# matched cheaply, then split each coarse cell among its cluster by a *local* Voronoi diagram
# so every fine cell starts with roughly its share of its cluster's mass.
# ---------------------------------------------------------------------------------------------

LOW_DIM = 3  # multiscale start only for d <= LOW_DIM: d >= 4 runs exactly as before
_COARSE_RATIO = 8  # targets per cluster at each level
_COARSE_MIN = 64  # below this many targets the plain start is already good enough
_COARSE_TOL = 0.5  # coarse levels are solved to this fraction of tol: their cluster-mass errors are
#                    low-frequency modes that the fine Newton steps (ridge-damped) barely correct


def _kmeans(y: torch.Tensor, nu: torch.Tensor, k: int, *, seed: int, iters: int = 25) -> torch.Tensor:
    """Weighted Lloyd k-means: labels (N,) int64 in 0..K'-1 (empty clusters dropped, K' ≤ k)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = y[torch.randperm(y.shape[0], generator=gen)[:k].to(y.device)].clone()
    for _ in range(iters):
        lab = torch.cdist(y, c).argmin(dim=1)
        w = torch.zeros(c.shape[0], dtype=y.dtype, device=y.device).index_add_(0, lab, nu)
        s = torch.zeros_like(c).index_add_(0, lab, nu[:, None] * y)
        keep = w > 0
        c = s[keep] / w[keep, None]
    lab = torch.cdist(y, c).argmin(dim=1)
    return torch.unique(lab, return_inverse=True)[1]


def multiscale_heights(
    targets: torch.Tensor, nu: torch.Tensor, source: Source, *, tol: float, seed: int = 0,
    quasi: bool = True, memory_budget: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Coarse-to-fine start heights (N,) for ``solve_newton`` in low dimension; also returns the
    number of score evaluations spent (sample-target pairs).

    Targets (N, d), weights nu (N,). The targets are clustered (weighted k-means, K = N / 8);
    the clusters' OT problem (centroids ȳ_c, weights Σ_{i∈c} nu_i) is solved recursively to
    ``_COARSE_TOL × tol``. Then, with z_c and R_c the centre and radius of coarse cell c (from source
    samples), each member i gets  h_i = h_c − <z_c, δ_i> − s_c |δ_i|² / 2,  δ_i = y_i − ȳ_c:
    near cell c its score is  <x, ȳ_c> + h_c + |x − z_c|²/(2 s_c) − |x − z_c − s_c δ_i|²/(2 s_c),
    i.e. the members split the coarse cell as the Voronoi diagram of the points z_c + s_c δ_i,
    which the scale s_c = 0.9 R_c / max|δ_i| places inside it.
    """
    from .potential import voronoi_heights

    n, d = targets.shape
    dev = targets.device
    y = targets.double()
    center, radius = source.inscribed_ball()
    kw = {} if memory_budget is None else {"memory_budget": memory_budget}
    if n <= _COARSE_MIN:
        return voronoi_heights(y, center, radius), 0
    lab = _kmeans(y, nu, max(n // _COARSE_RATIO, 2), seed=seed)
    k = int(lab.max()) + 1
    wc = torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, lab, nu)
    yc = torch.zeros(k, d, dtype=torch.float64, device=dev).index_add_(0, lab, nu[:, None] * y) / wc[:, None]
    # coarse problem: recursive start, then Newton to _COARSE_TOL × tol. Not looser: an error in
    # the clusters' masses is a low-frequency mode that the fine steps correct only slowly
    # (measured on ring8, N = 2000: coarse tol 0.04 left a component-level TV of 0.019 that 9 fine
    # steps did not reduce; coarse tol 0.01 leaves 0.004, for ~15 s of CPU).
    hc, evals = multiscale_heights(yc, wc, source, tol=tol, seed=seed + 1, quasi=quasi, memory_budget=memory_budget)
    pot_c = BrenierPotential(yc, hc, **kw)
    st = solve_newton(pot_c, source, wc, SolverState(heights=hc.clone(), best_heights=hc.clone()),
                      tol=_COARSE_TOL * tol, seed=seed + 2, quasi=quasi, max_iter=40, multiscale=False)
    hc = st.heights if st.converged else st.best_heights
    evals += st.evaluations
    # geometry of the coarse cells: sample centre z_c and radius R_c (mean |x − z|² = R² d/(d+2)
    # for a uniform ball), from ~64 samples per cell
    pot_c.set_heights(hc)
    pot_c.reset_count()
    x = source.sample(64 * k, seed=seed + 3, quasi=quasi, device=dev, dtype=torch.float64)
    _, cell = pot_c.argmax(x)
    evals += pot_c.evaluations
    cnt = torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float64))
    z = torch.zeros(k, d, dtype=torch.float64, device=dev).index_add_(0, cell, x) / cnt.clamp_min(1)[:, None]
    msd = torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, cell, (x - z[cell]).square().sum(1)) / cnt.clamp_min(1)
    r_cell = (msd * (d + 2) / d).sqrt()
    empty = cnt < 2  # a coarse cell the samples missed: fall back to the centroid, a small radius
    if bool(empty.any()):
        z[empty] = torch.as_tensor(center, dtype=torch.float64, device=dev)
        r_cell[empty] = float(r_cell[~empty].median()) if bool((~empty).any()) else float(radius)
    delta = y - yc[lab]
    spread = torch.zeros(k, dtype=torch.float64, device=dev).scatter_reduce_(0, lab, delta.norm(dim=1), "amax")
    s = 0.9 * r_cell / spread.clamp_min(1e-12)
    h = hc[lab] - (z[lab] * delta).sum(1) - 0.5 * s[lab] * delta.square().sum(1)
    # The cluster's upper envelope max_i <x − z_c, δ_i> − s_c|δ_i|²/2 rises from ~0 at z_c to
    # ~R_c max|δ|/2 at the cell's rim, by a different amount in each cluster: that would shift
    # the coarse boundaries. Remove each cluster's mean rise over its cell (same samples).
    # In row blocks, so that no (samples × N) matrix is materialised whole.
    rows = max(1, (1 << 22) // n)
    rise = torch.cat([
        torch.where(lab[None, :] == cb[:, None], xb @ y.T + h[None, :], -math.inf).amax(dim=1)
        - (xb * yc[cb]).sum(1) - hc[cb]
        for xb, cb in zip(x.split(rows), cell.split(rows))
    ])
    evals += x.shape[0] * n
    lift = torch.zeros(k, dtype=torch.float64, device=dev).index_add_(0, cell, rise) / cnt.clamp_min(1)
    h = h - lift[lab]
    return h - h.mean(), evals
